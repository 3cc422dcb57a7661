"""Training: the config, the plan and data pipeline, the Trainer (model, optimiser, checkpoint
state, signals) and the launch of its processes."""
