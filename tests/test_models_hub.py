"""BioTrove-CLIP models download themselves: a loopback server answers like the Hugging Face
Hub's file-resolve endpoint (selected with HF_ENDPOINT) and serves a fabricated BioTrove-style
checkpoint under clip-o's published file name; the preset's architecture is the tiny one.

The first classify downloads (through a connection cut halfway, which resumes), converts once
into a bundle with the inat2021 bank, and classifies; the second makes no request at all.
Offline and failing hubs give errors that say what, from where, and where to put it by hand;
a partial download of an earlier run resumes; a damaged one is detected and fetched again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from types import SimpleNamespace

import pytest

from biotrove_cli.core.models import registry
from tests.fake_hub import COMMIT, FakeHub, fabricated_checkpoint

REPO_ID = "BGLab/BioTrove-CLIP"
PRESET = registry.BIOTROVE_MODELS["clip-o"]
TINY_PRESET = dataclasses.replace(PRESET, arch="biotrove-tiny", quick_gelu=False)
CHUNK = 10 * 1024 * 1024  # huggingface_hub writes downloads in 10 MB chunks


def _hub_env(mp: pytest.MonkeyPatch, home, url: str) -> None:
    """Online, against the fake hub, with the tiny architecture under clip-o's name."""
    mp.setenv("BIOTROVE_HOME", str(home))
    mp.setenv("HF_HOME", str(home / "hf"))
    mp.delenv("HF_HUB_CACHE", raising=False)
    mp.setenv("HF_ENDPOINT", url)
    mp.delenv("HF_HUB_OFFLINE", raising=False)
    mp.delenv("TRANSFORMERS_OFFLINE", raising=False)
    mp.setitem(registry.BIOTROVE_MODELS, "clip-o", TINY_PRESET)


