"""Bad inputs from the audit of issue #13, one row each: the command, the bad input built in
tmp_path, the exit code, what the messages must say (and never say), and, for data that used to
come out silently wrong, what must hold afterwards.

Every row runs the real command through ``main()`` (the one error boundary) on tiny models and
generated photos.

The second part covers processes, files and the CLI (items 9, 12, 16-18): ordinary OS errors as
clear messages, ``-o`` into special files, machine output never wrapped, global flags anywhere,
the progress display and the results (kill -9 and one writer per output are in
tests/test_processes.py).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import pickle
import pty
import re
import stat
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_SPECIES, REPO, run_subprocess


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_model) -> Path:
    """The seeded tiny model as a bare state dict."""
    import torch

    path = tmp_path_factory.mktemp("bad-ckpt") / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), path)
    return path


def _edited_ckpt(tiny_model, path: Path, value: float) -> Path:
    """The tiny model with every value of ``visual.proj`` set to ``value``."""
    import torch

    sd = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    sd["visual.proj"].fill_(value)
    torch.save(sd, path)
    return path


@pytest.fixture(scope="session")
def nan_ckpt(tmp_path_factory, tiny_model) -> Path:
    return _edited_ckpt(tiny_model, tmp_path_factory.mktemp("bad-nan") / "nan.pt", float("nan"))


@pytest.fixture(scope="session")
def huge_ckpt(tmp_path_factory, tiny_model) -> Path:
    """Finite weights whose image embeddings overflow to infinity (so NaN once normalised)."""
    return _edited_ckpt(tiny_model, tmp_path_factory.mktemp("bad-huge") / "huge.pt", 3e38)


@pytest.fixture(scope="session")
def evil_pickle(tmp_path_factory) -> Path:
    """A checkpoint whose pickle would run ``os.system`` (never loaded unsafely)."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path_factory.mktemp("bad-evil") / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "payload": Evil()}, protocol=2))
    return path


@pytest.fixture(scope="session")
def shards(tmp_path_factory, small_world) -> Path:
    """The small world sharded: train and val splits (for eval and train --dry-run)."""
    from biotrove_cli.core.data.shard import ShardConfig, shard_dataset

    out = tmp_path_factory.mktemp("bad-ds") / "ds"
    shard_dataset(
        ShardConfig(
            metadata=[small_world["metadata"]],
            images=small_world["images"],
            out=out,
            image_size=64,
            val_fraction=0.4,
            samples_per_shard=8,
            seed=0,
            workers=1,
        )
    )
    return out


@dataclass
class Env:
    """What a row builds its bad input from."""

    tmp: Path
    cli: Callable[..., tuple[int, str, str]]
    ckpt: Path
    nan_ckpt: Path
    huge_ckpt: Path
    evil: Path
    world: dict[str, Any]
    shards: Path
    taxa: list[Any]


@dataclass(frozen=True)
class Case:
    """One bad input: ``build`` makes it in ``env.tmp`` and returns the command's arguments."""

    build: Callable[[Env], list[Any]]
    code: int
    says: tuple[str, ...] = ()  # fragments of stderr
    never: tuple[str, ...] = ()  # fragments neither stdout nor stderr may hold
    then: Callable[[Env, str, str], None] | None = None  # what must hold afterwards
    slow: bool = False  # starts a fresh Python (export's verification)


# -- builders: shard ------------------------------------------------------------------------------
def _write_meta(env: Env, rows: list[tuple[str, Any]]) -> Path:
    from biotrove_cli.core.data.world import biotrove_table
    from biotrove_cli.core.io import atomic_write_parquet

    return atomic_write_parquet(biotrove_table((pid, t, "") for pid, t in rows), env.tmp / "m.pq")


def _photo(env: Env, name: str, taxon_index: int, fmt: str = "JPEG") -> Path:
    """A generated photo of taxon ``taxon_index`` saved as ``images/name`` in ``fmt``."""
    from biotrove_cli.core.data.world import render

    path = env.tmp / "images" / name
    path.parent.mkdir(exist_ok=True)
    img = render(env.taxa[taxon_index], taxon_index, seed=5, size=(48, 40))
    img.save(path, format=fmt)
    return path


def _shard(env: Env, meta: Path, *extra: Any) -> list[Any]:
    return ["shard", meta, "--images", env.tmp / "images", "--out", env.tmp / "ds",
            "--val-fraction", "0", "--workers", "0", "--format", "json",
            "--summary", env.tmp / "summary.json", *extra]  # fmt: skip


