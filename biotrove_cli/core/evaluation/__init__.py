"""Evaluation: prompt templates, class text embeddings (with a disk cache), zero-shot scoring,
rank roll-up and metrics. Shared by ``eval``, ``classify``, ``export`` and training's validation.

``eval``: ``config`` (EvalConfig) -> ``data`` (datasets, loaders) -> ``scoring`` (one pass per
model, tallies gathered across ranks) -> ``reports`` (records, document, files), tied together
by ``engine.evaluate`` and run in one process or through torchrun by ``run``. ``classify``: the
job in ``classify``, its inputs in ``classify_inputs``, its records and resume in
``classify_records``. Both use ``zeroshot`` (classifier, image encoder), ``text`` and
``metrics``."""
