"""Training: the config, the data pipeline, the loop, and the torchrun worker entry."""
