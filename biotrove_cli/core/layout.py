"""The file names of biotrove's three kinds of folder, and how to recognise each (one owner).

A dataset folder written by ``biotrove shard``::

    OUT/
      manifest.json           arguments, counts, biotrove version, timings
      taxonomy.parquet        every species: lineage, species key, per-split counts
      plan.json               the deterministic plan (resume / --part / --finalize)
      train/ val/ unseen/     one folder per split
        shard-000000.tar      WebDataset tar
        shard-000000.stats.json   written after the tar: count, successes, failures by reason
        sizes.json            shard name -> sample count (what open_clip reads)

A run folder written by ``biotrove train``::

    runs/NAME/
      config.yaml       the resolved TrainConfig (biotrove version in its header)
      launch.yaml       the config handed to the torchrun workers
      run.json          launch facts: version, world size, data, start/finish times, status
      labels.parquet    the label bank of the training data
      metrics.jsonl     one JSON object per logged step / evaluation
      checkpoints/      step-00000100.pt ... and ``latest`` (points at a complete file)
      tensorboard/      TensorBoard events       (--report-to tensorboard)
      wandb/            the Weights & Biases run (--report-to wandb; wandb names it)
      mlruns/           the MLflow file store    (--report-to mlflow, without a tracking URI)

A search folder written by ``biotrove tune`` (in ``--storage-path``, beside Ray Tune's own files:
``tuner.pkl``, ``experiment_state-*.json``, one folder of results per trial)::

    STORAGE/NAME/
      search.yaml       the search's settings, space and base config (what --resume reads)
      best.yaml         the best trial's config: ``biotrove train --config best.yaml``
      runs/TRIAL_ID/    each trial's run folder (a normal run folder, as above)
      ray-train/        Ray Train's state of each trial's run

A model bundle written by ``biotrove export``: ``open_clip_config.json`` +
``open_clip_model.safetensors`` (or ``onnx_config.json`` + ``*.onnx``), ``biotrove.json``
(provenance) and, with a label bank, ``labels.parquet`` + ``class_embeddings.safetensors``.
"""

from __future__ import annotations

import re
from pathlib import Path

# -- dataset folders ---------------------------------------------------------------------------
SPLITS = ("train", "val", "unseen")
SHARD_GLOB = "shard-*.tar"
MANIFEST = "manifest.json"
TAXONOMY = "taxonomy.parquet"
PLAN = "plan.json"
SIZES = "sizes.json"

# -- run folders -------------------------------------------------------------------------------
RUN_CONFIG = "config.yaml"
LAUNCH_CONFIG = "launch.yaml"
RUN_JSON = "run.json"
RUN_LABELS = "labels.parquet"
METRICS = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
_STEP_RE = re.compile(r"^step-(\d+)\.pt$")

# -- search folders ----------------------------------------------------------------------------
SEARCH_CONFIG = "search.yaml"
SEARCH_BEST = "best.yaml"
SEARCH_RUNS = "runs"
SEARCH_TRAIN_STATE = "ray-train"

# -- model bundles -----------------------------------------------------------------------------
BUNDLE_CONFIG = "open_clip_config.json"
BUNDLE_WEIGHTS = "open_clip_model.safetensors"
BUNDLE_META = "biotrove.json"
BUNDLE_LABELS = "labels.parquet"
BUNDLE_EMBEDDINGS = "class_embeddings.safetensors"
ONNX_IMAGE = "image_encoder.onnx"
ONNX_TEXT = "text_encoder.onnx"
ONNX_CONFIG = "onnx_config.json"
#: Marker files of a folder that is an export (and so may be replaced with ``force``).
EXPORT_MARKERS = (BUNDLE_META, BUNDLE_CONFIG, ONNX_CONFIG)


def shard_name(index: int, part: int = 0) -> str:
    """``shard-000012.tar``; an overflow part of a unit (``--max-shard-bytes``) adds ``_1``."""
    return f"shard-{index:06d}.tar" if part == 0 else f"shard-{index:06d}_{part}.tar"


def stats_name(tar_name: str) -> str:
    """``shard-000012.tar`` -> ``shard-000012.stats.json``."""
    return tar_name[: -len(".tar")] + ".stats.json"


def checkpoint_name(step: int) -> str:
    """``step-00000100.pt``."""
    return f"step-{step:08d}.pt"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint file name, or None when it is not one."""
    m = _STEP_RE.match(name)
    return int(m.group(1)) if m else None


def is_dataset_dir(path: Path) -> bool:
    """A dataset folder of ``biotrove shard`` (complete or in progress)."""
    return path.is_dir() and ((path / MANIFEST).is_file() or (path / PLAN).is_file())


def is_split_dir(path: Path) -> bool:
    """A folder of shards with their ``sizes.json``."""
    return path.is_dir() and (path / SIZES).is_file()


def is_run_dir(path: Path) -> bool:
    """A training run folder."""
    return path.is_dir() and ((path / CHECKPOINT_DIR).is_dir() or (path / RUN_CONFIG).is_file())


def is_search_dir(path: Path) -> bool:
    """A search folder of ``biotrove tune``."""
    return path.is_dir() and (path / SEARCH_CONFIG).is_file()


def is_bundle_dir(path: Path) -> bool:
    """An open_clip bundle written by ``biotrove export``."""
    return path.is_dir() and (path / BUNDLE_CONFIG).is_file()


def is_onnx_dir(path: Path) -> bool:
    """An ONNX bundle written by ``biotrove export --format onnx``."""
    return path.is_dir() and (path / ONNX_CONFIG).is_file()


def is_export_dir(path: Path) -> bool:
    """Any folder ``biotrove export`` wrote (and so may replace with ``--force``)."""
    return path.is_dir() and any((path / m).exists() for m in EXPORT_MARKERS)
