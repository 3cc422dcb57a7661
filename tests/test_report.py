"""biotrove report: the data of each section, built from files the real commands wrote (classify,
eval, train on the tiny model), the page's self-containment, and the page itself in headless
Chromium (DOM, filters and sort driven through the page, screenshots at phone and desktop width).

Set BIOTROVE_REPORT_SHOTS=DIR to keep the pages and screenshots for a look.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

from biotrove_cli.core.report.build import ReportConfig, build_report
from biotrove_cli.core.report.classes import confusion_matrix, per_class_rows
from biotrove_cli.core.report.evaluation import build_eval
from biotrove_cli.core.report.gallery import build_gallery
from biotrove_cli.core.report.sources import read_source
from biotrove_cli.core.report.training import build_run, latest_records, thin
from tests.conftest import REPO

CONFOUNDING = REPO / "tests" / "data" / "confounding_species_sample.csv"
Z = 1.959963984540054
THRESHOLD = "0.5"  # --min-confidence: the tiny random model reaches some ranks, not others
N = 13  # photos classified (and one broken file)


def _biotrove(*args) -> None:
    from biotrove_cli.cli.app import main

    code = main([str(a) for a in args])
    assert code == 0, args


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, from its textbook formula."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open(newline="")))


# -- files the real commands write (shared by the module) -----------------------------------------
@pytest.fixture(scope="module")
def classified(tmp_path_factory, small_world, tiny_bundle):
    """13 photos, one of them stored sideways with an EXIF rotation, and a broken file,
    classified twice: top-3 species (CSV + summary), and --min-confidence with --report."""
    from PIL import Image

    root = tmp_path_factory.mktemp("classified")
    photos = root / "photos"
    photos.mkdir()
    for p in small_world["photos"][::2][: N - 1]:
        shutil.copy(p.path, photos / f"{p.taxon.genus}-{Path(p.path).name}")
    with Image.open(small_world["photos"][1].path) as im:
        exif = Image.Exif()
        exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: a portrait photo
        im.convert("RGB").save(photos / "sideways.jpg", exif=exif)
    (photos / "broken.jpg").write_text("not a photo")
    out = {"root": root, "photos": photos, "csv": root / "c.csv", "summary": root / "cs.json"}
    out["jsonl"], out["direct"] = root / "m.jsonl", root / "direct.html"
    _biotrove(
        "classify",
        photos,
        "-m",
        tiny_bundle,
        "-k",
        "3",
        "--workers",
        "0",
        "-o",
        out["csv"],
        "--summary",
        out["summary"],
    )
    _biotrove(
        "classify",
        photos,
        "-m",
        tiny_bundle,
        "--min-confidence",
        THRESHOLD,
        "--workers",
        "0",
        "-o",
        out["jsonl"],
        "--report",
        out["direct"],
    )
    return out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, small_world, tiny_bundle):
    """A two-name-style eval of the tiny bundle with per-class and confusion files, and a
    candidate-set eval of the Confounding-Species sample."""
    from biotrove_cli.core.data.world import render_jpeg
    from biotrove_cli.core.taxonomy.lineage import Taxon

    root = tmp_path_factory.mktemp("evaluated")
    f = {
        k: root / n
        for k, n in (
            ("records", "e.json"),
            ("summary", "e-summary.json"),
            ("per_class", "pc.csv"),
            ("confusion", "cm.csv"),
            ("cand", "cand.json"),
            ("cand_summary", "cand-summary.json"),
        )
    }
    _biotrove(
        "eval",
        "-m",
        tiny_bundle,
        "--data",
        small_world["metadata"],
        "--images",
        small_world["images"],
        "--text-type",
        "sci,taxon_com",
        "--workers",
        "0",
        "--format",
        "json",
        "-o",
        f["records"],
        "--summary",
        f["summary"],
        "--per-class",
        f["per_class"],
        "--confusion",
        f"species:{f['confusion']}",
    )
    for i, r in enumerate(_rows(CONFOUNDING)):
        p = Path(r["path"])
        dst = root / "img" / "Confounding" / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        taxon = Taxon.from_parts(scientific_name=r["scientific_name"])
        dst.write_bytes(render_jpeg(taxon, i, size=(80, 64)))
    _biotrove(
        "eval",
        "-m",
        tiny_bundle,
        "--data",
        CONFOUNDING,
        "--images",
        root / "img",
        "--candidates",
        "class_options",
        "--group-by",
        "pair",
        "--workers",
        "0",
        "--format",
        "json",
        "-o",
        f["cand"],
        "--summary",
        f["cand_summary"],
    )
    return f


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_shards):
    """A 4-step tiny run with a zero-shot evaluation every 2 steps and 2 checkpoints."""
    run = tmp_path_factory.mktemp("trained") / "run"
    _biotrove(
        "train",
        "--preset",
        "tiny",
        "--data",
        train_shards,
        "--val-data",
        train_shards / "val",
        "--run-dir",
        run,
        "--steps",
        "4",
        "--workers",
        "0",
        "--batch-size",
        "8",
        "log_every=1",
        "val_every=2",
        "save_every=2",
        "data.val_limit=24",
    )
    return run


# -- sources -------------------------------------------------------------------------------------
def test_every_kind_of_source_is_recognised(classified, evaluated, trained):
    kinds = {
        classified["csv"]: "classify",
        classified["jsonl"]: "classify",
        classified["summary"]: "classify_summary",
        evaluated["records"]: "eval",
        evaluated["summary"]: "eval_summary",
        evaluated["per_class"]: "per_class",
        evaluated["confusion"]: "confusion",
        evaluated["cand"]: "eval",
        trained: "run",
    }
    for path, kind in kinds.items():
        assert read_source(path).kind == kind, path
    rows = read_source(classified["csv"]).rows  # CSV cells typed as the JSON records are
    ok = [r for r in rows if not r["error"]]
    assert all(isinstance(r["prediction"], int) and isinstance(r["score"], float) for r in ok)
    assert [r["error"] for r in rows if r["error"]] == ["not_image"]
    pc = read_source(evaluated["per_class"]).rows
    assert all(isinstance(r["support"], int) and isinstance(r["class"], str) for r in pc)


def test_a_parquet_result_is_read_like_its_csv(classified, tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    pq.write_table(pacsv.read_csv(classified["csv"]), tmp_path / "c.parquet")
    a = build_gallery(read_source(classified["csv"]).rows, "a", thumb_size=0)
    b = build_gallery(read_source(tmp_path / "c.parquet").rows, "b", thumb_size=0)
    assert [(p.path, p.preds) for p in a.photos] == [(p.path, p.preds) for p in b.photos]


@pytest.mark.parametrize(
    "make, message, hint",
    [
        (lambda d: d / "nope.csv", "no such file or folder", "classify results"),
        (lambda d: _write(d / "empty.csv", ""), "the file is empty", "classify results"),
        (lambda d: _write(d / "doc.json", '{"a": 1}'), "not an eval or classify", "eval"),
        (lambda d: _write(d / "t.txt", "┃ path ┃ name ┃\n│ a │ b │\n"), "not a table", "--format"),
        (lambda d: _write(d / "x.csv", "a,b\n1,2\n"), "unknown kind", "classify results"),
        (lambda d: _photo_dir(d), "not a run folder", "classify FOLDER --report"),
    ],
)
def test_bad_sources_fail_clearly(cli, tmp_path, make, message, hint):
    path = make(tmp_path)
    out = tmp_path / "r.html"
    code, stdout, err = cli("report", path, "-o", out)
    assert code == 1, err
    assert f"Error: {path}" in err and message in err and hint in err and "Hint:" in err
    assert "Traceback" not in err and stdout == "" and not out.exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _photo_dir(d: Path) -> Path:
    (d / "card").mkdir()
    (d / "card" / "a.jpg").write_bytes(b"\xff\xd8\xff")
    return d / "card"


def test_usage_errors(cli, classified, tmp_path):
    code, _, err = cli("report", classified["csv"])
    assert code == 2 and "--output" in err
    code, _, err = cli("report", classified["csv"], "-o", tmp_path / "r.html", "--thumb-size", "-1")
    assert code == 2
    code, _, err = cli("report", classified["summary"], "-o", tmp_path / "r.html")
    assert code == 1 and "no classify results go with it" in err


# -- the gallery ---------------------------------------------------------------------------------
def test_gallery_groups_predictions_by_photo(classified):
    rows = _rows(classified["csv"])
    gallery = build_gallery(
        read_source(classified["csv"]).rows, "c.csv", search=[classified["root"].parent, Path.cwd()]
    )
    ok = [r for r in rows if not r["error"]]
    paths = list(dict.fromkeys(r["path"] for r in ok))
    assert [p.path for p in gallery.photos] == paths and len(paths) == N
    for p in gallery.photos:
        mine = sorted((r for r in ok if r["path"] == p.path), key=lambda r: int(r["prediction"]))
        assert [gallery.taxa[i].name for i, _ in p.preds] == [r["name"] for r in mine]
        assert [s for _, s in p.preds] == pytest.approx([float(r["score"]) for r in mine])
        assert p.score == pytest.approx(float(mine[0]["score"]))
        top = gallery.taxa[p.preds[0][0]]
        assert top.lineage == tuple(
            mine[0][k]
            for k in ("kingdom", "phylum", "class", "order", "family", "genus", "species")
        )
        assert top.common == mine[0]["common_name"]
    assert gallery.k == 3 and gallery.ranks == {"species": N}
    assert gallery.errors == [
        {
            "path": str(classified["photos"] / "broken.jpg"),
            "reason": "not_image",
            "meaning": "not an image",
        }
    ]
    assert sum(gallery.histogram) == N
    bins = [min(9, int(p.score * 10)) for p in gallery.photos]
    assert gallery.histogram == [bins.count(b) for b in range(10)]
    assert sum(n for _, _, n in gallery.top_taxa) == N
    assert {gallery.taxa[p.preds[0][0]].lineage[5] for p in gallery.photos} <= set(
        gallery.taxon_names
    )


def test_thumbnails_are_small_rotated_jpegs(classified):
    from PIL import Image

    rows = read_source(classified["csv"]).rows
    gallery = build_gallery(rows, "c.csv", thumb_size=48)
    assert gallery.thumbs_made == N and gallery.thumbs_missing == {}
    for p in gallery.photos:
        with Image.open(io.BytesIO(base64.b64decode(p.thumb))) as im:
            assert im.format == "JPEG" and max(im.size) == 48 and im.size == p.thumb_wh
            with Image.open(p.path) as original:
                w, h = original.size
            if p.path.endswith("sideways.jpg"):
                assert w > h and im.size[1] > im.size[0]  # EXIF-rotated to portrait
            else:
                assert (w > h) == (im.size[0] > im.size[1])


def test_photos_moved_away_are_counted_and_found_with_images(classified, tmp_path):
    rows = read_source(classified["csv"]).rows
    moved = [{**r, "path": os.path.relpath(r["path"], classified["root"])} for r in rows]
    elsewhere = build_gallery(moved, "c.csv", search=[tmp_path], thumb_size=32)
    assert elsewhere.thumbs_made == 0 and elsewhere.thumbs_missing == {"missing": N}
    assert f"{N} of {N} photos not found" in elsewhere.notes[0] and "--images" in elsewhere.notes[0]
    found = build_gallery(moved, "c.csv", search=[tmp_path, classified["root"]], thumb_size=32)
    assert found.thumbs_made == N and not found.notes


def test_min_confidence_results_keep_the_rank_each_photo_reached(classified):
    records = [json.loads(line) for line in classified["jsonl"].read_text().splitlines()]
    gallery = build_gallery(read_source(classified["jsonl"]).rows, "m.jsonl", thumb_size=0)
    expected = {r["path"]: r["rank"] for r in records if not r["error"]}
    assert {p.path: p.rank for p in gallery.photos} == expected
    assert len(set(expected.values())) >= 2, "the fixture's threshold should mix ranks"
    for p in gallery.photos:
        rec = next(r for r in records if r["path"] == p.path)
        assert p.score == pytest.approx(rec["score"])
        assert (p.rank == "none") == (not p.preds)
        if p.preds:
            assert gallery.taxa[p.preds[0][0]].name == rec["name"]
    assert sum(gallery.ranks.values()) == N


# -- the evaluation ------------------------------------------------------------------------------
def test_accuracy_by_rank_per_name_style(evaluated):
    records = json.loads(evaluated["records"].read_text())
    summary = json.loads(evaluated["summary"].read_text())
    section = build_eval(records, summary)
    block = section.blocks[0]
    assert block.title == "Accuracy by rank and name style"
    (chart,) = block.figures  # one model, one mode: one panel, a bar per name style
    assert [s.name for s in chart.series] == ["sci", "taxon_com"]
    ranks = list(dict.fromkeys(r["rank"] for r in records))
    assert chart.categories == ranks and "species" in ranks
    for s in chart.series:
        for r in (r for r in records if r["text_type"] == s.name):
            iv = s.values[r["rank"]]
            assert (iv.value, iv.low, iv.high) == (r["top1"], r["top1_ci_low"], r["top1_ci_high"])
            assert (iv.k, iv.n) == (r["n_correct_top1"], r["n_images"])
            assert chart.chance[r["rank"]] == pytest.approx(1 / r["n_classes"], abs=1e-6)
    facts = dict(section.facts)
    assert facts["name styles"] == "sci, taxon_com" and facts["samples"] == "30"
    severity = next(b for b in section.blocks if b.title == "Mistake severity")
    for s in severity.figures[0].series:
        rec = next(r for r in records if r["rank"] == "species" and r["text_type"] == s.name)
        for level, iv in s.values.items():
            assert iv.k == rec[f"mistakes_deepest_{level}"] and iv.n == rec["mistakes"]


def test_per_class_worst_first_with_intervals(evaluated):
    rows = read_source(evaluated["per_class"]).rows
    groups = per_class_rows(rows)
    raw = _rows(evaluated["per_class"])
    assert set(groups) == {(r["model"], r["mode"], r["text_type"], r["rank"]) for r in raw}
    for key, classes in groups.items():
        mine = [
            r
            for r in raw
            if (r["model"], r["mode"], r["text_type"], r["rank"]) == key and int(r["support"]) > 0
        ]
        assert len(classes) == len(mine)
        recalls = [c["recall"] for c in classes]
        assert recalls == sorted(recalls)
        for c in classes:
            assert (c["low"], c["high"]) == pytest.approx(wilson(c["correct_top1"], c["support"]))
    block = build_eval([], None, rows, None, max_classes=3).blocks[0]
    assert all(
        len(c.tables[0].rows) == min(3, len(groups[k]))
        for c, k in zip(block.children, groups, strict=True)
    )
    assert sum(c.open for c in block.children) == 1
    assert [c for c in block.children if c.open][0].title.startswith("sci: species")


def test_confusion_heat_map_agrees_with_the_per_class_counts(evaluated):
    cells = read_source(evaluated["confusion"]).rows
    support = {
        (r["text_type"], r["class"]): int(r["support"])
        for r in _rows(evaluated["per_class"])
        if r["rank"] == "species"
    }
    for text_type in ("sci", "taxon_com"):
        mine = [c for c in cells if c["text_type"] == text_type]
        heat, pairs = confusion_matrix(mine, limit=4)
        assert len(heat.columns) <= 5 and heat.columns[-1] == "other"
        for t, total, line in zip(heat.rows, heat.row_totals, heat.counts, strict=True):
            assert total == support[(text_type, t)] == sum(line)
        off = [c for c in mine if c["truth"] != c["predicted"]]
        assert pairs[0][2] == max(c["count"] for c in off)
        assert sum(p[2] for p in pairs) == sum(c["count"] for c in off)
        assert [p[2] for p in pairs] == sorted((p[2] for p in pairs), reverse=True)


def test_candidate_sets(evaluated):
    records = json.loads(evaluated["cand"].read_text())
    summary = json.loads(evaluated["cand_summary"].read_text())
    section = build_eval(records, summary)
    (block,) = [b for b in section.blocks if b.figures]
    chart = block.figures[0]
    assert chart.categories == ["C1", "C2", "C3", "C4", "C5", "macro", "micro"]
    micro = next(r for r in records if r["scope"] == "micro")
    assert chart.series[0].values["micro"].value == micro["top1"]
    assert chart.chance["micro"] == pytest.approx(micro["chance"])
    assert any("none of its candidates" in n for n in section.notes)


def test_eval_files_join_their_evaluation(evaluated):
    """Given in any order, each summary joins its own records; the per-class and confusion
    files a summary names come along without being given."""
    report = build_report(
        ReportConfig(
            sources=[
                str(evaluated["records"]),
                str(evaluated["cand"]),
                str(evaluated["cand_summary"]),
                str(evaluated["summary"]),
            ]
        )
    )
    first, second = report.sections
    assert first.title == "Evaluation on metadata.parquet"
    assert second.title == "Evaluation on confounding_species_sample.csv"
    titles = [b.title for b in first.blocks]
    assert "Per-class accuracy, worst first" in titles and "Confusion" in titles
    assert any("pc.csv" in n for n in report.notes) and any("cm.csv" in n for n in report.notes)


# -- the training run ----------------------------------------------------------------------------
def test_run_section_curves_checkpoints_and_config(trained):
    metrics = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m["kind"] == "train"]
    evals = [m for m in metrics if m["kind"] == "eval"]
    section = build_run(trained)
    charts = {f.title: f for f in section.figures()}
    assert set(charts) == {"Loss", "Learning rate", "Throughput", "Zero-shot top-1 by rank"}
    loss = charts["Loss"].series
    assert loss[0].points == [(m["step"], m["loss"]) for m in steps]
    assert loss[1].points == [(m["step"], m["loss"]) for m in evals] and len(evals) == 2
    assert charts["Learning rate"].series[0].points == [(m["step"], m["lr"]) for m in steps]
    ranks = charts["Zero-shot top-1 by rank"].series
    assert [s.name for s in ranks][-1] == "species" and len(ranks) == 7
    assert ranks[-1].points == [(m["step"], m["top1_species"]) for m in evals]
    checkpoints = next(b for b in section.blocks if b.title == "Checkpoints").tables[0].rows
    assert [r[0] for r in checkpoints] == ["step-00000004.pt", "step-00000002.pt"]
    assert [r[4] for r in checkpoints] == ["latest", "complete"]
    config = next(b for b in section.blocks if b.title == "Resolved configuration")
    assert config.code == (trained / "config.yaml").read_text()
    assert dict(section.facts)["status"] == "finished"


def test_a_resumed_run_keeps_the_later_record_of_each_step(trained):
    metrics = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    replay = [{**m, "loss": 100.0 + m["step"]} for m in metrics if m["step"] >= 3]
    steps, evals = latest_records(metrics + replay)
    assert [m["step"] for m in steps] == [1, 2, 3, 4]
    assert [m["loss"] for m in steps[2:]] == [103.0, 104.0]
    assert [m["step"] for m in evals] == [2, 4] and evals[1]["loss"] == 104.0


def test_long_curves_are_thinned_keeping_spikes():
    points = [(float(i), 1.0 + 0.001 * (i % 7)) for i in range(10_000)]
    points[5_123] = (5_123.0, 9.0)
    points[7_001] = (7_001.0, -3.0)
    out = thin(points, 300)
    assert len(out) <= 300 and out[0] == points[0] and out[-1] == points[-1]
    assert (5_123.0, 9.0) in out and (7_001.0, -3.0) in out
    assert [x for x, _ in out] == sorted(x for x, _ in out)


# -- the page ------------------------------------------------------------------------------------
def _everything(classified, evaluated, trained) -> list[Path]:
    return [
        classified["csv"],
        classified["summary"],
        evaluated["records"],
        evaluated["summary"],
        trained,
    ]


def test_the_page_is_one_self_contained_file(cli, classified, evaluated, trained, tmp_path):
    page = tmp_path / "report.html"
    code, out, err = cli(
        "report", *_everything(classified, evaluated, trained), "-o", page, "--title", "Card <7>"
    )
    assert code == 0, err
    assert out == "" and f"wrote {page}" in err and f"{N} photos (1 unreadable)" in err
    html = page.read_text()
    assert "<title>Card &lt;7&gt;</title>" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["']?(?:https?:|//)""", html)
    assert not re.search(r"<link\b|@import|url\((?!#)", html)  # only url(#pattern) fills
    data = json.loads(re.search(r'class="gallery-data">(.*?)</script>', html, re.S)[1])
    assert len(data["photos"]) == N and all(p[4] for p in data["photos"])
    report = build_report(
        ReportConfig(sources=[str(p) for p in _everything(classified, evaluated, trained)])
    )
    n_figures = sum(len(s.figures()) for s in report.sections)
    assert html.count('<svg class="chart ') == n_figures
    assert "sideways.jpg" in html
    code, out, _ = cli("report", classified["csv"], "-o", "-", "--thumb-size", "0")
    assert code == 0 and out.startswith("<!doctype html>") and '"photos":[[' in out
    code, _, err = cli("report", classified["csv"], "-o", tmp_path)
    assert code == 2 and "is a folder" in err