def _summary_doc(env: Env) -> dict[str, Any]:
    """What the command wrote to ``--summary`` (its JSON output is the records alone)."""
    return json.loads((env.tmp / "summary.json").read_text())


def _samples(env: Env) -> dict[str, dict[str, Any]]:
    """key -> the sample's json, from every tar the shard run wrote."""
    from biotrove_cli.core.data.shards import read_shard

    out = {}
    for tar in sorted((env.tmp / "ds").glob("*/*.tar")):
        for s in read_shard(tar):
            out[s["__key__"]] = json.loads(s["json"])
    return out


def _failures(env: Env) -> Counter:
    total: Counter = Counter()
    for stats in (env.tmp / "ds").glob("*/*.stats.json"):
        total.update(json.loads(stats.read_text())["failures"])
    return total


def build_case_only_ids(env: Env) -> list[Any]:
    # Ab and ab are two photos of two species; AB matches both in case only (ambiguous);
    # xY matches XY.jpg in case only, and only that file: it is taken
    for name, ti in (("Ab.jpg", 0), ("ab.jpg", 1), ("XY.jpg", 3)):
        _photo(env, name, ti)
    rows = [("Ab", env.taxa[0]), ("ab", env.taxa[1]), ("AB", env.taxa[2]), ("xY", env.taxa[3])]
    return _shard(env, _write_meta(env, rows))


def then_case_only_ids(env: Env, out: str, err: str) -> None:
    samples = _samples(env)
    assert set(samples) == {"Ab", "ab", "xY"}
    for key, file, ti in (("Ab", "Ab.jpg", 0), ("ab", "ab.jpg", 1), ("xY", "XY.jpg", 3)):
        assert Path(samples[key]["source"]).name == file
        assert samples[key]["scientific_name"] == env.taxa[ti].scientific_name
    assert _failures(env) == Counter({"ambiguous": 1})


