"""``biotrove classify``: folders of photos in every format, stdin, streaming CSV/JSONL, top-k
probabilities and roll-up, --min-confidence, label restrictions, resume, broken files."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from biotrove_cli.core.evaluation.classify_records import COLUMNS, scan_output
from tests.conftest import DEMO_SPECIES

LINEAGE = ("kingdom", "phylum", "class", "order", "family", "genus", "species")
FORMATS = [
    ("a.jpg", "JPEG"),
    ("b.JPEG", "JPEG"),
    ("c.png", "PNG"),
    ("d.WebP", "WEBP"),
    ("e.bmp", "BMP"),
    ("f.TIFF", "TIFF"),
]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_model):
    """The seeded tiny model as a checkpoint file: every load gives the same weights."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), path)
    return path


@pytest.fixture
def photos(tmp_path, small_world):
    """Six photos, one per format (mixed-case suffixes), a text file, and a subfolder photo."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for (name, fmt), p in zip(FORMATS, small_world["photos"][::5], strict=True):
        with Image.open(p.path) as im:
            im.convert("RGB").save(folder / name, format=fmt)
    (folder / "notes.txt").write_text("field notes, not a photo")
    (folder / "sub").mkdir()
    shutil.copy(small_world["photos"][1].path, folder / "sub" / "g.jpg")
    return folder


def base(ckpt, *extra):
    return ["classify", "-m", ckpt, "--labels", DEMO_SPECIES, "--workers", "0", *extra]


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- formats, outputs, streams --------------------------------------------------------------------
def test_every_format_is_classified_and_the_csv_parses(cli, photos, tiny_ckpt):
    code, out, err = cli(*base(tiny_ckpt, photos, "-k", "3", "--format", "csv"))
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert list(df.columns) == list(COLUMNS)
    assert sorted(Path(p).name for p in df["path"].unique()) == sorted(n for n, _ in FORMATS)
    assert len(df) == 6 * 3 and set(df["prediction"]) == {1, 2, 3}
    assert (df["error"] == "").all() and (df["rank"] == "species").all()
    for _, rows in df.groupby("path"):
        assert rows["score"].is_monotonic_decreasing
    # lineage columns are filled, the species column is the binomial
    row = df.iloc[0]
    assert row["species"].startswith(row["genus"] + " ") and row["kingdom"]
    assert "classified 6 images" in err
    # --recursive adds the subfolder; decoding in worker processes gives the same rows
    code, out2, err = cli(
        *base(tiny_ckpt, photos, "-k", "3", "--format", "csv", "-r"), "--workers", "2"
    )
    df2 = pd.read_csv(io.StringIO(out2), keep_default_na=False)
    assert code == 0 and df2["path"].nunique() == 7
    assert df2[df2["path"].isin(df["path"])].reset_index(drop=True).equals(df)


def test_stdin_paths_and_globs(cli, photos, tiny_ckpt, monkeypatch):
    listing = f"{photos / 'a.jpg'}\n\n{photos / 'c.png'}\n{photos / 'gone.jpg'}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(listing))
    code, out, err = cli(*base(tiny_ckpt, "-", "-k", "1", "--format", "jsonl"))
    assert code == 0, err
    recs = jsonl(out)
    assert [Path(r["path"]).name for r in recs] == ["a.jpg", "c.png", "gone.jpg"]
    assert recs[2]["error"] == "missing" and recs[2]["score"] is None
    assert "1 unreadable (missing 1)" in err
    code, out, err = cli(*base(tiny_ckpt, str(photos / "*.[jJ]*"), "-k", "1", "--format", "csv"))
    assert code == 0, err
    names = sorted(Path(p).name for p in pd.read_csv(io.StringIO(out))["path"])
    assert names == ["a.jpg", "b.JPEG"]


@pytest.mark.slow
def test_find_pipe_classify_jsonl_pipe_jq(photos, tiny_ckpt, tmp_path):
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    cmd = (
        f"find {photos} -iname '*.jp*g' | sort | {sys.executable} -m biotrove_cli classify - "
        f"-m {tiny_ckpt} --labels {DEMO_SPECIES} --workers 0 -k 2 --format jsonl "
        "| jq -r '[.path, .prediction, .name, .score] | @tsv'"
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [Path(r[0]).name for r in rows] == [
        "a.jpg",
        "a.jpg",
        "b.JPEG",
        "b.JPEG",
        "g.jpg",
        "g.jpg",
    ]
    assert [r[1] for r in rows] == ["1", "2"] * 3
    assert all(0 < float(r[3]) <= 1 for r in rows)


def test_parquet_file_and_table_output(cli, photos, tiny_ckpt, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    out = tmp_path / "preds.parquet"
    code, stdout, err = cli(*base(tiny_ckpt, photos, "-k", "2", "-o", out))
    assert code == 0, err
    assert stdout == ""
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS) and table.num_rows == 12
    monkeypatch.chdir(photos)
    code, stdout, err = cli(*base(tiny_ckpt, "a.jpg", "c.png", "-k", "2", "--format", "table"))
    assert code == 0, err
    assert "a.jpg" in stdout and "c.png" in stdout and "species predictions" in stdout
    assert stdout.count("a.jpg") == 2


def test_exif_orientation_is_applied(cli, small_world, tiny_ckpt, tmp_path):
    from PIL import Image

    with Image.open(small_world["photos"][0].path) as im:
        upright = im.convert("RGB")
    upright.save(tmp_path / "upright.png")
    # stored rotated, with EXIF orientation 6 ("rotate 90 CW to display"): the same photo
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    code, out, err = cli(
        *base(
            tiny_ckpt,
            tmp_path / "upright.png",
            tmp_path / "rotated.png",
            "-k",
            "3",
            "--format",
            "jsonl",
        )
    )
    assert code == 0, err
    recs = jsonl(out)
    a = [(r["name"], r["score"]) for r in recs[:3]]
    b = [(r["name"], r["score"]) for r in recs[3:]]
    assert a == b


# -- probabilities --------------------------------------------------------------------------------
def _species_probs(cli, ckpt, paths) -> dict[str, list[dict]]:
    code, out, err = cli(*base(ckpt, *paths, "-k", "1000", "--format", "jsonl"))
    assert code == 0, err
    by_path = defaultdict(list)
    for r in jsonl(out):
        by_path[r["path"]].append(r)
    return by_path


def test_topk_is_sorted_sums_to_one_and_rollup_sums_species(cli, photos, tiny_ckpt):
    paths = [photos / n for n, _ in FORMATS[:3]]
    species = _species_probs(cli, tiny_ckpt, paths)
    for rows in species.values():
        scores = [r["score"] for r in rows]
        assert len(rows) == 33  # every species of the demo bank, -k capped at the bank
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    code, out, err = cli(
        *base(tiny_ckpt, *paths, "--rank", "genus", "-k", "1000", "--format", "jsonl")
    )
    assert code == 0, err
    genus = defaultdict(dict)
    for r in jsonl(out):
        assert r["rank"] == "genus" and r["species"] == "" and r["common_name"] == ""
        genus[r["path"]][tuple(r[c] for c in LINEAGE[:6])] = r["score"]
    for path, rows in species.items():
        summed = defaultdict(float)
        for r in rows:
            summed[tuple(r[c] for c in LINEAGE[:6])] += r["score"]
        assert genus[path].keys() == summed.keys()
        for key, value in summed.items():
            assert genus[path][key] == pytest.approx(value, abs=1e-4)
    # a top-k cut sums to at most 1
    code, out, _ = cli(*base(tiny_ckpt, *paths, "-k", "5", "--format", "jsonl"))
    totals = defaultdict(float)
    for r in jsonl(out):
        totals[r["path"]] += r["score"]
    assert all(0 < t <= 1 + 1e-6 for t in totals.values())


def test_min_confidence_picks_the_deepest_confident_rank(cli, photos, tiny_ckpt):
    paths = [photos / n for n, _ in FORMATS]
    species = _species_probs(cli, tiny_ckpt, paths)
    threshold = 0.3
    code, out, err = cli(
        *base(tiny_ckpt, *paths, "--min-confidence", str(threshold), "--format", "jsonl")
    )
    assert code == 0, err
    got = {r["path"]: r for r in jsonl(out)}
    assert len(got) == len(paths)
    checked = 0
    for path, rows in species.items():
        expected: tuple[str, str | None] | None = ("none", None)
        for depth in range(7, 0, -1):
            summed = defaultdict(float)
            for r in rows:
                summed[tuple(r[c] for c in LINEAGE[:depth])] += r["score"]
            key, best = max(summed.items(), key=lambda kv: kv[1])
            if abs(best - threshold) < 1e-3:
                expected = None  # too close to call from rounded scores
                break
            if best >= threshold:
                expected = (LINEAGE[depth - 1], key[-1])
                break
        if expected is None:
            continue
        checked += 1
        assert got[path]["rank"] == expected[0]
        if expected[1] is not None:
            assert got[path][expected[0]] == expected[1]
            assert got[path]["score"] >= threshold
            assert got[path]["name"] == expected[1]
    assert checked >= 4


def test_within_and_checklist_renormalise_over_the_subset(cli, photos, tiny_ckpt, tmp_path):
    path = photos / "a.jpg"
    full = {r["name"]: r for r in _species_probs(cli, tiny_ckpt, [path])[str(path)]}
    code, out, err = cli(
        *base(tiny_ckpt, path, "--within", "Aves", "-k", "100", "--format", "jsonl")
    )
    assert code == 0, err
    sub = jsonl(out)
    assert sub and all(r["class"] == "Aves" for r in sub)
    birds = [n for n, r in full.items() if r["class"] == "Aves"]
    assert sorted(r["name"] for r in sub) == sorted(birds)
    total = sum(full[n]["score"] for n in birds)
    for r in sub:
        assert r["score"] == pytest.approx(full[r["name"]]["score"] / total, rel=2e-3, abs=1e-5)
    checklist = tmp_path / "checklist.txt"
    checklist.write_text("# my garden\nQuercus alba\nSturnus vulgaris\nNotin thebank\n")
    code, out, err = cli(*base(tiny_ckpt, path, "--checklist", checklist, "--format", "jsonl"))
    assert code == 0, err
    assert sorted(r["name"] for r in jsonl(out)) == ["Quercus alba", "Sturnus vulgaris"]


def test_custom_labels_from_a_names_list(cli, photos, tiny_ckpt, tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("a red fox\na barn owl\n# comment\na white oak\n")
    args = ["classify", "-m", tiny_ckpt, "--labels", names, "--workers", "0", photos / "a.jpg"]
    code, out, err = cli(*args, "--format", "jsonl")
    assert code == 0, err
    recs = jsonl(out)
    assert [r["rank"] for r in recs] == ["label"] * 3
    assert sorted(r["name"] for r in recs) == ["a barn owl", "a red fox", "a white oak"]
    assert sum(r["score"] for r in recs) == pytest.approx(1.0, abs=1e-4)
    code, _, err = cli(*args, "--rank", "genus")
    assert code == 2 and "custom labels have no ranks" in err


def test_class_texts_come_from_the_cache_the_second_time(cli, photos, tiny_ckpt):
    args = base(tiny_ckpt, photos / "a.jpg", "--format", "csv")
    _, _, first = cli(*args)
    code, _, second = cli(*args)
    assert code == 0
    assert "class texts encoded" in first and "class texts from the cache" in second


# -- resume ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_interrupted_run_resumes_with_each_image_once(
    cli, photos, tiny_ckpt, tmp_path, monkeypatch, fmt
):
    from biotrove_cli.core.evaluation import classify as core

    def read(path):
        if fmt == "csv":
            return pd.read_csv(path, keep_default_na=False).to_dict("records")
        return jsonl(path.read_text())

    args = base(tiny_ckpt, photos, "-r", "-k", "2", "--batch-size", "2")
    reference = tmp_path / f"ref.{fmt}"
    assert cli(*args, "-o", reference)[0] == 0
    out = tmp_path / f"out.{fmt}"
    real = core.ClassifyJob._predict
    calls = {"n": 0}

    def flaky(self, feats, paths):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, feats, paths)

    monkeypatch.setattr(core.ClassifyJob, "_predict", flaky)
    code, _, err = cli(*args, "-o", out)
    assert code == 130 and "--resume" in err
    partial = read(out)
    assert len({r["path"] for r in partial}) == 4  # two batches of two made it to disk
    # the crash also tore the last line in half
    with open(out, "ab") as fh:
        fh.write(b'{"path": "x' if fmt == "jsonl" else b"/some/pa")
    monkeypatch.setattr(core.ClassifyJob, "_predict", real)
    code, _, err = cli(*args, "-o", out, "--resume")
    assert code == 0, err
    assert "already in" in err
    rows = read(out)
    key = [(r["path"], r["prediction"]) for r in rows]
    assert len(key) == len(set(key)) == 7 * 2
    assert sorted(key) == sorted((r["path"], r["prediction"]) for r in read(reference))
    assert {(r["path"], r["name"]) for r in rows} == {
        (r["path"], r["name"]) for r in read(reference)
    }
    # resuming a finished file adds nothing
    code, _, err = cli(*args, "-o", out, "--resume")
    assert code == 0 and len(read(out)) == 14


def test_scan_output_drops_the_last_image_and_a_torn_line(tmp_path):
    f = tmp_path / "o.csv"
    header = ",".join(COLUMNS)
    row = "{p},species,{k},X,,,,,,,,,0.5,\n"
    f.write_text(
        header + "\n" + "".join(row.format(p=p, k=k) for p in "ab" for k in (1, 2)) + "c,spe"
    )
    assert scan_output(f, "csv") == {"a"}
    assert f.read_text() == header + "\n" + row.format(p="a", k=1) + row.format(p="a", k=2)
    other = tmp_path / "other.csv"
    other.write_text("path,label\nx,y\n")
    with pytest.raises(Exception, match="columns differ"):
        scan_output(other, "csv")


# -- bad input ------------------------------------------------------------------------------------
def test_broken_files_become_error_rows_not_crashes(cli, small_world, tiny_ckpt, tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    good = small_world["photos"][0].path.read_bytes()
    (folder / "1-good.jpg").write_bytes(good)
    (folder / "2-truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "3-empty.png").write_bytes(b"")
    (folder / "4-text.jpg").write_text("this is not a jpeg")
    (folder / "5-good.jpg").write_bytes(good)
    code, out, err = cli(*base(tiny_ckpt, folder, "-k", "1", "--format", "csv"))
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out), keep_default_na=False)
    errors = dict(zip(df["path"].map(lambda p: Path(p).name), df["error"], strict=True))
    assert errors == {
        "1-good.jpg": "",
        "2-truncated.jpg": "truncated",
        "3-empty.png": "empty",
        "4-text.jpg": "not_image",
        "5-good.jpg": "",
    }
    assert "3 unreadable (empty 1, not_image 1, truncated 1)" in err
    assert "2-truncated.jpg: skipped" in err
    code, out, err = cli(*base(tiny_ckpt, folder, "-k", "1", "--format", "csv", "--strict"))
    assert code == 1 and "2-truncated.jpg: unreadable image (truncated)" in err
    assert "1-good.jpg" in out  # what was classified before the bad file is kept


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("empty_folder", 1, "no images in this folder"),
        ("missing", 1, "no such file or folder"),
        ("only_subfolders", 1, "add --recursive"),
        ("glob_nothing", 1, "no image file matches"),
        ("labels_without_names", 1, "no usable label names"),
        ("resume_stdout", 2, "--resume needs -o FILE"),
        ("resume_parquet", 2, "appends to csv or jsonl"),
        ("bad_within", 1, "lies within 'Nowhereia'"),
        ("bad_confidence", 2, "--min-confidence"),
    ],
)
def test_bad_input_gives_a_clear_error(cli, tmp_path, small_world, tiny_ckpt, case, code, message):
    photo = small_world["photos"][0].path
    empty = tmp_path / "empty"
    empty.mkdir()
    nested = tmp_path / "nested" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(photo, nested / "x.jpg")
    names = tmp_path / "names.txt"
    names.write_text("# nothing but comments\n\n")
    args = {
        "empty_folder": base(tiny_ckpt, empty),
        "missing": base(tiny_ckpt, tmp_path / "nope"),
        "only_subfolders": base(tiny_ckpt, tmp_path / "nested"),
        "glob_nothing": base(tiny_ckpt, str(tmp_path / "*.heic")),
        "labels_without_names": ["classify", "-m", tiny_ckpt, "--labels", names, photo],
        "resume_stdout": base(tiny_ckpt, photo, "--resume"),
        "resume_parquet": base(tiny_ckpt, photo, "--resume", "-o", tmp_path / "x.parquet"),
        "bad_within": base(tiny_ckpt, photo, "--within", "Nowhereia"),
        "bad_confidence": base(tiny_ckpt, photo, "--min-confidence", "1.5"),
    }[case]
    got, out, err = cli(*args)
    assert got == code, err
    assert message in err and "Traceback" not in err
    assert out == ""


def test_a_bundle_classifies_with_its_own_labels_and_class_embeddings(
    cli, photos, tiny_ckpt, tmp_path
):
    from biotrove_cli.core.models.export import ExportConfig, export_model

    bundle = tmp_path / "bundle"
    export_model(
        ExportConfig(
            source=str(tiny_ckpt), out=bundle, labels=DEMO_SPECIES, text_type="com", verify=False
        )
    )
    summary = tmp_path / "summary.json"
    code, out, err = cli(
        "classify", "-m", bundle, photos / "a.jpg", "--workers", "0", "--format", "json", "-k", "2",
        "--summary", summary,
    )  # fmt: skip
    assert code == 0, err
    assert len(json.loads(out)) == 2
    doc = json.loads(summary.read_text())
    # the bundle's labels, and its precomputed embeddings: nothing encoded, nothing cached
    assert doc["n_labels"] == 33 and doc["text_cached"] is True
    assert doc["text_type"] == "com"
    from biotrove_cli.core.models import registry

    assert not list((registry.cache_dir() / "text").rglob("*.safetensors"))
    # asking for another text type encodes afresh
    code, out, err = cli(
        "classify",
        "-m",
        bundle,
        photos / "a.jpg",
        "--workers",
        "0",
        "--format",
        "json",
        "--text-type",
        "sci",
        "--summary",
        summary,
    )
    assert code == 0 and json.loads(summary.read_text())["text_cached"] is False