def test_classify_resume_reports_every_photo_of_the_file(cli, classified, tiny_bundle, tmp_path):
    results = tmp_path / "c.csv"
    shutil.copy(classified["csv"], results)  # a finished run: --resume has nothing left to do
    page = tmp_path / "r.html"
    code, _, err = cli(
        "classify",
        classified["photos"],
        "-m",
        tiny_bundle,
        "-k",
        "3",
        "--workers",
        "0",
        "-o",
        results,
        "--resume",
        "--report",
        page,
    )
    assert code == 0, err
    html = page.read_text()
    data = json.loads(re.search(r'class="gallery-data">(.*?)</script>', html, re.S)[1])
    assert len(data["photos"]) == N and f"{N} photos (1 unreadable)" in err
    code, _, err = cli(
        "classify", classified["photos"], "-m", tiny_bundle, "-o", results, "--report", results
    )
    assert code == 2 and "name the same file" in err


def test_classify_report_option_writes_the_same_gallery(classified):
    html = classified["direct"].read_text()
    data = json.loads(re.search(r'class="gallery-data">(.*?)</script>', html, re.S)[1])
    records = [json.loads(line) for line in classified["jsonl"].read_text().splitlines()]
    assert [p[0] for p in data["photos"]] == [r["path"] for r in records if not r["error"]]
    assert "broken.jpg" in html and "not_image" in html and "classify with bundle" in html


