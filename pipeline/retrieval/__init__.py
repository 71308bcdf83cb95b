"""Reading a run back: its vectors, the FAISS index, similarity search and anomaly rankings."""
