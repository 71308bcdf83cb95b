"""Pre-training and adapting ViTMAE with Ray Train, drawing reconstructions, and scoring checkpoints."""