# -- in the browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    from tests.browser import Chromium, find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip(
            "no Chromium found (chromium, chromium-browser, google-chrome or $BIOTROVE_CHROMIUM): "
            "the browser test needs one (apt-get install chromium)"
        )
    with Chromium(exe) as b:
        yield b


def _click(page, selector: str) -> None:
    """A real mouse click in the middle of the element."""
    box = page.eval(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
        "return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
        page.call(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
        )


def _type(page, selector: str, text: str) -> None:
    """Focus a field, clear it and type into it."""
    page.eval(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); "
        "e.select && e.select(); })()"
    )
    page.call(
        "Input.dispatchKeyEvent",
        {"type": "keyDown", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8},
    )
    page.call(
        "Input.dispatchKeyEvent",
        {"type": "keyUp", "key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8},
    )
    page.call("Input.insertText", {"text": text})


def _cards(page) -> list[dict]:
    return page.eval(
        "[...document.querySelectorAll('#s1-classify .card')].map(c => ({score: "
        "c.dataset.score === '' ? null : +c.dataset.score, rank: c.dataset.rank, "
        "index: +c.dataset.index}))"
    )


def _not_blank(png: bytes, width: int) -> None:
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as im:
        assert im.size[0] == width
        grey = im.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 20
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 100


@pytest.mark.slow
def test_the_page_in_chromium(browser, classified, evaluated, trained, tmp_path):
    page_file = tmp_path / "report.html"
    cfg = ReportConfig(sources=[str(p) for p in _everything(classified, evaluated, trained)])
    report = build_report(cfg)
    from biotrove_cli.output.report.page import write_report

    write_report(report, str(page_file))
    gallery = report.sections[0].gallery
    page = browser.new_page(1280, 900)
    page.goto(page_file.as_uri())
    assert page.problems() == []  # no script error, nothing the CSP refused
    assert {u.split(":")[0] for u in page.requests()} <= {"file", "data"}

    # what is drawn
    assert len(_cards(page)) == N
    n_figures = sum(len(s.figures()) for s in report.sections)
    assert page.eval("document.querySelectorAll('svg.chart').length") == n_figures
    heat = next(f for s in report.sections for f in s.figures() if type(f).__name__ == "Heatmap")
    first_heat = "document.querySelector('svg.chart.heat')"
    assert page.eval(f"{first_heat}.querySelectorAll('g.cell').length") == len(heat.rows) * len(
        heat.columns
    )
    assert (
        page.eval("document.querySelectorAll('svg.chart.lines polyline').length") == 1 + 2 + 1 + 7
    )
    errors = page.eval("[...document.querySelectorAll('#s1-classify table.data')].pop().innerText")
    assert "broken.jpg" in errors and "not_image" in errors

    # filter by taxon: a genus some top predictions are in, typed into the page
    tops = [gallery.taxa[p.preds[0][0]] for p in gallery.photos]
    genus, n = next(
        (g, n)
        for g in sorted({t.lineage[5] for t in tops})
        if 0 < (n := sum(t.lineage[5] == g for t in tops)) < N
    )
    _type(page, "#s1-classify input[name=taxon]", genus.lower())
    page.wait_for(f"document.querySelector('#s1-classify .gallery').dataset.shown === '{n}'")
    shown = _cards(page)
    assert len(shown) == n and all(tops[c["index"]].lineage[5] == genus for c in shown)
    _type(page, "#s1-classify input[name=taxon]", "")
    page.wait_for(f"document.querySelector('#s1-classify .gallery').dataset.shown === '{N}'")

    # the doubtful photos first
    _click(page, "#s1-classify [data-sort=asc]")
    page.wait_for("document.querySelector('#s1-classify [data-sort=asc]').ariaPressed === 'true'")
    scores = [c["score"] for c in _cards(page)]
    assert scores == sorted(scores) and scores[0] == pytest.approx(
        min(p.score for p in gallery.photos), abs=1e-4
    )

    # confidence from: the photos at least that sure
    cut = sorted(p.score for p in gallery.photos)[6]
    _type(page, "#s1-classify input[name=min]", f"{100 * cut:.4f}")
    want = sum(round(p.score, 6) >= round(cut, 6) for p in gallery.photos)
    page.wait_for(f"document.querySelector('#s1-classify .gallery').dataset.shown === '{want}'")
    assert all(c["score"] >= cut - 1e-4 for c in _cards(page))
    _type(page, "#s1-classify input[name=min]", "0")

    # printed, the controls go away
    page.call("Emulation.setEmulatedMedia", {"media": "print"})
    assert page.eval("getComputedStyle(document.querySelector('.filters')).display") == "none"
    page.call("Emulation.setEmulatedMedia", {"media": ""})
    pdf = base64.b64decode(page.call("Page.printToPDF", {})["data"])
    assert pdf[:5] == b"%PDF-" and len(pdf) > 20_000

    keep = os.environ.get("BIOTROVE_REPORT_SHOTS")
    for width, height in ((390, 844), (1280, 900)):
        page.viewport(width, height)
        page.goto(page_file.as_uri())
        # the page itself never scrolls sideways: wide charts and tables scroll in their box
        assert page.eval("document.documentElement.scrollWidth") <= width
        png = page.screenshot()
        _not_blank(png, width)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / f"report-{width}.png").write_bytes(
                page.screenshot(full_page=True, max_height=30000)
            )
            shutil.copy(page_file, Path(keep) / "report.html")


