"""Shared fixtures. Every test runs offline, with its own biotrove home and caches."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# the real BioTrove metadata, vendored so that every clone (and CI) tests against it
SHARED = REPO / "tests" / "data" / "biotrove"
RESOURCES = REPO / "biotrove_cli" / "resources"
ARBORETUM = SHARED / "arboretum_sample_chunk1.parquet"
INAT2021 = RESOURCES / "inat2021_categories.csv.gz"  # the packaged bank `inat2021`
LIFESTAGES = SHARED / "lifestages_metadata.csv"
DEMO_SPECIES = RESOURCES / "demo_species.csv"


def _vendored(path: Path) -> Path:
    assert path.is_file(), f"the vendored BioTrove metadata is missing: {path}"
    return path


@pytest.fixture
def arboretum() -> Path:
    return _vendored(ARBORETUM)


@pytest.fixture
def inat2021() -> Path:
    return _vendored(INAT2021)


@pytest.fixture
def lifestages() -> Path:
    return _vendored(LIFESTAGES)


@pytest.fixture(autouse=True)
def _offline_and_isolated(tmp_path_factory, monkeypatch):
    """No network, no user caches: a test that touches either is a bug."""
    home = tmp_path_factory.mktemp("biotrove-home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("BIOTROVE_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("BIOTROVE_DEBUG", raising=False)
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    yield


@pytest.fixture
def cli(capsys):
    """Run ``biotrove ARGS`` through main() (the real error boundary); returns (code, out, err)."""
    from biotrove_cli.cli.app import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def run_subprocess(
    *args: str,
    env: dict | None = None,
    timeout: float = 600,
    input: str | None = None,
    cwd: str | Path | None = None,
):
    """``python -m biotrove_cli ARGS`` in a fresh process (for sys.modules checks, signals...)."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "biotrove_cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=input,
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def demo_bank():
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    return LabelBank.load(DEMO_SPECIES)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory, demo_bank):
    """6 species x 5 photos (160x120 JPEGs) plus BioTrove-schema metadata for them.

    Returns a dict with ``images`` (folder), ``metadata`` (parquet path), ``taxa`` and
    ``photos`` (list of WorldImage).
    """
    from biotrove_cli.core.data.world import generate_world, write_metadata

    root = tmp_path_factory.mktemp("world")
    taxa = demo_bank.taxa[:6]
    photos = generate_world(
        taxa, root / "images", images_per_species=5, seed=1, size=(160, 120), id_offset=1000
    )
    meta = write_metadata(photos, root / "metadata.parquet", url_base="http://127.0.0.1:9/")
    return {
        "root": root,
        "images": root / "images",
        "metadata": meta,
        "taxa": taxa,
        "photos": photos,
    }


@pytest.fixture(scope="session")
def tiny_model():
    """The tiny architecture with seeded random weights (a LoadedModel)."""
    import torch

    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(0)
    return load_model("biotrove-tiny:random")


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory, demo_bank):
    """A real shard folder (``biotrove shard``) for training: 8 species x 30 photos, 64 px,
    20% val, 20 samples per shard. Returns the folder."""
    from biotrove_cli.core.data.shard import ShardConfig, shard_dataset
    from biotrove_cli.core.data.world import generate_world, write_metadata

    root = tmp_path_factory.mktemp("train-world")
    # two species per genus where the bank has them, so genus roll-up is meaningful
    taxa = [t for t in demo_bank.taxa if t.genus in ("Quercus", "Turdus", "Pinus", "Amanita")][:8]
    photos = generate_world(taxa, root / "images", images_per_species=30, seed=3, size=(96, 72))
    meta = write_metadata(photos, root / "metadata.parquet")
    shard_dataset(
        ShardConfig(
            metadata=[meta],
            images=root / "images",
            out=root / "shards",
            image_size=64,
            val_fraction=0.2,
            samples_per_shard=20,
            seed=0,
            workers=1,
        )
    )
    return root / "shards"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_model):
    """The seeded tiny model exported as a bundle with the demo label bank (33 species) and
    their class embeddings: what `biotrove export` writes and stock open_clip loads."""
    import torch

    from biotrove_cli.core.models.export import ExportConfig, export_model

    root = tmp_path_factory.mktemp("tiny-bundle")
    torch.save(tiny_model.model.state_dict(), root / "tiny.pt")
    export_model(
        ExportConfig(
            source=str(root / "tiny.pt"), out=root / "bundle", labels=DEMO_SPECIES, verify=False
        )  # fmt: skip
    )
    return root / "bundle"
