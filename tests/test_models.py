"""load_model in every format, weights-only safety, truncated files, offline errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from biotrove_cli.core.errors import (
    CheckpointCorruptError,
    InputError,
    ModelLoadError,
    UnsafeCheckpointError,
    UsageError,
)
from biotrove_cli.core.models import checkpoint as ck
from biotrove_cli.core.models.load import load_model


def _embeddings(loaded):
    torch.manual_seed(123)
    images = torch.randn(2, 3, loaded.image_size, loaded.image_size)
    tokens = loaded.tokenizer(["a photo of Quercus alba.", "a photo of Pinus banksiana."])
    with torch.no_grad():
        return loaded.model.encode_image(images), loaded.model.encode_text(tokens)


def _assert_same(a, b):
    for x, y in zip(_embeddings(a), _embeddings(b), strict=True):
        assert torch.equal(x, y)


def test_every_checkpoint_format_gives_identical_embeddings(tmp_path, tiny_model):
    sd = tiny_model.model.state_dict()
    # 1) a bare state dict
    torch.save(sd, tmp_path / "bare.pt")
    # 2) open_clip's training checkpoint under DDP: module. prefixes + optimizer state
    opt = torch.optim.AdamW(tiny_model.model.parameters(), lr=1e-3)
    torch.save(
        {
            "epoch": 4,
            "name": "exp",
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "optimizer": opt.state_dict(),
        },
        tmp_path / "openclip.pt",
    )
    # 3) a biotrove checkpoint that records its architecture
    ck.save_checkpoint(
        tmp_path / "biotrove.pt",
        {"step": 9, "state_dict": sd, "config": {"model": {"arch": "biotrove-tiny"}}},
    )
    # 4) safetensors weights with --arch
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    # 5) a run folder with a latest pointer
    run = tmp_path / "run"
    path = ck.save_checkpoint(run / "checkpoints" / ck.checkpoint_name(9), {"state_dict": sd})
    ck.write_latest(run, path)
    loaded = [
        load_model(tmp_path / "bare.pt"),
        load_model(tmp_path / "openclip.pt"),
        load_model(tmp_path / "biotrove.pt"),
        load_model(tmp_path / "w.safetensors", arch="biotrove-tiny"),
        load_model(run),
    ]
    for lm in loaded:
        assert lm.arch == "biotrove-tiny"
        _assert_same(tiny_model, lm)
    assert "inferred from the weights' shapes" in loaded[0].arch_reason
    assert "stored training config" in loaded[2].arch_reason
    assert loaded[4].kind == "run"
    assert loaded[1].checkpoint_meta["epoch"] == 4


def test_numpy_scalars_and_dtypes_in_the_pickle_are_allowed(tmp_path, tiny_model):
    # the published BioTrove-CLIP files carry numpy objects beside the weights
    torch.save(
        {
            "epoch": np.int64(8),
            "best_acc": np.float64(0.51),
            "dtype": np.dtype("float32"),
            "state_dict": tiny_model.model.state_dict(),
        },
        tmp_path / "np.pt",
    )
    lm = load_model(tmp_path / "np.pt")
    _assert_same(tiny_model, lm)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["torch.save", "pickle-2", "pickle-4"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"x": _Payload(marker)}}
    if kind == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(kind[-1])))
    with pytest.raises(UnsafeCheckpointError) as err:
        load_model(path)
    assert "refused" in err.value.message and "weights-only" in err.value.hint
    if kind != "pickle-4":  # protocol 4 is refused before its global is even read
        assert "system" in err.value.message
    assert not marker.exists()


def test_truncated_empty_and_non_checkpoint_files(tmp_path, tiny_model):
    good = ck.save_checkpoint(tmp_path / "good.pt", {"state_dict": tiny_model.model.state_dict()})
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello, I am not a checkpoint\n")
    for name in ("cut.pt", "empty.pt", "text.pt"):
        with pytest.raises(CheckpointCorruptError) as err:
            load_model(tmp_path / name)
        assert name in err.value.message and err.value.hint


def test_latest_skips_a_truncated_checkpoint_with_a_warning(tmp_path, tiny_model, caplog):
    run = tmp_path / "run"
    sd = tiny_model.model.state_dict()
    older = ck.save_checkpoint(run / "checkpoints" / ck.checkpoint_name(10), {"state_dict": sd})
    newer = ck.save_checkpoint(run / "checkpoints" / ck.checkpoint_name(20), {"state_dict": sd})
    ck.write_latest(run, newer)
    newer.write_bytes(newer.read_bytes()[:1000])  # a crash mid-copy
    with caplog.at_level("WARNING", logger="biotrove"):
        assert ck.resolve_latest(run) == older
    assert "skipping" in caplog.text and newer.name in caplog.text
    assert load_model(run).source == older


def test_atomic_save_leaves_no_partial_file(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    target = tmp_path / "c.pt"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        ck.save_checkpoint(target, {"x": Boom()})
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_keep_last_prunes_old_checkpoints(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2, 3, 4):
        ck.save_checkpoint(run / "checkpoints" / ck.checkpoint_name(step), {"step": step})
    removed = ck.prune_checkpoints(run, keep_last=2)
    assert [p.name for p in removed] == [ck.checkpoint_name(2), ck.checkpoint_name(1)]
    assert [p.name for p in ck.list_checkpoints(run)] == [
        ck.checkpoint_name(4),
        ck.checkpoint_name(3),
    ]


def test_offline_and_unknown_specs_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOTROVE_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelLoadError) as err:
        load_model("clip-o")
    assert "biotroveclip-vit-b-16-from-openai-epoch-40.pt" in err.value.message
    assert str(tmp_path / "home" / "models") in err.value.hint
    with pytest.raises(ModelLoadError) as err:
        load_model("ViT-B-16:openai")
    assert "offline" in err.value.message and "cache" in err.value.hint
    with pytest.raises(ModelLoadError) as err:
        load_model("hf-hub:imageomics/bioclip")
    assert "cache" in err.value.hint
    with pytest.raises(ModelLoadError):
        load_model("ViT-B-16:no-such-tag")
    with pytest.raises(UsageError) as err:
        load_model("ViT-B-16")
    assert "ViT-B-16:random" in err.value.hint
    with pytest.raises(InputError):
        load_model(str(tmp_path / "missing.pt"))
    with pytest.raises(InputError):
        load_model("definitely-not-a-model")


@pytest.mark.slow
def test_biotrove_file_names_decide_the_architecture(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("BIOTROVE_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "biotroveclip-vit-b-16-from-openai-epoch-40.pt"
    torch.save({"state_dict": tiny_model.model.state_dict()}, target)
    # the published name says ViT-B/16 with QuickGELU: tiny weights cannot pass for it
    with pytest.raises(ModelLoadError) as err:
        load_model("clip-o")
    assert "do not fit" in err.value.message and "--arch" in err.value.hint
    # converted once into a bundle (with the small demo bank standing in for inat2021)
    from biotrove_cli.core.taxonomy import banks

    monkeypatch.setitem(banks.BANKS, "inat2021", banks.BANKS["demo"])
    lm = load_model("clip-o", arch="biotrove-tiny")
    assert lm.arch == "biotrove-tiny" and lm.kind == "preset"
    assert lm.source == tmp_path / "models" / "clip-o" and len(lm.labels) == 33


def test_unknown_architecture(tmp_path):
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, tmp_path / "mlp.pt")
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "mlp.pt")
    assert "unknown architecture" in err.value.message
    sd = {
        "visual.conv1.weight": torch.zeros(32, 3, 4, 4),
        "visual.positional_embedding": torch.zeros(17, 32),
        "token_embedding.weight": torch.zeros(100, 16),
        "positional_embedding": torch.zeros(8, 16),
        "text_projection": torch.zeros(16, 8),
    }
    torch.save(sd, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "odd.pt")
    assert "no open_clip model has these shapes" in err.value.message


def test_spec_parsing_names_every_kind_and_loads_nothing(tmp_path):
    """The parser decides what a spec is from names and folders alone: no torch, no open_clip."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    bundle, run, onnx_dir, folder = (tmp_path / n for n in ("bundle", "run", "onnx", "folder"))
    for d in (bundle, run / "checkpoints", onnx_dir, folder):
        d.mkdir(parents=True)
    (bundle / "open_clip_config.json").write_text("{}")
    (onnx_dir / "onnx_config.json").write_text("{}")
    for name in ("x.pt", "w.safetensors"):
        (tmp_path / name).write_bytes(b"not read")
    home = tmp_path / "home"
    specs = {
        str(bundle): ("bundle", str(bundle), "", ""),
        f"local-dir:{bundle}": ("bundle", str(bundle), "", ""),
        str(run): ("run", str(run), "", ""),
        str(onnx_dir): ("onnx", str(onnx_dir), "", ""),
        str(folder): ("folder", str(folder), "", ""),
        str(tmp_path / "x.pt"): ("checkpoint", str(tmp_path / "x.pt"), "", ""),
        str(tmp_path / "w.safetensors"): ("safetensors", str(tmp_path / "w.safetensors"), "", ""),
        "CLIP-O": ("preset", str(home / "models" / "clip-o"), "", ""),  # its bundle folder
        "hf-hub:imageomics/bioclip": ("hf-hub", None, "", ""),
        "ViT-B-16:openai": ("pretrained", None, "ViT-B-16", "openai"),
        "biotrove-tiny:scratch": ("random", None, "biotrove-tiny", "scratch"),
        f"biotrove-tiny:{tmp_path / 'x.pt'}": (
            "arch-file",
            str(tmp_path / "x.pt"),
            "biotrove-tiny",
            str(tmp_path / "x.pt"),
        ),
        "ViT-B-16": ("unknown", None, "", ""),
        "missing/x.pt": ("unknown", None, "", ""),
    }
    script = (
        "import json, sys\n"
        "from biotrove_cli.core.models.spec import parse_model_spec\n"
        "out = {}\n"
        "for text in json.loads(sys.argv[1]):\n"
        "    s = parse_model_spec(text)\n"
        "    out[text] = [s.kind.value, str(s.path) if s.path else None, s.arch, s.tag]\n"
        "heavy = sorted(m for m in ('torch', 'open_clip', 'safetensors') if m in sys.modules)\n"
        "print(json.dumps({'specs': out, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "BIOTROVE_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(specs))],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["heavy"] == []
    assert {k: tuple(v) for k, v in got["specs"].items()} == specs

    from biotrove_cli.core.models.spec import parse_model_spec

    assert parse_model_spec("missing/x.pt").looks_like_path
    assert not parse_model_spec("definitely-not-a-model").looks_like_path
    with pytest.raises(UsageError):
        parse_model_spec("  ")
    with pytest.raises(UsageError):
        parse_model_spec("local-dir:")


def test_folders_that_hold_no_loadable_model_fail_clearly(tmp_path):
    onnx_dir, folder = tmp_path / "onnx", tmp_path / "photos"
    onnx_dir.mkdir()
    folder.mkdir()
    (onnx_dir / "onnx_config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as err:  # an ONNX bundle with a broken config
        load_model(onnx_dir)
    assert "has no 'inputs'" in err.value.message and "export the model again" in err.value.hint
    with pytest.raises(InputError) as err:
        load_model(folder)
    assert "neither an exported model folder nor a run folder" in err.value.message
    assert "open_clip_config.json" in err.value.hint and "checkpoints/" in err.value.hint
