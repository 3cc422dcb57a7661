"""``biotrove shard``: real metadata + generated photos -> shards that webdataset/open_clip read."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biotrove_cli.core.data import shard as writer
from biotrove_cli.core.data.sample import sample_meta, taxon_from_meta
from biotrove_cli.core.data.shards import read_shard, read_sizes
from biotrove_cli.core.layout import SPLITS
from biotrove_cli.core.taxonomy.captions import TEXT_TYPES, build_caption

REPO = Path(__file__).resolve().parent.parent


# -- helpers ----------------------------------------------------------------------------------
def read_dataset(out: Path) -> dict[str, list[dict]]:
    """Every sample of every tar, per split, read with the project's own tar reader."""
    data: dict[str, list[dict]] = {}
    for split in SPLITS:
        d = out / split
        if not d.is_dir():
            continue
        for tar in sorted(d.glob("*.tar")):
            errors: list = []
            data.setdefault(split, []).extend(read_shard(tar, on_problem=errors.append))
            assert not errors
    return data


def wds_keys(out: Path, split: str) -> list[str]:
    """Keys of a split read back with stock webdataset (what open_clip uses)."""
    import webdataset as wds

    tars = sorted(str(p) for p in (out / split).glob("*.tar"))
    ds = wds.WebDataset(tars, shardshuffle=False).decode("pil")
    keys = []
    for sample in ds:
        assert "jpg" in sample and "txt" in sample and "json" in sample
        assert sample["jpg"].mode == "RGB"
        keys.append(sample["__key__"])
    return keys


def key_sets(out: Path) -> dict[str, list[str]]:
    return {
        split: sorted(s["__key__"] for s in samples) for split, samples in read_dataset(out).items()
    }


def run_args(meta, images, out, *extra):
    return ("shard", meta, "--images", images, "--out", out, *extra)