@pytest.mark.slow
def test_rank_filter_and_pages_in_chromium(browser, classified):
    page = browser.new_page(1280, 900)
    page.goto(classified["direct"].as_uri())
    assert page.problems() == []
    records = [json.loads(line) for line in classified["jsonl"].read_text().splitlines()]
    ranks = [r["rank"] for r in records if not r["error"]]
    for rank in sorted(set(ranks)):
        page.eval(
            f"(() => {{ const s = document.querySelector('select[name=rank]'); "
            f"s.value = {json.dumps(rank)}; s.dispatchEvent(new Event('input', "
            "{bubbles: true})); })()"
        )
        page.wait_for(f"document.querySelector('.gallery').dataset.shown === '{ranks.count(rank)}'")
        assert {c["rank"] for c in _cards_any(page)} == {rank}
    page.eval(
        "(() => { const s = document.querySelector('select[name=rank]'); s.value = '';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    page.eval(
        "(() => { const s = document.querySelector('select[name=per]'); s.value = '12';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )
    page.wait_for("document.querySelector('.page-of').textContent === 'page 1 of 2'")
    assert len(_cards_any(page)) == 12
    first = page.eval("document.querySelector('.card .file').title")
    _click(page, "[data-page=next]")
    page.wait_for("document.querySelector('.page-of').textContent === 'page 2 of 2'")
    assert len(_cards_any(page)) == N - 12
    assert page.eval("document.querySelector('[data-page=next]').disabled")
    assert page.eval("document.querySelector('.card .file').title") != first


def _cards_any(page) -> list[dict]:
    return page.eval("[...document.querySelectorAll('.card')].map(c => ({rank: c.dataset.rank}))")