def build_unsupported_formats(env: Env) -> list[Any]:
    _photo(env, "1.jpg", 0)
    _photo(env, "2.gif", 1, "GIF")
    _photo(env, "3.tif", 2, "TIFF")  # a format biotrove reads everywhere: sharded
    (env.tmp / "images" / "4.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    rows = [(str(i), env.taxa[i - 1]) for i in (1, 2, 3, 4)]
    return _shard(env, _write_meta(env, rows))


def then_unsupported_formats(env: Env, out: str, err: str) -> None:
    assert set(_samples(env)) == {"1", "3"}
    assert _failures(env) == Counter({"unsupported": 2})


def build_only_unsupported(env: Env) -> list[Any]:
    _photo(env, "1.gif", 0, "GIF")
    _photo(env, "2.gif", 1, "GIF")
    return _shard(env, _write_meta(env, [("1", env.taxa[0]), ("2", env.taxa[1])]))


def build_conflicting_species(env: Env) -> list[Any]:
    for i in range(4):
        _photo(env, f"{i}.jpg", i)
    rows = [("0", env.taxa[0]), ("1", env.taxa[1]), ("1", env.taxa[2]),  # conflicting
            ("2", env.taxa[2]), ("2", env.taxa[2]), ("3", env.taxa[3])]  # fmt: skip
    return _shard(env, _write_meta(env, rows))


def then_conflicting_species(env: Env, out: str, err: str) -> None:
    selection = json.loads((env.tmp / "ds" / "plan.json").read_text())["selection"]
    assert selection["conflicting"] == 2 and selection["duplicates"] == 1
    assert selection["selected"] == 3
    assert set(_samples(env)) == {"0", "2", "3"}
    assert _summary_doc(env)["selection"]["conflicting"] == 2


# -- builders: models and bundles -----------------------------------------------------------------
def _bundle(env: Env, out: Path, source: Path) -> Path:
    from biotrove_cli.core.models.export import ExportConfig, export_model

    export_model(ExportConfig(source=str(source), out=out, verify=False))
    return out


def _other_ckpt(env: Env) -> Path:
    """A second tiny model, different from ``env.ckpt``."""
    import torch

    sd = torch.load(env.ckpt, weights_only=True)
    gen = torch.Generator().manual_seed(1)
    sd["visual.proj"] = torch.randn(sd["visual.proj"].shape, generator=gen) * 0.1
    path = env.tmp / "other.pt"
    torch.save(sd, path)
    return path


def build_bundle_with_evil_bin(env: Env) -> list[Any]:
    import shutil

    bundle = _bundle(env, env.tmp / "b", env.ckpt)
    (bundle / "open_clip_model.safetensors").unlink()
    shutil.copy(env.evil, bundle / "open_clip_pytorch_model.bin")
    return _classify(env, env.world["images"], "-m", bundle)


def build_edited_bundle_config(env: Env) -> list[Any]:
    bundle = _bundle(env, env.tmp / "b", env.ckpt)
    cfg = json.loads((bundle / "open_clip_config.json").read_text())
    cfg["preprocess_cfg"]["std"] = [0.5, 0.5, 0.5]
    (bundle / "open_clip_config.json").write_text(json.dumps(cfg))
    return _classify(env, env.world["images"], "-m", bundle)


def then_edited_bundle_config(env: Env, out: str, err: str) -> None:
    code, info, _ = env.cli("info", env.tmp / "b", "--format", "csv")
    assert code == 0 and "open_clip_config.json,edited after export" in info


# -- builders: eval -------------------------------------------------------------------------------
def _eval(env: Env, *models: Any, extra: tuple = ()) -> list[Any]:
    args: list[Any] = ["eval", "--data", env.shards, "--workers", "0", "--format", "json",
                       "--summary", env.tmp / "summary.json"]  # fmt: skip
    for m in models:
        args += ["-m", m]
    return [*args, *extra]


def build_same_folder_names(env: Env) -> list[Any]:
    a = _bundle(env, env.tmp / "a" / "model", env.ckpt)
    b = _bundle(env, env.tmp / "b" / "model", _other_ckpt(env))
    return _eval(env, a, b)


def then_same_folder_names(env: Env, out: str, err: str) -> None:
    doc = _summary_doc(env)
    records = json.loads(out)
    by_model = Counter(r["model"] for r in records)
    assert set(by_model) == {"a/model", "b/model"}
    assert by_model["a/model"] == by_model["b/model"] == 7  # one record per rank each
    assert [m["model"] for m in doc["models"]] == ["a/model", "b/model"]
    top1 = {r["model"]: r["top1"] for r in records if r["rank"] == "species"}
    n = {r["model"]: r["n_images"] for r in records if r["rank"] == "species"}
    assert n["a/model"] == n["b/model"] > 0  # each scored on its own, not merged
    assert len(top1) == 2


def build_eval_table_gif(env: Env) -> list[Any]:
    photos = env.world["photos"][:3]
    for p in photos[:2]:
        (env.tmp / "images").mkdir(exist_ok=True)
        (env.tmp / "images" / p.path.name).write_bytes(p.path.read_bytes())
    _photo(env, f"{photos[2].photo_id}.gif", 0, "GIF")
    meta = _write_meta(env, [(p.photo_id, p.taxon) for p in photos])
    return ["eval", "-m", env.ckpt, "--data", meta, "--images", env.tmp / "images",
            "--workers", "0", "--format", "json",
            "--summary", env.tmp / "summary.json"]  # fmt: skip


def then_eval_table_gif(env: Env, out: str, err: str) -> None:
    (model,) = _summary_doc(env)["models"]
    assert model["unreadable"] == {"unsupported": 1}


# -- builders: classify ---------------------------------------------------------------------------
def _classify(env: Env, *args: Any) -> list[Any]:
    return ["classify", "--labels", DEMO_SPECIES, "--workers", "0", *args]


def build_min_confidence_zero(env: Env) -> list[Any]:
    return _classify(env, env.world["images"], "-m", env.ckpt, "--min-confidence", "0",
                     "--format", "csv")  # fmt: skip


def then_min_confidence_zero(env: Env, out: str, err: str) -> None:
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(env.world["photos"])
    assert {r["rank"] for r in rows} == {"species"}  # every probability reaches 0


ODD_NAMES = ('quote"d.jpg', "new\nline.jpg", "comma, and 'single'.jpg", "plain.jpg")


def _odd_folder(env: Env) -> Path:
    folder = env.tmp / "odd"
    folder.mkdir()
    for i, name in enumerate(ODD_NAMES):
        (folder / name).write_bytes(env.world["photos"][i].path.read_bytes())
    return folder


def _read_output(path: Path, fmt: str) -> list[dict[str, Any]]:
    text = path.read_text()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _build_resume(fmt: str, torn: bool) -> Callable[[Env], list[Any]]:
    def build(env: Env) -> list[Any]:
        folder = _odd_folder(env)
        out = env.tmp / f"pred.{fmt}"
        args = _classify(env, folder, "-m", env.ckpt, "-k", "2", "-o", out, "--format", fmt)
        code, _, err = env.cli(*args)
        assert code == 0, err
        if torn:  # cut inside the quoted newline of the odd name: a torn multi-line record
            data = out.read_bytes()
            out.write_bytes(data[: data.index(b"new\nline") + len(b"new\n")])
        return [*args, "--resume"]

    return build


def _then_resume(fmt: str) -> Callable[[Env, str, str], None]:
    def then(env: Env, out: str, err: str) -> None:
        rows = _read_output(env.tmp / f"pred.{fmt}", fmt)
        per_file = Counter(Path(r["path"]).name for r in rows)
        assert per_file == Counter({name: 2 for name in ODD_NAMES})

    return then


def build_gif_in_folder(env: Env) -> list[Any]:
    folder = env.tmp / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(env.world["photos"][0].path.read_bytes())
    (env.tmp / "images").mkdir()
    _photo(env, "b.gif", 0, "GIF").rename(folder / "b.gif")
    return _classify(env, folder, "-m", env.ckpt, "-k", "1", "--format", "csv")


def then_gif_in_folder(env: Env, out: str, err: str) -> None:
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["b.gif"]["error"] == "unsupported" and rows["a.jpg"]["error"] == ""


def build_text_cache_activation(env: Env) -> list[Any]:
    # the same weights as GELU first: their class embeddings land in the cache
    args = _classify(env, env.world["images"], "-m", env.ckpt, "-k", "3", "--format", "csv")
    code, _, err = env.cli(*args, "--arch", "biotrove-tiny")
    assert code == 0 and "class texts encoded" in err, err
    return [*args, "--arch", "biotrove-tiny-quickgelu"]


def then_text_cache_activation(env: Env, out: str, err: str) -> None:
    args = _classify(env, env.world["images"], "-m", env.ckpt, "-k", "3", "--format", "csv")
    code, fresh, err2 = env.cli(*args, "--arch", "biotrove-tiny-quickgelu", "--no-cache")
    assert code == 0, err2
    assert out == fresh  # the QuickGELU run used its own class embeddings, not GELU's
    code, again, err3 = env.cli(*args, "--arch", "biotrove-tiny-quickgelu")
    assert code == 0 and "from the cache" in err3 and again == fresh


# -- builders: export, train ----------------------------------------------------------------------
def _train_dry(env: Env, *extra: Any) -> list[Any]:
    return ["train", "--data", env.shards, "--run-dir", env.tmp / "run", "--dry-run",
            "data.workers=0", "data.batch_size=2", *extra]  # fmt: skip


def then_nothing_written(env: Env, out: str, err: str) -> None:
    assert not (env.tmp / "run").exists() and not (env.tmp / "out").exists()


MPS = ("MPS", "not available")

# fmt: off
CASES: dict[str, Case] = {
    # 5: photo ids that differ only in case
    "shard-ids-differ-in-case": Case(
        build_case_only_ids, 0, says=("ambiguous: AB", "Ab.jpg, ab.jpg"), then=then_case_only_ids),
    # 15: .gif and other image formats biotrove does not read
    "shard-unsupported-formats": Case(
        build_unsupported_formats, 0, says=("unsupported: 2", ".gif is not a format"),
        never=("missing:", "missing="), then=then_unsupported_formats),
    "shard-only-unsupported": Case(
        build_only_unsupported, 1, says=("can be used: 2 unsupported", ".gif is not a format")),
    # 11: the same photo with different species
    "shard-conflicting-species": Case(
        build_conflicting_species, 0, says=("2 rows left out as conflicting", "photo_id 1"),
        then=then_conflicting_species),
    # 7: two models in folders of the same name
    "eval-same-folder-names": Case(
        build_same_folder_names, 0, never=("changed after export",), then=then_same_folder_names),
    "eval-same-model-twice": Case(
        lambda e: _eval(e, e.ckpt, e.ckpt), 2, says=("given twice",)),
    # 8: non-finite models
    "eval-nan-weights": Case(
        lambda e: _eval(e, e.nan_ckpt), 1, says=("nan.pt", "not finite", "visual.proj")),
    "eval-nonfinite-embeddings": Case(
        lambda e: _eval(e, e.huge_ckpt), 1, says=("huge.pt", "non-finite embeddings")),
    "classify-nan-weights": Case(
        lambda e: _classify(e, e.world["images"], "-m", e.nan_ckpt), 1,
        says=("nan.pt", "not finite")),
    "export-nan-weights": Case(
        lambda e: ["export", e.nan_ckpt, "--out", e.tmp / "out"], 1,
        says=("nan.pt", "not finite"), never=("verified",), then=then_nothing_written),
    "export-nonfinite-embeddings": Case(
        lambda e: ["export", e.huge_ckpt, "--out", e.tmp / "out"], 1,
        says=("verification failed", "NaN or infinity"), never=("verified (",),
        then=then_nothing_written, slow=True),
    # 15: eval table rows whose photo is a .gif
    "eval-table-photo-id-gif": Case(build_eval_table_gif, 0, then=then_eval_table_gif),
    # 6: the text-embedding cache and the activation
    "classify-cache-gelu-then-quickgelu": Case(
        build_text_cache_activation, 0, says=("class texts encoded",),
        never=("from the cache",), then=then_text_cache_activation),
    # 10: resume with names holding newlines and quotes
    "classify-resume-odd-names-csv": Case(
        _build_resume("csv", torn=False), 0, says=("resuming: 3 images already in",),
        then=_then_resume("csv")),
    "classify-resume-odd-names-jsonl": Case(
        _build_resume("jsonl", torn=False), 0, says=("resuming: 3 images already in",),
        then=_then_resume("jsonl")),
    "classify-resume-torn-quoted-record": Case(
        _build_resume("csv", torn=True), 0, then=_then_resume("csv")),
    # 15: small ones
    "classify-min-confidence-0": Case(build_min_confidence_zero, 0, then=then_min_confidence_zero),
    "classify-gif-in-folder": Case(
        build_gif_in_folder, 0, says=("b.gif", "format biotrove does not read"),
        then=then_gif_in_folder),
    "classify-bundle-evil-bin": Case(
        build_bundle_with_evil_bin, 1, says=("refused", "posix.system"),
        never=("weights_only", "Traceback")),
    "classify-bundle-config-edited": Case(
        build_edited_bundle_config, 0, says=("open_clip_config.json was changed after export",),
        then=then_edited_bundle_config),
    # 13: train --dry-run loads --init as a real run does
    "train-dry-run-init-missing": Case(
        lambda e: _train_dry(e, "--init", e.tmp / "nope.pt"), 1, says=("nope.pt", "no such file"),
        then=then_nothing_written),
    "train-dry-run-init-garbage": Case(
        lambda e: _train_dry(e, "--init", _garbage(e)), 1,
        says=("garbage.pt", "not a PyTorch checkpoint")),
    "train-dry-run-init-malicious": Case(
        lambda e: _train_dry(e, "--init", e.evil), 1, says=("refused", "posix.system"),
        never=("weights_only",)),
    "train-dry-run-init-nan": Case(
        lambda e: _train_dry(e, "--init", e.nan_ckpt), 1, says=("not finite",)),
    # 14: --device mps where torch has no MPS: a usage error in every command
    "classify-device-mps": Case(
        lambda e: _classify(e, e.world["images"], "-m", e.ckpt, "--device", "mps"), 2, says=MPS),
    "eval-device-mps": Case(lambda e: _eval(e, e.ckpt, extra=("--device", "mps")), 2, says=MPS),
    "export-device-mps": Case(
        lambda e: ["export", e.ckpt, "--out", e.tmp / "out", "--device", "mps"], 2, says=MPS,
        then=then_nothing_written),
    "train-dry-run-device-mps": Case(lambda e: _train_dry(e, "--device", "mps"), 2, says=MPS),
    "train-torchrun-device-mps": Case(
        lambda e: [a for a in _train_dry(e, "--device", "mps", "--nproc-per-node", "2")
                   if a != "--dry-run"], 2, says=MPS, never=("rank 1",),
        then=then_nothing_written),
}
# fmt: on

MPS_CASES = {k for k in CASES if k.endswith("device-mps")}


def _garbage(env: Env) -> Path:
    path = env.tmp / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    return path


@pytest.fixture
def env(tmp_path, cli, tiny_ckpt, nan_ckpt, huge_ckpt, evil_pickle, small_world, shards):
    return Env(
        tmp=tmp_path,
        cli=cli,
        ckpt=tiny_ckpt,
        nan_ckpt=nan_ckpt,
        huge_ckpt=huge_ckpt,
        evil=evil_pickle,
        world=small_world,
        shards=shards,
        taxa=small_world["taxa"],
    )


@pytest.mark.parametrize(
    "name", [pytest.param(k, marks=[pytest.mark.slow] if c.slow else []) for k, c in CASES.items()]
)
def test_bad_input(name: str, env: Env):
    if name in MPS_CASES:
        from biotrove_cli.core.runtime import _mps_available

        if _mps_available():
            pytest.skip("this machine has Apple's GPU: --device mps is valid here")
    case = CASES[name]
    args = case.build(env)
    code, out, err = env.cli(*args)
    assert code == case.code, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err and "this is a bug" not in err, err
    for fragment in case.says:
        assert fragment in err, f"{fragment!r} not in stderr:\n{err}"
    for fragment in case.never:
        assert fragment not in out + err, f"{fragment!r} in the output:\n{out}\n{err}"
    if case.then is not None:
        case.then(env, out, err)


# -- the pieces behind the rows -------------------------------------------------------------------
def test_device_auto_picks_mps_where_torch_has_it(monkeypatch):
    import torch

    from biotrove_cli.core import runtime
    from biotrove_cli.core.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert runtime.resolve_device("auto") == "mps" and runtime.resolve_device("mps") == "mps"
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert runtime.resolve_device("auto") == "cpu"
    with pytest.raises(UsageError) as exc:
        runtime.resolve_device("mps")
    assert exc.value.exit_code == 2


def test_model_labels_are_the_shortest_distinguishing_suffix():
    from biotrove_cli.core.evaluation.engine import model_labels

    assert model_labels(["runs/a/model", "runs/b/model", "clip-o"]) == [
        "a/model",
        "b/model",
        "clip-o",
    ]
    assert model_labels(["x/runs/a/m", "y/runs/a/m", "z/b/m"]) == ["x/runs/a/m", "y/runs/a/m",
                                                                    "b/m"]  # fmt: skip
    assert model_labels(["a/m", "m"]) == ["a/m", "m"]
    assert model_labels(["only/one/model.pt"]) == ["model.pt"]


def test_text_fingerprint_covers_activation_and_tokenizer(tiny_ckpt):
    from biotrove_cli.core.models.load import load_model

    gelu = load_model(tiny_ckpt, arch="biotrove-tiny")
    quick = load_model(tiny_ckpt, arch="biotrove-tiny-quickgelu")
    assert gelu.text_fingerprint() != quick.text_fingerprint()
    assert gelu.text_fingerprint() == load_model(tiny_ckpt).text_fingerprint()
    # a tokenizer with a shorter context tokenizes (truncates) differently: another key
    import open_clip

    gelu.tokenizer = open_clip.get_tokenizer("biotrove-tiny", context_length=16)
    gelu._fingerprint = None
    assert gelu.text_fingerprint() != load_model(tiny_ckpt).text_fingerprint()


# == processes, files and the CLI (items 9, 12, 16, 17, 18) ==================================
# -- item 12: ordinary OS errors are the user's to fix, not bugs ----------------------------------
def _limited_run(args: list[str], fsize: int) -> subprocess.CompletedProcess:
    """``biotrove ARGS`` with a file size limit (``ulimit -f``): writes past it fail (EFBIG)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "biotrove_cli", *map(str, args)],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        cwd=REPO,
        timeout=600,
    )


def _bad_bundle(tmp: Path) -> Path:
    bundle = tmp / "bundle"
    bundle.mkdir()
    (bundle / "open_clip_config.json").write_text('{"model_cfg": {"embed_dim": 64,\n')
    return bundle


OS_ERROR_CASES = [
    # (id, arguments ({tmp} is the test's folder), what the message says, the path it names)
    ("no-space-left", ["presets", "-o", "/dev/full"], "no space left", "/dev/full"),
    ("permission-denied", ["presets", "-o", "/sys/x.csv"], "permission denied", "/sys/x.csv"),
    ("path-under-proc", ["presets", "-o", "/proc/biotrove/x.csv"], "kernel interface", "/proc"),
    (
        "file-where-a-folder-should-be",
        ["presets", "-o", "{tmp}/file/sub/x.csv"],
        "is a file where a folder should be",
        "{tmp}/file",
    ),
    (
        "file-in-place-of-the-output-folder",
        ["presets", "-o", "{tmp}/file/x.json"],
        "is a file where a folder is needed",
        "{tmp}/file",
    ),
    (
        "folder-where-a-file-should-be",
        ["presets", "-o", "{tmp}/folder"],
        "is a folder where a file is needed",
        "{tmp}/folder",
    ),
    (
        "bad-bundle-json-in-info",
        ["info", "{tmp}/bundle"],
        "not valid JSON (line 2",
        "{tmp}/bundle/open_clip_config.json",
    ),
]


@pytest.mark.parametrize(
    "args, says, names", [c[1:] for c in OS_ERROR_CASES], ids=[c[0] for c in OS_ERROR_CASES]
)
def test_os_errors_say_what_failed_where(tmp_path, args, says, names):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    _bad_bundle(tmp_path)
    result = run_subprocess(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 1, result.stderr
    assert says in result.stderr and names.format(tmp=tmp_path) in result.stderr, result.stderr
    assert "Hint:" in result.stderr
    assert "this is a bug" not in result.stderr and "Traceback" not in result.stderr
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temp file left behind


def test_a_file_too_large_is_named(tmp_path):
    target = tmp_path / "presets.json"
    result = _limited_run(["presets", "--format", "json", "-o", target], fsize=1000)
    assert result.returncode == 1, result.stderr
    assert f"{target}: file too large" in result.stderr and "ulimit -f" in result.stderr
    assert "this is a bug" not in result.stderr and "Traceback" not in result.stderr
    assert not target.exists() and not list(tmp_path.iterdir())


def test_a_read_only_file_system_is_named(cli, tmp_path, monkeypatch):
    target = tmp_path / "presets.json"

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(os, "replace", read_only)
    code, out, err = cli("presets", "-o", target)
    assert code == 1
    assert f"{target}: read-only file system" in err and "writable" in err
    assert "this is a bug" not in err


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_stops_training_clearly(tmp_path, train_shards):
    """torch reports a failed write as its own RuntimeError: the OSError behind it is found."""
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", train_shards, "--run-dir", run]
    args += ["--steps", "2", "--batch-size", "16", "--workers", "0", "save_every=1"]
    result = _limited_run(args, fsize=1_000_000)  # the tiny model's checkpoint is ~5 MB
    assert result.returncode == 1, result.stderr
    assert "step-00000001.pt: file too large" in result.stderr, result.stderr
    assert "this is a bug" not in result.stderr and "Traceback" not in result.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


# -- item 9: -o into a special file writes into it, never replaces it -----------------------------
def _eval_table(photos, path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "kingdom", "phylum", "class", "order", "family", "genus", "species"])
        for p in photos[:6]:
            w.writerow([p.path, *p.taxon.names])
    return path


CLASSIFY = ["classify", "{photo}", "-m", "{ckpt}", "--labels", "{labels}"]
EVAL = ["eval", "-m", "{ckpt}", "--data", "{table}", "--labels", "{labels}", "--workers", "0"]
EMBED_FORMATS = ("parquet", "jsonl", "json")
DEV_NULL_CASES = [
    *[(f"presets-{f}", ["presets", "--format", f]) for f in ("csv", "json", "jsonl", "table")],
    ("presets-parquet", ["presets", "--format", "parquet"]),
    ("presets-yaml", ["presets", "clip-o"]),
    ("info-json", ["info", "{ckpt}", "--format", "json"]),
    *[(f"classify-{f}", [*CLASSIFY, "--format", f]) for f in ("csv", "jsonl", "json", "table")],
    ("eval-json-and-per-class", [*EVAL, "--format", "json", "--per-class", "/dev/null"]),
    ("classify-summary", [*CLASSIFY, "--summary", "/dev/null"]),
    *[(f"embed-{f}", ["embed", "{photo}", "-m", "{ckpt}", "--format", f]) for f in EMBED_FORMATS],
    ("models", ["models"]),
    ("train-dry-run", ["train", "--preset", "tiny", "--data", "{shards}", "--dry-run"]),
]


@pytest.mark.parametrize("args", [c[1] for c in DEV_NULL_CASES], ids=[c[0] for c in DEV_NULL_CASES])
def test_output_to_dev_null_works_for_every_command_and_format(
    cli, request, tmp_path, small_world, tiny_ckpt, args
):
    before = os.stat("/dev/null")
    values = {
        "ckpt": tiny_ckpt,
        "photo": small_world["photos"][0].path,
        "labels": DEMO_SPECIES,
        "table": _eval_table(small_world["photos"], tmp_path / "photos.csv"),
        "shards": request.getfixturevalue("train_shards") if "{shards}" in args else "",
    }
    code, out, err = cli(*[a.format(**values) for a in args], "-o", "/dev/null")
    assert code == 0, err
    assert out == ""
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino  # the same device
    assert not [n for n in os.listdir("/dev") if n.startswith(".null")]


def test_embed_npy_into_a_special_file_is_refused(cli, small_world, tiny_ckpt):
    """npy is a memory-mapped file renamed over the output, with an index CSV beside it."""
    before = os.stat("/dev/null")
    args = ["embed", small_world["photos"][0].path, "-m", tiny_ckpt, "--format", "npy"]
    code, out, err = cli(*args, "-o", "/dev/null")
    assert code == 2 and "-o must name a regular file" in err and "--format parquet" in err
    assert os.stat("/dev/null").st_ino == before.st_ino
    assert not [n for n in os.listdir("/dev") if "null" in n and n != "null"]


def test_output_into_a_fifo_and_through_a_symlink(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = run_subprocess("presets", "--format", "json", "-o", fifo)
    reader.join(60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still a FIFO, not a file put in its place
    assert len(json.loads(got[0])) == 4
    # a symlink: the file it points to is replaced, the link stays a link
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    result = run_subprocess("presets", "-o", link)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(list(csv.DictReader(real.open()))) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "pipe", "real.csv"]


# -- item 16: machine output is never wrapped or styled -------------------------------------------
def _on_a_terminal(args: list[str], columns: int) -> str:
    """stdout and stderr of ``biotrove ARGS`` on a pseudo-terminal ``columns`` wide."""
    main, sub = pty.openpty()
    env = dict(os.environ, COLUMNS=str(columns), LINES="50", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "biotrove_cli", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=sub,
        stderr=sub,
        env=env,
        cwd=REPO,
    )
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks)[-3000:]
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize("columns", [20, 80])
def test_completion_and_preset_yaml_are_never_wrapped(columns):
    from biotrove_cli.core import config
    from biotrove_cli.core.training.config import TrainConfig

    script = (REPO / "completions" / "biotrove.bash").read_text()
    piped = run_subprocess("completion", "bash", env={"COLUMNS": str(columns)})
    assert piped.stdout == script
    assert _on_a_terminal(["completion", "bash"], columns) == script
    yaml_text = config.dump_yaml(
        config.resolve(TrainConfig, preset="clip-o"),
        header=config.preset_header("clip-o")["command"],
    )
    assert run_subprocess("presets", "clip-o", env={"COLUMNS": str(columns)}).stdout == yaml_text
    assert _on_a_terminal(["presets", "clip-o"], columns) == yaml_text


def test_csv_and_json_ignore_the_terminal_width():
    from biotrove_cli.core.training.config import preset_records

    wide = run_subprocess("presets", "--format", "json", "-o", "-", env={"COLUMNS": "300"})
    narrow = run_subprocess("presets", "--format", "json", "-o", "-", env={"COLUMNS": "20"})
    assert narrow.stdout == wide.stdout and len(json.loads(narrow.stdout)) == 4
    piped = run_subprocess("presets", env={"COLUMNS": "20"}).stdout
    rows = list(csv.DictReader(io.StringIO(piped)))
    descriptions = {r["preset"]: r["description"] for r in preset_records()}
    assert {r["preset"]: r["description"] for r in rows} == descriptions  # whole, not cut
    assert "\x1b[" not in narrow.stdout + piped


# -- item 17: global flags after the subcommand too, and -v that says more ------------------------
def test_quiet_and_verbose_are_accepted_after_the_subcommand(cli, tmp_path, small_world, tiny_ckpt):
    args = ["classify", small_world["photos"][0].path, "-m", tiny_ckpt, "--labels", DEMO_SPECIES]
    code, _, verbose = cli(*args, "-o", tmp_path / "a.csv", "-v")
    assert code == 0, verbose
    assert "classified 1 image" in verbose
    # real detail: the resolved model and output, the options and the time each stage took
    assert "model: spec" in verbose and "arch biotrove-tiny" in verbose
    assert f"to {tmp_path / 'a.csv'}" in verbose and "image pass:" in verbose
    assert "classify: " in verbose and " s in all" in verbose
    code, _, quiet = cli(*args, "-o", tmp_path / "b.csv", "-q")
    assert code == 0 and quiet == ""
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    code, _, quiet = cli("-q", "presets", "-o", tmp_path / "p.csv")  # before it, as before
    assert code == 0 and quiet == ""


# -- item 18: the progress display stops before any result is printed ----------------------------
def test_the_results_table_is_printed_after_the_progress_bar(tmp_path, small_world, tiny_ckpt):
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in small_world["photos"][:6]:
        (photos / p.path.name).write_bytes(p.path.read_bytes())
    screen = _on_a_terminal(
        ["classify", photos, "-m", tiny_ckpt, "--labels", DEMO_SPECIES, "-k", "1"], columns=160
    )
    title = screen.index("species predictions")
    assert "classify" in screen[:title]  # the bar was drawn
    assert "classify" not in screen[title:]  # and never again once results were printed
    line_start = screen.rfind("\n", 0, title)
    before_title = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen[line_start + 1 : title])
    assert before_title.strip() == ""  # the title has a line of its own
