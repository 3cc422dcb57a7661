"""Evaluation: prompt templates, class text embeddings (with a disk cache), zero-shot scoring,
rank roll-up and metrics. Shared by ``eval``, ``classify``, ``export`` and training's validation."""
