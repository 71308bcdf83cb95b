"""The search service over a run (`vitmae serve`): a FastAPI application with an HTTP API and a web page, serving
the run's index, its anomaly ranking and its near-duplicate groups, and following the run as later runs update it."""