def _run(*args) -> tuple[int, str, str]:
    """``biotrove ARGS`` in this process, its stdout and stderr captured."""
    import contextlib
    import io

    from biotrove_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def checkpoint() -> bytes:
    data = fabricated_checkpoint()
    assert len(data) > CHUNK + 1_000_000  # so that a cut after the first chunk resumes
    return data


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, checkpoint, demo_bank):
    """One fresh machine: the first `biotrove classify photos/` downloads (the connection cut
    past the first 10 MB), converts and classifies."""
    from biotrove_cli.core.data.world import render

    root = tmp_path_factory.mktemp("hub")
    photos = root / "photos"
    photos.mkdir()
    for i, taxon in enumerate(demo_bank.taxa[:3]):
        render(taxon, index=i, seed=5, size=(80, 64)).save(photos / f"p{i}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    hub = FakeHub(REPO_ID, {PRESET.filename: checkpoint})
    hub.cut_next_get = CHUNK + 500_000
    with pytest.MonkeyPatch.context() as mp:
        _hub_env(mp, root / "home", hub.url)
        result = _run("classify", photos, "--workers", "0", "--format", "jsonl", "-k", "2")
    yield SimpleNamespace(
        root=root, home=root / "home", photos=photos, hub=hub, result=result,
        requests=list(hub.requests),
    )  # fmt: skip
    hub.close()


@pytest.fixture
def on_hub(first_run, monkeypatch):
    """This test on the machine of ``first_run``, online against its hub."""
    _hub_env(monkeypatch, first_run.home, first_run.hub.url)
    first_run.hub.requests.clear()
    return first_run


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.slow
def test_first_classify_downloads_resumes_and_converts_once(first_run, checkpoint):
    code, out, err = first_run.result
    assert code == 0, err
    # the download: metadata, a GET cut after the first chunk, a ranged GET for the rest
    gets = [r for r in first_run.requests if r.method == "GET"]
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range == f"bytes={CHUNK}-"
    assert f"downloading BioTrove-CLIP-O: {PRESET.filename}" in err
    cached = first_run.home / "hf" / "hub" / "models--BGLab--BioTrove-CLIP"
    pointer = cached / "snapshots" / COMMIT / PRESET.filename
    assert pointer.read_bytes() == checkpoint  # whole, and where hub tools look for it
    assert (cached / "refs" / "main").read_text() == COMMIT
    # converted once into a safe bundle with the inat2021 bank and its class embeddings
    bundle = first_run.home / "models" / "clip-o"
    assert "converting BioTrove-CLIP-O once into a safe bundle" in err
    assert sorted(p.name for p in bundle.iterdir()) == [
        "biotrove.json",
        "class_embeddings.safetensors",
        "labels.parquet",
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    meta = json.loads((bundle / "biotrove.json").read_text())
    assert meta["verification"]["passed"] is True and meta["labels"]["classes"] == 10_000
    assert meta["source_sha256"] == hashlib.sha256(checkpoint).hexdigest()
    # species predictions with lineage and common names; the broken file is an error row
    recs = _records(out)
    by_path: dict[str, list[dict]] = {}
    for r in recs:
        by_path.setdefault(os.path.basename(r["path"]), []).append(r)
    assert set(by_path) == {"p0.png", "p1.png", "p2.png", "broken.jpg"}
    for name in ("p0.png", "p1.png", "p2.png"):
        top = by_path[name][0]
        assert top["rank"] == "species" and top["error"] is None
        assert top["kingdom"] and top["genus"] and top["name"].startswith(top["genus"] + " ")
    assert any(r["common_name"] for r in recs if r["error"] is None)
    assert by_path["broken.jpg"][0]["error"] in ("not_image", "truncated", "corrupt")
    assert "over 10000 species" in err


@pytest.mark.slow
def test_second_classify_makes_no_request(on_hub):
    args = ("classify", on_hub.photos, "--workers", "0", "--format", "jsonl", "-k", "2")
    code, out, err = _run(*args)
    assert code == 0, err
    assert on_hub.hub.requests == []
    assert "downloading" not in err and "converting" not in err
    assert _records(out) == _records(on_hub.result[1])  # the same predictions, from the bundle
    # naming the bank the bundle carries uses its class embeddings as they are
    code, out, err = _run(*args, "--labels", "inat2021")
    assert code == 0 and "class texts from the cache" in err
    assert _records(out) == _records(on_hub.result[1]) and on_hub.hub.requests == []


@pytest.mark.slow
def test_models_lists_what_is_here_and_pull_is_a_no_op_when_ready(on_hub, checkpoint):
    code, out, err = _run("models", "--format", "json")
    assert code == 0, err
    rows = {r["preset"]: r for r in json.loads(out)}
    assert rows["clip-o"]["state"] == "ready"
    assert rows["clip-o"]["bundle"] == str(on_hub.home / "models" / "clip-o")
    assert rows["clip-o"]["bundle_bytes"] > 0 and rows["clip-o"]["bundle_size"].endswith("MB")
    assert rows["clip-o"]["checkpoint_bytes"] == len(checkpoint)
    assert rows["clip-b"]["state"] == "not downloaded" and rows["clip-b"]["bundle"] is None
    clip_b = registry.BIOTROVE_MODELS["clip-b"].filename
    assert rows["clip-b"]["url"] == f"{on_hub.hub.url}/{REPO_ID}/resolve/main/{clip_b}"
    code, out, err = _run("models", "pull", "clip-o", "--format", "json")
    assert code == 0 and json.loads(out)[0]["state"] == "ready"
    assert on_hub.hub.requests == []  # listing and pulling what is ready needs no network
    code, out, err = _run("models", "pull", "clip-x")
    assert code == 2 and "not a BioTrove-CLIP model" in err and "clip-o, clip-b, clip-m" in err


def test_offline_and_failing_hubs_say_what_from_where_and_where_to_put_it(
    tmp_path, monkeypatch, checkpoint
):
    hub = FakeHub(REPO_ID, {PRESET.filename: checkpoint})
    try:
        _hub_env(monkeypatch, tmp_path / "home", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        photo = tmp_path / "photo.png"
        from PIL import Image

        Image.new("RGB", (32, 32), "green").save(photo)
        code, out, err = _run("classify", photo, "-m", "clip-o")
        assert code == 1 and out == "" and "Traceback" not in err
        assert "offline: HF_HUB_OFFLINE is set" in err
        assert PRESET.filename in err and f"{hub.url}/{REPO_ID}/resolve/main/" in err
        assert "biotrove models pull clip-o" in err and str(tmp_path / "home" / "models") in err
        assert hub.requests == []
        monkeypatch.delenv("HF_HUB_OFFLINE")
        hub.status = 503
        code, _, err = _run("models", "pull", "clip-o")
        assert code == 1 and "answered HTTP 503" in err and PRESET.filename in err
    finally:
        hub.close()
    # a checkpoint placed by hand is used as it is, offline
    from biotrove_cli.core.models import download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_hand = tmp_path / "home" / "models" / PRESET.filename
    by_hand.parent.mkdir(parents=True, exist_ok=True)
    by_hand.write_bytes(checkpoint)
    assert download.fetch_checkpoint(TINY_PRESET) == by_hand
    code, out, _ = _run("models", "clip-o", "--format", "json")
    row = json.loads(out)[0]
    assert row["state"] == "downloaded" and row["checkpoint"] == str(by_hand)
    by_hand.unlink()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # no server at all (a port nothing listens on)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    code, _, err = _run("models", "pull", "clip-o")
    assert code == 1 and "cannot be reached" in err and "place it" in err


def test_a_partial_download_resumes_and_a_damaged_one_is_fetched_again(
    tmp_path, monkeypatch, checkpoint
):
    from biotrove_cli.core.models import download

    sha = hashlib.sha256(checkpoint).hexdigest()
    hub = FakeHub(REPO_ID, {PRESET.filename: checkpoint})
    try:
        _hub_env(monkeypatch, tmp_path / "home", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        blobs = tmp_path / "home" / "hf" / "hub" / "models--BGLab--BioTrove-CLIP" / "blobs"
        blobs.mkdir(parents=True)
        (blobs / f"{sha}.incomplete").write_bytes(checkpoint[:3_000_000])  # an earlier run's
        path = download.fetch_checkpoint(TINY_PRESET)
        assert path.read_bytes() == checkpoint
        assert [(r.method, r.range) for r in hub.requests if r.method == "GET"] == [
            ("GET", "bytes=3000000-")
        ]
        assert all(r.auth == "Bearer hf_test_token" for r in hub.requests)  # HF_TOKEN sent
        assert not (blobs / f"{sha}.incomplete").exists()
        # a cached copy that lost its tail is detected by its size and fetched again
        blob = blobs / sha
        blob.write_bytes(checkpoint[:1000])
        hub.requests.clear()
        assert download.fetch_checkpoint(TINY_PRESET).read_bytes() == checkpoint
        assert len(hub.gets()) == 1
        # bytes damaged on the way do not match the sha256 ETag: fetched again
        blob.unlink()
        hub.requests.clear()
        hub.damage_gets = 1
        assert download.fetch_checkpoint(TINY_PRESET).read_bytes() == checkpoint
        assert len(hub.gets()) == 2
        # damaged every time: a clear error, nothing left behind
        blob.unlink()
        hub.damage_gets = 2
        from biotrove_cli.core.errors import CheckpointCorruptError

        with pytest.raises(CheckpointCorruptError, match="neither copy matches"):
            download.fetch_checkpoint(TINY_PRESET)
        assert not blob.exists() and not (blobs / f"{sha}.incomplete").exists()
    finally:
        hub.close()
