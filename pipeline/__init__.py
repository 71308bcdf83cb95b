"""ViTMAE embeddings at dataset scale on Ray: the embedding run (`embed`), reading it back (`retrieval`), training
(`train`), pictures (`render`), and the storage, file names and schemas every one of them shares."""
