"""The shard writer behind ``biotrove shard``, one file a job (see :mod:`.job` for the steps).

The public names live here: ``from biotrove_cli.core.data.shard import ShardConfig,
shard_dataset``.
"""

from biotrove_cli.core.data.sample import MAX_KEY, sanitize_key
from biotrove_cli.core.data.shard.config import (
    RESIZE_MODES,
    ShardConfig,
    parse_bytes,
    parse_captions,
    parse_part,
)
from biotrove_cli.core.data.shard.convert import process_image
from biotrove_cli.core.data.shard.finalize import IncompleteError, finalize
from biotrove_cli.core.data.shard.job import ShardResult, finalize_dataset, shard_dataset
from biotrove_cli.core.data.shard.plan import ShardPlan, make_plan
from biotrove_cli.core.data.shard.tar import TarOut

__all__ = [
    "MAX_KEY",
    "RESIZE_MODES",
    "IncompleteError",
    "ShardPlan",
    "ShardConfig",
    "ShardResult",
    "TarOut",
    "finalize",
    "finalize_dataset",
    "make_plan",
    "parse_bytes",
    "parse_captions",
    "parse_part",
    "process_image",
    "sanitize_key",
    "shard_dataset",
]