def _png(w: int, h: int) -> bytes:
    """A PNG whose header says w x h (the pixel data is a stub): a decompression-bomb probe."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def _biotrove_table(rows: list[tuple[str, object]]) -> pa.Table:
    """A BioTrove-schema table: rows of (photo_id, Taxon)."""
    from biotrove_cli.core.data.world import biotrove_table

    return biotrove_table((str(pid), t, "") for pid, t in rows)


def _arboretum_path() -> Path:
    return REPO / "tests" / "data" / "biotrove" / "arboretum_sample_chunk1.parquet"


@pytest.fixture(scope="session")
def arb(tmp_path_factory):
    """Real Arboretum metadata paired with generated photos named ``{photo_id}.jpg``."""
    from biotrove_cli.core.data.world import render_jpeg
    from biotrove_cli.core.taxonomy.readers import read_metadata

    path = _arboretum_path()
    root = tmp_path_factory.mktemp("arb")
    images = root / "images"
    images.mkdir()
    meta = read_metadata(path)
    for i, rec in enumerate(meta.records):
        p = images / f"{rec.photo_id}.jpg"
        if not p.exists():
            p.write_bytes(render_jpeg(rec.taxon, i, seed=3, size=(64, 48)))
    return {"metadata": path, "images": images, "records": meta.records}


# -- the happy path ---------------------------------------------------------------------------
def test_small_world_shards_read_back_everywhere(small_world, cli, tmp_path):
    out = tmp_path / "ds"
    code, stdout, stderr = cli(
        *run_args(small_world["metadata"], small_world["images"], out),
        "--val-fraction", "0.2", "--samples-per-shard", "8", "--workers", "0",
        "--image-size", "64", "--format", "json", "--summary", tmp_path / "summary.json",
    )  # fmt: skip
    assert code == 0, stderr
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["finalized"] is True
    rows = {r["split"]: r for r in json.loads(stdout)}
    assert rows["train"]["written"] == 24 and rows["val"]["written"] == 6
    assert rows["total"]["written"] == 30 and rows["total"]["failed"] == 0

    photos = {p.photo_id: p for p in small_world["photos"]}
    data = read_dataset(out)
    assert set(data) == {"train", "val"}
    all_keys = [s["__key__"] for samples in data.values() for s in samples]
    assert sorted(all_keys) == sorted(photos)  # every photo exactly once
    for split, samples in data.items():
        assert sorted(wds_keys(out, split)) == sorted(s["__key__"] for s in samples)
        sizes = read_sizes(out / split)
        per_tar = Counter(Path(s["__url__"]).name for s in samples)
        assert sizes == dict(per_tar)
        for tar in (out / split).glob("*.tar"):
            stats = json.loads(tar.with_suffix(".stats.json").read_text())
            assert stats["count"] == per_tar[tar.name] and stats["final"] is True
        for s in samples:
            meta = sample_meta(s)
            taxon = photos[s["__key__"]].taxon
            assert taxon_from_meta(meta) == taxon
            assert meta["key"] == s["__key__"] and meta["photo_id"] == s["__key__"]
            assert meta["species_key"] == taxon.species_key
            assert meta["lineage"] == taxon.lineage_dict()
            assert meta["split"] == split
            assert meta["original_size"] == [160, 120] and meta["size"] == [64, 48]
            assert Path(meta["source"]).name == f"{s['__key__']}.jpg"
            assert s["txt"].decode() == build_caption(taxon, "taxon_com")
            for t in TEXT_TYPES:
                assert s[f"{t}.txt"].decode() == build_caption(taxon, t)
            from PIL import Image

            assert Image.open(io.BytesIO(s["jpg"])).size == (64, 48)

    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    bank = LabelBank.load(out)
    assert {t.species_key for t in bank.taxa} == {t.species_key for t in small_world["taxa"]}
    assert sum(c.get("train", 0) for c in bank.counts.values()) == 24
    assert sum(c.get("val", 0) for c in bank.counts.values()) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == 30 and manifest["biotrove_version"]
    assert manifest["args"]["val_fraction"] == 0.2
    assert not list(out.rglob(".*.tmp"))

    code, table, _ = cli("info", out, "--format", "table")
    assert code == 0
    assert "split train" in table and "complete" in table and "sizes.json samples" in table
    code, csv_text, _ = cli("info", out / "train", "--format", "csv")
    assert code == 0 and "split train" in csv_text and "split val" not in csv_text


def test_real_arboretum_selection_and_passthrough(arb, cli, tmp_path):
    import pandas as pd

    out = tmp_path / "arb"
    code, stdout, stderr = cli(
        *run_args(arb["metadata"], arb["images"], out),
        "--min-per-species", "3", "--max-per-species", "10", "--val-fraction", "0.1",
        "--samples-per-shard", "50", "--resize-mode", "none", "--workers", "2",
        "--captions", "sci,com", "--format", "json",
    )  # fmt: skip
    assert code == 0, stderr
    # the expected selection, computed independently with pandas
    df = pd.read_parquet(arb["metadata"]).drop_duplicates("photo_id")
    assert len(df) == 872
    df["sp"] = df["genus"] + " " + df["species"]
    n = df.groupby("sp")["photo_id"].transform("size")
    rare = df[n < 3]
    seen = df[n >= 3]
    seen_counts = seen.groupby("sp").size().clip(upper=10)
    n_seen = int(seen_counts.sum())
    n_val = round(n_seen * 0.1)

    keys = key_sets(out)
    assert keys["unseen"] == sorted(str(p) for p in rare["photo_id"])
    assert len(keys["val"]) == n_val and len(keys["train"]) == n_seen - n_val
    everything = keys["train"] + keys["val"] + keys["unseen"]
    assert len(everything) == len(set(everything))
    data = read_dataset(out)
    per_species = Counter(
        sample_meta(s)["species_key"] for sp in ("train", "val") for s in data[sp]
    )
    assert max(per_species.values()) == 10
    assert len(per_species) == len(seen_counts)
    # pass-through: the stored JPEG is the source file, byte for byte; only chosen captions
    for s in data["train"][:20]:
        assert s["jpg"] == (arb["images"] / f"{s['__key__']}.jpg").read_bytes()
        assert {k for k in s if k.endswith(".txt")} == {"sci.txt", "com.txt"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"]["duplicates"] == 2
    assert manifest["selection"]["unseen_species"] == int((rare.groupby("sp").size() > 0).sum())
    assert manifest["selection"]["capped"] == int((seen.groupby("sp").size() - seen_counts).sum())
    assert json.loads(stdout)[0]["split"] == "train"  # records only: the selection is above

    # --categories: any rank; only those rows
    out2 = tmp_path / "scorp"
    code, _, stderr = cli(
        *run_args(arb["metadata"], arb["images"], out2),
        "--categories", "scorpiones,Opiliones", "--workers", "0", "--resize-mode", "none",
    )  # fmt: skip
    assert code == 0, stderr
    want = df[df["order"].isin(["Scorpiones", "Opiliones"])]
    assert key_sets(out2)["train"] == sorted(str(p) for p in want["photo_id"])


def test_life_stages_metadata_with_rooted_paths(lifestages, cli, tmp_path):
    """Life-Stages rows name their photo as ``/lifestages/ID.jpg``: found under --images."""
    from biotrove_cli.core.data.world import render_jpeg
    from biotrove_cli.core.taxonomy.readers import read_metadata

    meta = read_metadata(lifestages)
    images = tmp_path / "root"
    for i, rec in enumerate(meta.records[:40]):
        dest = images / rec.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(render_jpeg(rec.taxon, i, size=(48, 36)))
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        *run_args(lifestages, images, out), "--workers", "0", "--captions", "none",
        "--samples-per-shard", "200", "--format", "json",
    )  # fmt: skip
    assert code == 0, stderr
    total = json.loads(stdout)[0]
    assert total["planned"] == len(meta.records)
    assert total["written"] == 40 and total["failures"] == f"missing={len(meta.records) - 40}"
    for s in read_dataset(out)["train"]:
        assert Path(sample_meta(s)["source"]).is_file()
        assert {k for k in s if not k.startswith("__")} == {"jpg", "txt", "json"}


def test_same_plan_from_any_row_order(arb, tmp_path):
    """The plan depends on the rows, not on their order or the file they came from."""
    table = pq.read_table(arb["metadata"])
    shuffled = table.take(list(reversed(range(table.num_rows))))
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    pq.write_table(table, a)
    shuffled.to_pandas().to_csv(b, index=False)
    plans = [
        writer.make_plan(
            writer.ShardConfig(metadata=[p], images=arb["images"], out=tmp_path / "o",
                               val_fraction=0.2, min_per_species=2, seed=5)
        )
        for p in (a, b)
    ]  # fmt: skip
    assert plans[0].fingerprint == plans[1].fingerprint
    assert [[s.key for s in u.samples] for u in plans[0].units] == [
        [s.key for s in u.samples] for u in plans[1].units
    ]
    other = writer.make_plan(
        writer.ShardConfig(metadata=[a], images=arb["images"], out=tmp_path / "o",
                           val_fraction=0.2, min_per_species=2, seed=6)
    )  # fmt: skip
    assert other.fingerprint != plans[0].fingerprint


# -- faults -----------------------------------------------------------------------------------
@pytest.fixture
def broken_world(small_world, tmp_path):
    """Six good photos and one of each kind of bad one, all named in BioTrove metadata."""
    import numpy as np
    from PIL import Image

    images = tmp_path / "broken"
    images.mkdir()
    taxa = small_world["taxa"]
    good = sorted(small_world["photos"], key=lambda p: int(p.photo_id))[:6]
    rows = []
    for p in good:
        (images / f"{p.photo_id}.jpg").write_bytes(p.path.read_bytes())
        rows.append((p.photo_id, p.taxon))
    raw = good[0].path.read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.new("CMYK", (100, 80), (0, 60, 120, 10)).save(buf, "JPEG")
    cmyk = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray((np.arange(80 * 100).reshape(80, 100) * 8).astype(np.uint16)).save(buf, "PNG")
    png16 = buf.getvalue()
    bad = {
        "b_corrupt": ("jpg", raw[:200] + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()),
        "b_truncated": ("jpg", raw[: len(raw) // 2]),
        "b_empty": ("jpg", b""),
        "b_notimage": ("jpg", b"<html>not a photo</html>"),
        "b_huge": ("png", _png(30000, 30000)),
        "b_cmyk": ("jpg", cmyk),
        "b_png16": ("png", png16),
    }
    for pid, (ext, data) in bad.items():
        (images / f"{pid}.{ext}").write_bytes(data)
        rows.append((pid, taxa[0]))
    rows.append(("b_missing", taxa[1]))
    meta = tmp_path / "broken.parquet"
    pq.write_table(_biotrove_table(rows), meta)
    return {"images": images, "metadata": meta, "good": [p.photo_id for p in good]}


EXPECTED_FAILURES = {
    "corrupt": 1,
    "truncated": 1,
    "empty": 1,
    "not_image": 1,
    "too_large": 1,
    "missing": 1,
}


@pytest.mark.parametrize("mode", ["keep_ratio_largest", "none"])
def test_bad_images_are_counted_not_fatal(broken_world, cli, tmp_path, mode):
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        *run_args(broken_world["metadata"], broken_world["images"], out),
        "--samples-per-shard", "5", "--workers", "0", "--resize-mode", mode,
        "--image-size", "64", "--format", "json",
    )  # fmt: skip
    assert code == 0, stderr
    total = json.loads(stdout)[0]
    assert total["written"] == 8 and total["failed"] == 6  # 6 good + CMYK + 16-bit
    for reason, n in EXPECTED_FAILURES.items():
        assert f"{reason}={n}" in total["failures"]
    assert "CMYK=1" in total["converted"] and "I;16=1" in total["converted"]
    stats = [json.loads(p.read_text()) for p in (out / "train").glob("*.stats.json")]
    assert sum((Counter(s["failures"]) for s in stats), Counter()) == Counter(EXPECTED_FAILURES)
    named = {f["key"]: f["reason"] for s in stats for f in s["failed_samples"]}
    assert named["b_truncated"] == "truncated" and named["b_missing"] == "missing"
    assert "bad or missing images were skipped" in stderr
    keys = key_sets(out)["train"]
    assert keys == sorted([*broken_world["good"], "b_cmyk", "b_png16"])
    from PIL import Image

    for s in read_dataset(out)["train"]:
        assert Image.open(io.BytesIO(s["jpg"])).mode == "RGB"  # CMYK and 16-bit converted
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"] == EXPECTED_FAILURES


def test_strict_stops_at_the_first_bad_image(broken_world, cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        *run_args(broken_world["metadata"], broken_world["images"], out),
        "--samples-per-shard", "1", "--workers", "0", "--strict",
    )  # fmt: skip
    assert code == 1
    assert "--strict: bad sample b_" in stderr and "Traceback" not in stderr
    assert stdout == ""
    assert not (out / "manifest.json").exists()
    # what was written is whole: every tar has its stats, and the bad sample's shard is absent
    for tar in (out / "train").glob("*.tar"):
        assert tar.with_suffix(".stats.json").is_file()
        assert all(not s["__key__"].startswith("b_") or s["__key__"] in ("b_cmyk", "b_png16")
                   for s in read_shard(tar))  # fmt: skip
    # without --strict the same folder resumes and completes
    code, _, stderr = cli(
        *run_args(broken_world["metadata"], broken_world["images"], out),
        "--samples-per-shard", "1", "--workers", "0",
    )  # fmt: skip
    assert code == 0, stderr
    assert len(key_sets(out)["train"]) == 8


def test_process_image_modes(small_world):
    from PIL import Image

    src = small_world["photos"][0].path
    data = src.read_bytes()
    same, orig, size, note = writer.process_image(data, str(src), "none", 64, 90)
    assert same == data and orig == size == (160, 120) and note == ""
    out, _, size, _ = writer.process_image(data, str(src), "center_crop", 48, 90)
    assert size == (48, 48) and Image.open(io.BytesIO(out)).size == (48, 48)
    out, _, size, _ = writer.process_image(data, str(src), "keep", 48, 90)
    assert size == (160, 120)
    out, _, size, _ = writer.process_image(data, str(src), "keep_ratio_largest", 64, 90)
    assert size == (64, 48)
    small, _, size, _ = writer.process_image(data, str(src), "keep_ratio_largest", 400, 90)
    assert size == (160, 120)  # never upscaled
    # an EXIF-rotated JPEG is turned upright even in pass-through mode
    img = Image.open(src)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    out, orig, size, note = writer.process_image(buf.getvalue(), "r", "none", 64, 90)
    assert note == "exif_rotated" and orig == (160, 120) and size == (120, 160)


# -- resume, kill -9, Ctrl-C ------------------------------------------------------------------
def _spawn_shard(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # started as from a shell, with Ctrl-C's default disposition: an ignored SIGINT is
    # inherited, and something earlier in the full suite leaves this process ignoring it
    return subprocess.Popen(
        [sys.executable, "-m", "biotrove_cli", "shard", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_stats(out: Path, proc: subprocess.Popen, at_least: int, may_end: bool = False) -> int:
    """How many shards are complete once ``at_least`` are; -1 if the run ended first and
    ``may_end`` (else the test fails)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        n = len(list(out.glob("*/*.stats.json"))) if out.is_dir() else 0
        if n >= at_least:
            return n
        if proc.poll() is not None:
            if may_end:
                return -1
            pytest.fail(f"the run ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.005)
    pytest.fail("no shard was completed in time")


@pytest.mark.slow
def test_interrupt_and_kill9_then_resume_gives_exact_sample_set(arb, cli, tmp_path):
    out = tmp_path / "resumed"
    args = [arb["metadata"], "--images", arb["images"], "--out", out, "--val-fraction", "0.1",
            "--samples-per-shard", "8", "--image-size", "32"]  # fmt: skip
    # Ctrl-C: exit 130 and a message that rerunning resumes. The whole job takes about 2 s:
    # a run that completed before its Ctrl-C arrived (this process kept off a loaded CPU) is
    # started again, at most 3 times
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        proc = _spawn_shard([*args, "--workers", "0"])
        if _wait_for_stats(out, proc, 1, may_end=True) >= 0:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        if not (proc.returncode == 0 and "dataset complete" in err):
            break
    assert proc.returncode == 130, err
    assert "run the same command again" in err and "Traceback" not in err
    # kill -9 of the parent of two writer processes, mid-run
    proc = _spawn_shard([*args, "--workers", "2"])
    n_before = _wait_for_stats(out, proc, len(list(out.glob("*/*.stats.json"))) + 3)
    proc.kill()
    proc.wait(timeout=30)
    plan = json.loads((out / "plan.json").read_text())
    assert n_before < len(plan["units"]), "the run must be cut short"
    assert not (out / "manifest.json").exists()
    # rerun the same command: completes, keeps what was complete
    code, _, stderr = cli("shard", *args, "--workers", "0")
    assert code == 0, stderr
    assert "kept from an earlier run" in stderr
    expected = writer.make_plan(
        writer.ShardConfig(metadata=[arb["metadata"]], images=arb["images"], out=out,
                           val_fraction=0.1, samples_per_shard=8, image_size=32)
    )  # fmt: skip
    want = {sp: sorted(s.key for u in expected.units if u.split == sp for s in u.samples)
            for sp in ("train", "val")}  # fmt: skip
    got = key_sets(out)
    assert got == want
    assert sum(len(v) for v in got.values()) == 872  # 874 rows minus 2 duplicate photo ids
    assert not list(out.rglob(".*.tmp"))
    for split in got:
        assert sum(read_sizes(out / split).values()) == len(got[split])


def _writer_children(pid: int) -> list[int]:
    """Pids of the spawn()ed writer processes of ``pid`` (not multiprocessing's tracker)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    if not path.exists():
        pytest.skip("needs Linux /proc")
    kids = []
    for child in path.read_text().split():
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            kids.append(int(child))
    return kids


@pytest.mark.slow
def test_a_dead_writer_process_fails_clearly_and_resumes(arb, cli, tmp_path):
    out = tmp_path / "dead"
    args = [arb["metadata"], "--images", arb["images"], "--out", out, "--samples-per-shard", "8",
            "--image-size", "32", "--resize-mode", "keep"]  # fmt: skip
    proc = _spawn_shard([*args, "--workers", "2"])
    _wait_for_stats(out, proc, 2)
    kids = _writer_children(proc.pid)
    assert kids
    os.kill(kids[0], signal.SIGKILL)  # e.g. the OOM killer
    _, err = proc.communicate(timeout=120)  # must not hang on the lost unit
    assert proc.returncode == 1, err
    assert "a writer process died" in err and "run the same command again" in err
    code, _, stderr = cli("shard", *args, "--workers", "0")
    assert code == 0, stderr
    assert sum(len(v) for v in key_sets(out).values()) == 872


def test_tar_writer_matches_tarfile_byte_for_byte():
    import tarfile

    members = [("k.jpg", b"abc"), ("k.taxonTag_com.txt", b"x" * 700), ("n" * 120 + ".txt", b"q")]
    ours = io.BytesIO()
    tar = writer.TarOut(ours)
    tar.add_many(members)
    tar.close()
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    assert ours.getvalue() == ref.getvalue()


# -- several machines -------------------------------------------------------------------------
def test_parts_then_finalize_equal_a_single_run(small_world, cli, tmp_path):
    base = [small_world["metadata"], "--images", small_world["images"], "--val-fraction", "0.25",
            "--samples-per-shard", "4", "--workers", "0", "--image-size", "32"]  # fmt: skip
    single, split_run = tmp_path / "single", tmp_path / "parts"
    assert cli("shard", *base, "--out", single)[0] == 0
    code, _, stderr = cli("shard", *base, "--out", split_run, "--part", "1/2")
    assert code == 0, stderr
    assert "--finalize" in stderr and not (split_run / "manifest.json").exists()
    code, table, _ = cli("info", split_run, "--format", "csv")
    assert code == 0 and "in progress" in table
    code, _, stderr = cli("shard", "--finalize", split_run)
    assert code == 1 and "not written yet" in stderr and "--part 2/2" in stderr
    code, _, stderr = cli("shard", *base, "--out", split_run, "--part", "2/2")
    assert code == 0, stderr
    assert "dataset complete" in stderr  # the part that completes the plan finalizes
    assert key_sets(split_run) == key_sets(single)
    for split in ("train", "val"):
        assert read_sizes(split_run / split) == read_sizes(single / split)
        # identical inputs give byte-identical shards, whichever machine wrote them
        for tar in (single / split).glob("*.tar"):
            assert (
                hashlib.sha256(tar.read_bytes()).digest()
                == hashlib.sha256((split_run / split / tar.name).read_bytes()).digest()
            )
    summary = split_run.parent / "summary.json"
    code, _, _ = cli("shard", "--finalize", split_run, "--format", "json", "--summary", summary)
    assert code == 0 and json.loads(summary.read_text())["finalized"] is True
    writers = {
        json.loads(p.read_text())["writer"]["part"] for p in split_run.glob("*/*.stats.json")
    }
    assert writers == {"1/2", "2/2"}


def test_max_shard_bytes_starts_overflow_tars(small_world, cli, tmp_path):
    out = tmp_path / "out"
    args = [*run_args(small_world["metadata"], small_world["images"], out),
            "--samples-per-shard", "30", "--max-shard-bytes", "60KB", "--workers", "0"]  # fmt: skip
    code, _, stderr = cli(*args)
    assert code == 0, stderr
    tars = sorted((out / "train").glob("*.tar"))
    assert len(tars) > 2 and tars[0].name == "shard-000000.tar"
    assert tars[1].name == "shard-000000_1.tar"
    for tar in tars:
        n = len(list(read_shard(tar)))
        assert tar.stat().st_size <= 60_000 or n == 1
    sizes = read_sizes(out / "train")
    assert set(sizes) == {t.name for t in tars} and sum(sizes.values()) == 30
    stats = sorted(
        (json.loads(t.with_suffix(".stats.json").read_text()) for t in tars),
        key=lambda st: st["part"],
    )
    assert [st["part"] for st in stats] == list(range(len(tars)))
    assert [st["final"] for st in stats] == [False] * (len(tars) - 1) + [True]
    # a rerun keeps them all
    mtimes = {t.name: t.stat().st_mtime_ns for t in tars}
    code, _, stderr = cli(*args)
    assert code == 0 and "0 shards written, 1 kept" in stderr
    assert {t.name: t.stat().st_mtime_ns for t in sorted((out / "train").glob("*.tar"))} == mtimes


def test_keys_are_sanitised_and_unique(small_world, cli, tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    src = small_world["photos"][0].path.read_bytes()
    taxon = small_world["taxa"][0]
    ids = ["a.b", "a_b", "../x", "x/y", "a.b.c", "."]
    for i in range(len(ids)):
        (images / f"f{i}.jpg").write_bytes(src)
    table = _biotrove_table([(pid, taxon) for pid in ids])
    table = table.append_column("path", pa.array([f"f{i}.jpg" for i in range(len(ids))]))
    meta = tmp_path / "meta.csv"
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, meta)
    out = tmp_path / "out"
    code, _, stderr = cli(*run_args(meta, images, out), "--workers", "0")
    assert code == 0, stderr
    keys = key_sets(out)["train"]
    assert len(keys) == len(set(keys)) == len(ids)
    for k in keys:
        assert k and "." not in k and "/" not in k
    assert sorted(wds_keys(out, "train")) == keys
    assert sorted(sample_meta(s)["photo_id"] for s in read_dataset(out)["train"]) == sorted(ids)
    assert writer.sanitize_key("../../etc/passwd") == "etc_passwd"
    assert len(writer.sanitize_key("x" * 500)) <= writer.MAX_KEY


def test_sample_format_round_trips():
    """What the writer puts in a sample, the readers (train, eval, info) get back."""
    from webdataset.tariterators import base_plus_ext

    from biotrove_cli.core.data import sample
    from biotrove_cli.core.taxonomy.lineage import Taxon

    taxon = Taxon.from_parts(
        "Animalia", "Chordata", "Aves", "Passeriformes", "Turdidae", "Turdus", "merula",
        common_name="Eurasian blackbird",
    )  # fmt: skip
    captions = sample.caption_members(taxon, "taxon_com", ("sci", "com"))
    meta = sample.make_meta(
        "k1", "1", sample.taxon_fields(taxon), "train", "/p/1.jpg", "", (4, 3), (4, 3)
    )
    members = sample.sample_members("k1", b"JPEG", captions, meta)
    names = [name for name, _ in members]
    assert names == ["k1.jpg", "k1.txt", "k1.sci.txt", "k1.com.txt", "k1.json"]
    read = {"__key__": "k1", **{base_plus_ext(name)[1]: data for name, data in members}}
    assert sample.taxon_from_meta(sample.sample_meta(read)) == taxon
    assert sample.sample_image_bytes(read) == b"JPEG"
    assert sample.caption_of(read, "txt") == build_caption(taxon, "taxon_com")
    assert sample.caption_of(read, "sci") == build_caption(taxon, "sci")
    assert sample.caption_of(read, "taxon") is None


def test_resize_mode_choices_are_the_cores():
    from biotrove_cli.cli.shard import ResizeMode

    assert [m.value for m in ResizeMode] == list(writer.RESIZE_MODES)


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_fails_clearly_before_any_work(small_world, cli, tmp_path):
    meta, images = small_world["metadata"], small_world["images"]
    # missing columns (BioTrove schema without lineage)
    bad = tmp_path / "bad.csv"
    bad.write_text("photo_id,scientificName,kingdom\n1,Apis mellifera,Animalia\n")
    out = tmp_path / "o1"
    code, _, err = cli(*run_args(bad, images, out))
    assert code == 1 and "missing column(s)" in err and "phylum" in err and "Hint:" in err
    assert not out.exists()
    # an empty selection
    code, _, err = cli(*run_args(meta, images, out), "--categories", "Aves")
    assert code == 1 and "empty selection" in err and not out.exists()
    # images folder missing, or holding none of the photos
    code, _, err = cli(*run_args(meta, tmp_path / "nope", out))
    assert code == 1 and "--images" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(*run_args(meta, tmp_path / "empty", out), "--workers", "0")
    assert code == 1 and "none of the 30 images" in err and "--download" in err
    assert not list(out.glob("*/*.tar"))
    # an output folder holding another dataset is refused, untouched
    good = tmp_path / "good"
    assert cli(*run_args(meta, images, good), "--workers", "0")[0] == 0
    before = {p: p.stat().st_mtime_ns for p in good.rglob("*")}
    code, _, err = cli(*run_args(meta, images, good), "--workers", "0", "--seed", "7")
    assert code == 1 and "already holds another dataset" in err and "seed" in err
    assert {p: p.stat().st_mtime_ns for p in good.rglob("*")} == before
    # a folder of other things
    other = tmp_path / "other"
    other.mkdir()
    (other / "train").mkdir()
    (other / "train" / "shard-000000.tar").write_bytes(b"someone else's shard")
    code, _, err = cli(*run_args(meta, images, other))
    assert code == 1 and "not empty" in err
    assert (other / "train" / "shard-000000.tar").read_bytes() == b"someone else's shard"
    # usage errors: exit 2
    assert cli(*run_args(meta, images, out), "--part", "3/2")[0] == 2
    assert cli(*run_args(meta, images, out), "--max-shard-bytes", "lots")[0] == 2
    assert cli(*run_args(meta, images, out), "--captions", "sci,nope")[0] == 2
    assert cli(*run_args(meta, images, out), "--resize-mode", "squash")[0] == 2
    assert cli("shard", meta, "--out", out)[0] == 2
    assert cli("shard", meta, "--finalize", good)[0] == 2
    code, _, err = cli("shard", "--finalize", other)
    assert code == 1 and "no plan.json" in err
    assert writer.parse_bytes("1GiB") == 2**30 and writer.parse_bytes("500MB") == 500_000_000


# -- stock open_clip trains on the shards -----------------------------------------------------
@pytest.mark.slow
def test_stock_open_clip_trains_on_the_shards(small_world, cli, tmp_path):
    out = tmp_path / "ds"
    code, _, err = cli(
        *run_args(small_world["metadata"], small_world["images"], out),
        "--samples-per-shard", "10", "--image-size", "64", "--workers", "0",
    )  # fmt: skip
    assert code == 0, err
    n = len(list((out / "train").glob("*.tar")))
    pattern = f"{out}/train/shard-{{000000..{n - 1:06d}}}.tar"
    script = (
        "import sys, open_clip\n"
        f"open_clip.add_model_config({str(REPO / 'biotrove_cli/core/models/configs')!r})\n"
        "from open_clip_train.main import main\n"
        "main(sys.argv[1:])\n"
    )
    logs = tmp_path / "logs"
    args = ["--model", "biotrove-tiny", "--dataset-type", "webdataset", "--train-data", pattern,
            "--batch-size", "4", "--epochs", "1", "--workers", "1", "--logs", str(logs),
            "--name", "t", "--lr", "1e-4", "--warmup", "1", "--precision", "fp32",
            "--save-frequency", "1", "--log-every-n-steps", "1", "--seed", "0"]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    log = (logs / "t" / "out.log").read_text()
    assert "Train Epoch: 0" in log
    assert (logs / "t" / "checkpoints" / "epoch_1.pt").is_file()
