"""Ray Data stages of the embedding job: list, preprocess, infer, write; and the run that chains them."""
