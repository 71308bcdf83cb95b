"""The embedding run: list, read and decode, embed on model actors, write the tables; and query images embedded
alike."""
