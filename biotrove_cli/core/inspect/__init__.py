"""``biotrove info``: describe what is at a path (shard folder, run, search, checkpoint, bundle,
metadata table, photo folder), one describer per kind of thing."""

from __future__ import annotations

from pathlib import Path

from biotrove_cli.core import layout
from biotrove_cli.core.errors import InputError
from biotrove_cli.core.inspect.report import Report

__all__ = ["Report", "describe"]


def describe(path: str | Path) -> Report:
    """Dispatch on what ``path`` is; raise InputError when it is nothing biotrove knows."""
    from biotrove_cli.core.data.urls import is_remote

    if is_remote(str(path)):
        from biotrove_cli.core.inspect.dataset import describe_remote_shards

        return describe_remote_shards(str(path))
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if layout.is_dataset_dir(path):
            from biotrove_cli.core.inspect.dataset import describe_shard_folder

            return describe_shard_folder(path)
        if layout.is_bundle_dir(path) or layout.is_onnx_dir(path):
            from biotrove_cli.core.inspect.models import describe_bundle

            return describe_bundle(path)
        if layout.is_run_dir(path):
            from biotrove_cli.core.inspect.run import describe_run

            return describe_run(path)
        if layout.is_search_dir(path):
            from biotrove_cli.core.inspect.search import describe_search

            return describe_search(path)
        if layout.is_split_dir(path):
            from biotrove_cli.core.inspect.dataset import describe_shard_folder

            return describe_shard_folder(path)
        from biotrove_cli.core.data.images import is_image_path
        from biotrove_cli.core.inspect.photos import describe_image_folder, walk_files

        if any(is_image_path(p) for p in walk_files(path, limit=10_000)):
            return describe_image_folder(path)
        raise InputError(
            f"{path}: not a shard folder, run folder, model bundle or photo folder",
            hint="shard folders hold manifest.json; runs hold checkpoints/; "
            "bundles hold open_clip_config.json",
        )
    from biotrove_cli.core.taxonomy.readers import table_suffix

    if table_suffix(path) in (".parquet", ".pq", ".csv", ".tsv"):
        from biotrove_cli.core.inspect.tables import describe_table

        return describe_table(path)
    from biotrove_cli.core.inspect.models import describe_checkpoint

    return describe_checkpoint(path)
