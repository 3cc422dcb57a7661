"""Evaluation: prompt templates, class text embeddings (with a disk cache), zero-shot scoring,
rank roll-up and metrics. Shared by ``eval``, ``classify``, ``export`` and training's validation.

``eval``: ``config`` (EvalConfig) -> ``data`` (datasets, loaders; tables and image folders
read by ``tables``, free class names and candidate lists by ``labels``) -> ``scoring`` (one
pass per model for every text type, tallies gathered across ranks; candidate sets counted by
``candidates``) -> ``reports`` (records, document, files; charts by ``plots``), tied together by
``engine.evaluate`` and run in one process or through torchrun by ``run``. ``classify``: the
job in ``classify``, its inputs in ``classify_inputs``, its records and resume in
``classify_records``. Both use ``zeroshot`` (classifier, image encoder), ``text`` and
``metrics``."""
