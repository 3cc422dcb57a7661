"""``biotrove eval``: per-rank zero-shot metrics checked against an independent computation,
rollup and prompt modes, shards and tables, bad rows, reports, the text cache, distribution."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.data import ShardDataset
from biotrove_cli.core.evaluation.engine import evaluate
from biotrove_cli.core.evaluation.zeroshot import Mode
from biotrove_cli.core.taxonomy.labelbank import LabelBank
from biotrove_cli.core.taxonomy.rank import RANKS, Rank
from tests.conftest import run_subprocess

LINEAGE = ("kingdom", "phylum", "class", "order", "family", "genus", "species")


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, tiny_model):
    """The seeded tiny model as a checkpoint file: every load gives the same weights."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt_b(tmp_path_factory):
    """A second, different tiny model (for side-by-side comparison)."""
    import torch

    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(1)
    model = load_model("biotrove-tiny:random")
    path = tmp_path_factory.mktemp("ckpt-b") / "tiny-b.pt"
    torch.save(model.model.state_dict(), path)
    return path


def write_table(rows: list[dict], path: Path) -> Path:
    cols = list(rows[0])
    pq.write_table(pa.table({c: [r.get(c, "") for r in rows] for c in cols}), path)
    return path


def world_rows(photos) -> list[dict]:
    rows = []
    for p in photos:
        t = p.taxon
        row = {"path": str(p.path), "scientificName": t.scientific_name}
        row.update(dict(zip(LINEAGE, t.names, strict=True)))
        row["common_name"] = t.common_name
        rows.append(row)
    return rows


def write_shards(photos, out: Path, split: str = "val", per_shard: int = 7) -> Path:
    """A shard folder in the ``biotrove shard`` format, from the photos' own JPEG bytes."""
    import webdataset as wds

    bank = LabelBank.from_taxa([p.taxon for p in photos])
    bank.counts = dict(Counter(p.taxon.species_key for p in photos))
    bank.counts = {k: {split: n} for k, n in bank.counts.items()}
    out.mkdir(parents=True)
    bank.save(out / "taxonomy.parquet")
    (out / split).mkdir()
    sizes = {}
    for i in range(0, len(photos), per_shard):
        name = f"shard-{i // per_shard:06d}.tar"
        chunk = photos[i : i + per_shard]
        with wds.TarWriter(str(out / split / name)) as w:
            for p in chunk:
                t = p.taxon
                meta = {
                    "lineage": t.lineage_dict(),
                    "epithet": t.epithet,
                    "scientific_name": t.scientific_name,
                    "common_name": t.common_name,
                    "species_key": t.species_key,
                }
                w.write(
                    {
                        "__key__": f"p{p.photo_id}",
                        "jpg": p.path.read_bytes(),
                        "json": json.dumps(meta).encode(),
                    }
                )
        sizes[name] = len(chunk)
    (out / split / "sizes.json").write_text(json.dumps(sizes))
    return out


def by_key(records):
    return {(r["model"], r["mode"], r["rank"]): r for r in records}


def reference_metrics(ckpt: Path, photos, bank: LabelBank, mode: str) -> dict[str, dict]:
    """Top-1/top-5/balanced accuracy per rank, computed independently of the engine: one image
    at a time with PIL, the model's own encoders, and taxa grouped by plain lineage tuples."""
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageOps

    from biotrove_cli.core.models.load import load_model

    loaded = load_model(str(ckpt))
    model, pre, tok = loaded.model, loaded.preprocess, loaded.tokenizer
    scale = min(float(model.logit_scale.detach().exp()), 100.0)
    with torch.no_grad():
        feats = []
        for p in photos:
            with Image.open(p.path) as im:
                img = ImageOps.exif_transpose(im).convert("RGB")
            feats.append(F.normalize(model.encode_image(pre(img)[None]), dim=-1)[0])
        img_feats = torch.stack(feats).double()

        def encode(texts):
            return F.normalize(model.encode_text(tok(texts)), dim=-1).double()

        species = list(bank.taxa)
        sp_text = encode(
            [
                f"a photo of {t.taxon_string()} with common name {t.common_name or t.sci}."
                for t in species
            ]
        )
        sp_probs = torch.softmax(scale * img_feats @ sp_text.T, dim=-1)
    out = {}
    for rank in RANKS:

        def group(t, rank=rank):
            return tuple(n.lower() for n in t.names[: rank.index + 1])

        classes = sorted({group(t) for t in species})
        index = {g: i for i, g in enumerate(classes)}
        if mode == "rollup" or rank is Rank.SPECIES:
            probs = torch.zeros(len(photos), len(classes), dtype=torch.float64)
            for j, t in enumerate(species):
                probs[:, index[group(t)]] += sp_probs[:, j]
        else:
            reps = {}
            for t in species:
                reps.setdefault(group(t), t)
            texts = [
                "a photo of " + " ".join(n for n in reps[g].names[: rank.index + 1] if n) + "."
                for g in classes
            ]
            with torch.no_grad():
                probs = torch.softmax(scale * img_feats @ encode(texts).T, dim=-1)
        truth = [index[group(p.taxon)] for p in photos]
        order = torch.argsort(probs, dim=1, descending=True)[:, :5].tolist()
        top1 = np.mean([o[0] == t for o, t in zip(order, truth, strict=True)])
        top5 = np.mean([t in o for o, t in zip(order, truth, strict=True)])
        recalls = []
        for c in set(truth):
            rows = [o for o, t in zip(order, truth, strict=True) if t == c]
            recalls.append(np.mean([o[0] == c for o in rows]))
        out[rank.value] = {
            "top1": top1,
            "top5": top5,
            "balanced_accuracy": float(np.mean(recalls)),
            "n_classes": len(classes),
            "n_images": len(photos),
        }
    return out


# -- correctness ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_per_rank_metrics_match_an_independent_computation(small_world, tiny_ckpt, tmp_path):
    photos = small_world["photos"]
    cfg = EvalConfig(
        models=[str(tiny_ckpt)],
        data=str(small_world["metadata"]),
        images=str(small_world["images"]),
        modes=[Mode.ROLLUP, Mode.PROMPT],
        workers=0,
        batch_size=7,
    )
    result = evaluate(cfg)
    got = by_key(result.records)
    bank = result.dataset.bank
    assert len(bank) == 6
    for mode in ("rollup", "prompt"):
        ref = reference_metrics(tiny_ckpt, photos, bank, mode)
        for rank in RANKS:
            rec = got[(tiny_ckpt.name, mode, rank.value)]
            exp = ref[rank.value]
            for key in ("top1", "top5", "balanced_accuracy"):
                assert rec[key] == pytest.approx(exp[key], abs=1e-6), (mode, rank, key)
            assert rec["n_classes"] == exp["n_classes"]
            assert rec["n_images"] == exp["n_images"] == 30
            assert rec["top1_ci_low"] <= rec["top1"] <= rec["top1_ci_high"]
    # prompt mode encoded its own class texts for every rank above species
    assert set(result.models[0].info["text_cache"]) == {"species"} | {
        f"prompt:{r.value}" for r in RANKS[:-1]
    }
    species = got[(tiny_ckpt.name, "rollup", "species")]
    sev = sum(
        species[f"mistakes_deepest_{k}"]
        for k in ("none", "kingdom", "phylum", "class", "order", "family", "genus")
    )
    assert sev == species["mistakes"] == 30 - species["n_correct_top1"]


def test_repeated_epithets_across_genera_stay_apart(tmp_path, demo_bank, tiny_ckpt):
    from biotrove_cli.core.data.world import generate_world

    vulgaris = [t for t in demo_bank.taxa if t.epithet == "vulgaris"]
    assert len(vulgaris) == 4 and len({t.genus for t in vulgaris}) == 4
    photos = generate_world(vulgaris, tmp_path / "img", 2, seed=5, size=(96, 72))
    table = write_table(world_rows(photos), tmp_path / "vulgaris.parquet")
    cfg = EvalConfig(
        models=[str(tiny_ckpt)],
        data=str(table),
        labels=str(Path(demo_bank.source)),
        workers=0,
        per_class=str(tmp_path / "pc.csv"),
        ranks=[Rank.GENUS, Rank.SPECIES],
    )
    result = evaluate(cfg)
    rec = by_key(result.records)[(tiny_ckpt.name, "rollup", "species")]
    assert rec["n_classes"] == len(demo_bank) == 33
    assert rec["n_classes_present"] == 4 and rec["n_images"] == 8 and rec["n_not_in_bank"] == 0
    with open(tmp_path / "pc.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["rank"] == "species" and r["support"] != "0"]
    assert sorted(r["class"] for r in rows) == sorted(t.binomial for t in vulgaris)
    assert all(r["support"] == "2" for r in rows)


def test_shards_and_table_give_the_same_numbers(tmp_path, small_world, tiny_ckpt):
    photos = small_world["photos"]
    shards = write_shards(photos, tmp_path / "shards", per_shard=7)
    common = dict(models=[str(tiny_ckpt)], modes=[Mode.ROLLUP, Mode.PROMPT], batch_size=8)
    from_table = evaluate(
        EvalConfig(
            data=str(small_world["metadata"]),
            images=str(small_world["images"]),
            workers=0,
            **common,
        )
    )
    # 5 shards over 2 workers: whole shards per worker; then 1 shard: samples dealt out
    from_shards = evaluate(EvalConfig(data=str(shards), workers=2, **common))
    one_tar = evaluate(
        EvalConfig(
            data=str(shards / "val" / "shard-000000.tar"),
            workers=2,
            labels=str(small_world["metadata"]),
            **common,
        )
    )
    assert from_shards.document["kind"] == "shards" and from_shards.document["n_shards"] == 5
    assert from_shards.document["labels"]["n_species"] == 6
    strip = ("model_spec",)
    a = [{k: v for k, v in r.items() if k not in strip} for r in from_table.records]
    b = [{k: v for k, v in r.items() if k not in strip} for r in from_shards.records]
    assert a == b
    assert {r["n_images"] for r in one_tar.records} == {7}
    # --limit: exactly the first N samples, with and without workers
    for workers in (0, 2):
        limited = evaluate(EvalConfig(data=str(shards), workers=workers, limit=11, **common))
        assert {r["n_images"] for r in limited.records} == {11}


@pytest.mark.parametrize("n_shards", [1, 3, 8])
def test_shard_split_covers_every_sample_once(tmp_path, small_world, n_shards):
    photos = small_world["photos"]
    shards = write_shards(photos, tmp_path / "s", per_shard=-(-len(photos) // n_shards))
    tars = sorted((shards / "val").glob("*.tar"))
    seen = []
    for rank in range(2):
        ds = ShardDataset(tars, lambda img: 0, 64, rank=rank, world=2)  # keys only
        seen += [s["key"] for s in ds]
    assert sorted(seen) == sorted(f"p{p.photo_id}" for p in photos)
    limited = []
    for rank in range(2):
        ds = ShardDataset(tars, lambda img: 0, 64, rank=rank, world=2, limit=4 + (rank == 0))
        limited += [s["key"] for s in ds]
    assert len(limited) == len(set(limited)) == 9


def test_eval_on_shards_written_by_biotrove_shard(cli, train_shards, tiny_ckpt, tmp_path):
    sizes = json.loads((train_shards / "val" / "sizes.json").read_text())
    out, summary = tmp_path / "r.json", tmp_path / "summary.json"
    code, _, err = cli(
        "eval", "-m", tiny_ckpt, "--data", train_shards, "--workers", "2", "-o", out,
        "--summary", summary,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(summary.read_text())
    assert doc["split"] == "val" and doc["n_samples"] == sum(sizes.values())
    bank = LabelBank.load(train_shards)
    val_species = [t for t in bank.taxa if bank.counts[t.species_key].get("val", 0) > 0]
    assert doc["labels"]["n_species"] == len(val_species)
    assert {r["n_images"] for r in json.loads(out.read_text())} == {sum(sizes.values())}


# -- bad input ------------------------------------------------------------------------------------
@pytest.fixture
def messy_table(tmp_path, small_world):
    """The world's 30 rows plus: blank genus+species, a species not in the labels, a truncated
    JPEG, a text file named .jpg, a missing file, and a row with no lineage at all."""
    photos = small_world["photos"]
    rows = world_rows(photos)
    img = tmp_path / "img"
    img.mkdir()
    good = photos[0].path.read_bytes()
    (img / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (img / "text.jpg").write_text("not an image")
    extra = [
        dict(rows[0], path=str(photos[1].path), genus="", species="", scientificName=""),
        dict(rows[0], path=str(photos[2].path), species="unknownii", scientificName=""),
        dict(rows[0], path=str(img / "truncated.jpg")),
        dict(rows[0], path=str(img / "text.jpg")),
        dict(rows[0], path=str(img / "missing.jpg")),
        {**{c: "" for c in rows[0]}, "path": str(photos[3].path)},
    ]
    return write_table(rows + extra, tmp_path / "messy.parquet")


def test_bad_rows_are_counted_with_correct_denominators(
    cli, messy_table, small_world, tiny_ckpt, tmp_path
):
    labels = small_world["metadata"]  # the 6 real species: 'unknownii' is not among them
    code, out, err = cli(
        "eval",
        "-m",
        tiny_ckpt,
        "--data",
        messy_table,
        "--labels",
        labels,
        "--workers",
        "0",
        "--format",
        "json",
        "--summary",
        tmp_path / "summary.json",
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "summary.json").read_text())
    rec = {r["rank"]: r for r in json.loads(out)}
    # 30 good rows + 3 readable extra rows (blank genus, unknown species, no lineage)
    assert rec["kingdom"]["n_images"] == 32 and rec["kingdom"]["n_blank"] == 1
    assert rec["genus"]["n_images"] == 31 and rec["genus"]["n_blank"] == 2
    assert rec["species"]["n_images"] == 30
    assert rec["species"]["n_blank"] == 2 and rec["species"]["n_not_in_bank"] == 1
    assert rec["species"]["n_unreadable"] == 3
    assert doc["models"][0]["unreadable"] == {"truncated": 1, "not_image": 1, "missing": 1}
    assert "3 images unreadable, skipped" in err
    assert "with a species the label bank lacks" in err and "unknownii" in err
    assert "2 images without a species left out" in err


@pytest.mark.parametrize(
    "setup, args, code, message",
    [
        ("header_only", [], 1, "the table has no rows"),
        ("no_lineage", [], 1, "no species columns"),
        ("unreadable", [], 1, "all 2 images were unreadable"),
        ("good", ["--labels", "LABELS_TXT"], 2, "has no lineage"),
        ("good", ["--confusion", "genus"], 2, "expected RANK:FILE"),
        ("good", ["--ranks", "subspecies"], 2, "unknown taxonomic rank"),
        ("good", ["--templates", "nope"], 1, "not a template set or file"),
        ("good", ["--text-type", "latin"], 2, "unknown text type"),
        ("good", ["--format", "parquet"], 2, "needs a file"),
        ("no_images_dir", [], 2, "say where they are"),
    ],
)
def test_unusable_input_fails_clearly(
    cli, tmp_path, small_world, tiny_ckpt, setup, args, code, message
):
    rows = world_rows(small_world["photos"][:4])
    data = tmp_path / "t.csv"
    if setup == "header_only":
        data.write_text(",".join(rows[0]) + "\n")
    elif setup == "no_lineage":
        data.write_text("path,label\na.jpg,x\n")
    elif setup == "unreadable":
        (tmp_path / "a.jpg").write_text("x")
        data = tmp_path / "t.parquet"
        write_table(
            [
                dict(rows[0], path=str(tmp_path / "a.jpg")),
                dict(rows[1], path=str(tmp_path / "b.jpg")),
            ],
            data,
        )
    elif setup == "no_images_dir":
        data = small_world["metadata"]  # photo ids, no paths
    else:
        data = write_table(rows, tmp_path / "t.parquet")
    labels_txt = tmp_path / "labels.txt"
    labels_txt.write_text("Quercus alba\n")
    args = [str(labels_txt) if a == "LABELS_TXT" else a for a in args]
    got, out, err = cli("eval", "-m", tiny_ckpt, "--data", data, "--workers", "0", *args)
    assert got == code, err
    assert message in err and "Traceback" not in err
    assert out == ""


# -- output and reports ---------------------------------------------------------------------------
@pytest.mark.slow
def test_reports_tables_and_two_models_side_by_side(
    cli, small_world, tiny_ckpt, tiny_ckpt_b, tmp_path
):
    import pandas as pd

    base = [
        "eval",
        "-m",
        tiny_ckpt,
        "-m",
        tiny_ckpt_b,
        "--data",
        small_world["metadata"],
        "--images",
        small_world["images"],
        "--workers",
        "0",
        "--mode",
        "both",
    ]
    pc, cm = tmp_path / "pc.csv", tmp_path / "cm.csv"
    code, out, err = cli(*base, "--format", "csv", "--per-class", pc, "--confusion", f"genus:{cm}")
    assert code == 0, err
    df = pd.read_csv(__import__("io").StringIO(out))
    assert len(df) == 2 * 2 * 7  # models x modes x ranks
    assert set(df["model"]) == {tiny_ckpt.name, tiny_ckpt_b.name}
    assert set(df["mode"]) == {"rollup", "prompt"}
    for col in (
        "top1",
        "top1_ci_low",
        "top1_ci_high",
        "top5",
        "balanced_accuracy",
        "n_classes",
        "n_images",
        "n_blank",
        "n_not_in_bank",
    ):
        assert col in df.columns
    n_right = df.set_index(["model", "mode", "rank"])["n_correct_top1"]
    per_class = pd.read_csv(pc)
    sp = per_class[(per_class["rank"] == "species") & (per_class["mode"] == "rollup")]
    assert sp.groupby("model")["support"].sum().tolist() == [30, 30]
    confusion = pd.read_csv(cm)
    assert set(confusion["rank"]) == {"genus"}
    assert confusion.groupby(["model", "mode"])["count"].sum().tolist() == [30, 30, 30, 30]
    # the diagonal holds exactly the right top-1 predictions
    for (model, mode), cells in confusion.groupby(["model", "mode"]):
        diagonal = cells[cells["truth"] == cells["predicted"]]["count"].sum()
        assert diagonal == n_right[(model, mode, "genus")]
    # the human table: ranks as rows, a column group per model, the CI method named
    code, out, err = cli(*base, "--format", "table")
    assert code == 0
    assert "Wilson" in out and "top-1" in out and "shared" in out
    assert out.count("species") >= 2
    # JSON: a plain array of records; the summary file holds stable keys and provenance
    code, out, err = cli(*base, "--format", "json", "--summary", tmp_path / "summary.json")
    assert isinstance(json.loads(out), list)
    doc = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "biotrove_version",
        "data",
        "labels",
        "templates",
        "text_type",
        "ranks",
        "modes",
        "ci",
        "models",
    ):
        assert key in doc
    assert doc["ci"]["top1"] == "wilson"
    assert [m["spec"] for m in doc["models"]] == [str(tiny_ckpt), str(tiny_ckpt_b)]
    assert all(m["timings"]["images_per_s"] > 0 for m in doc["models"])


def test_plot_is_a_png(cli, small_world, tiny_ckpt, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "acc.png"
    code, _, err = cli(
        "eval",
        "-m",
        tiny_ckpt,
        "--data",
        small_world["metadata"],
        "--images",
        small_world["images"],
        "--workers",
        "0",
        "--plot",
        png,
        "-o",
        tmp_path / "r.csv",
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] > 300


def test_lifestages_benchmark_layout(cli, lifestages, tiny_ckpt, tmp_path):
    """The real Life-Stages CSV: ``path`` is '/lifestages/<id>.jpg', images live in --images."""
    import pandas as pd

    from biotrove_cli.core.data.world import render_jpeg
    from biotrove_cli.core.taxonomy.lineage import Taxon

    df = pd.read_csv(lifestages).groupby("scientificName").head(2)
    df.to_csv(tmp_path / "ls.csv", index=False)
    img = tmp_path / "photos"
    img.mkdir()
    for i, row in enumerate(df.to_dict("records")):
        taxon = Taxon.from_parts(*(row[c] for c in LINEAGE))
        (img / Path(row["path"]).name).write_bytes(render_jpeg(taxon, i, size=(80, 60)))
    code, out, err = cli(
        "eval",
        "-m",
        tiny_ckpt,
        "--data",
        tmp_path / "ls.csv",
        "--images",
        img,
        "--workers",
        "0",
        "--format",
        "json",
    )
    assert code == 0, err
    rec = {r["rank"]: r for r in json.loads(out)}
    assert rec["species"]["n_images"] == 10 and rec["species"]["n_classes"] == 5
    assert rec["species"]["n_unreadable"] == 0


# -- the text-embedding cache ---------------------------------------------------------------------
@pytest.mark.slow
def test_second_run_over_a_large_bank_hits_the_cache(
    cli, small_world, inat2021, tiny_ckpt, tmp_path
):
    import pandas as pd

    # 1,000 iNat2021 species plus the world's 6: a large bank, cheap enough for a test
    big = pd.read_csv(inat2021).head(1000)
    extra = pd.read_parquet(small_world["metadata"]).drop_duplicates("scientificName")
    extra = extra.rename(columns={"scientificName": "name", "species": "specific_epithet"})
    bank = pd.concat(
        [
            big,
            extra[
                [
                    "name",
                    "common_name",
                    "kingdom",
                    "phylum",
                    "class",
                    "order",
                    "family",
                    "genus",
                    "specific_epithet",
                ]
            ],
        ],
        ignore_index=True,
    )
    bank = bank.drop_duplicates("name")
    bank.to_csv(tmp_path / "bank.csv", index=False)
    args = [
        "eval",
        "-m",
        tiny_ckpt,
        "--data",
        small_world["metadata"],
        "--images",
        small_world["images"],
        "--labels",
        tmp_path / "bank.csv",
        "--workers",
        "0",
        "--ranks",
        "genus,species",
        "--format",
        "json",
        "--summary",
        tmp_path / "summary.json",
    ]

    def summary():
        return json.loads((tmp_path / "summary.json").read_text())

    runs = []
    for extra_args in ([], [], ["--no-cache"]):
        code, out, err = cli(*args, *extra_args)
        assert code == 0, err
        runs.append({**summary(), "records": json.loads(out)})
    cache = [r["models"][0]["text_cache"]["species"] for r in runs]
    assert cache == [False, True, False]
    assert runs[0]["labels"]["n_species"] == len(bank) > 1000
    assert runs[0]["records"] == runs[1]["records"]
    # a corrupt cache entry is rebuilt, not fatal
    from biotrove_cli.core.models import registry

    entries = list((registry.cache_dir() / "text").rglob("*.safetensors"))
    assert len(entries) == 1
    entries[0].write_bytes(b"garbage")
    code, out, err = cli(*args)
    assert code == 0 and summary()["models"][0]["text_cache"]["species"] is False
    assert "rebuilding" in err
    code, out, err = cli(*args)
    assert summary()["models"][0]["text_cache"]["species"] is True


# -- distributed ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_eval_reduces_to_the_single_process_numbers(tmp_path, small_world, tiny_ckpt):
    shards = write_shards(small_world["photos"], tmp_path / "shards", per_shard=4)
    args = [
        "eval",
        "-m",
        tiny_ckpt,
        "--data",
        shards,
        "--workers",
        "0",
        "--format",
        "json",
        "--mode",
        "both",
    ]
    s1, s2 = tmp_path / "s1.json", tmp_path / "s2.json"
    one = run_subprocess(*args, "--confusion", f"species:{tmp_path / 'c1.csv'}", "--summary", s1)
    two = run_subprocess(
        *args, "--nproc-per-node", "2", "--confusion", f"species:{tmp_path / 'c2.csv'}",
        "--summary", s2,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    d1, d2 = json.loads(s1.read_text()), json.loads(s2.read_text())
    assert d2["world_size"] == 2 and d1["world_size"] == 1

    def numbers(records):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]

    assert numbers(json.loads(one.stdout)) == numbers(json.loads(two.stdout))
    assert (tmp_path / "c1.csv").read_text() == (tmp_path / "c2.csv").read_text()


def test_trimmed_text_encoding_gives_the_same_embeddings(tiny_model, demo_bank):
    from biotrove_cli.core.evaluation.text import (
        class_prompts,
        encode_prompts,
        trimmed_text_encoder,
    )

    assert trimmed_text_encoder(tiny_model.model) is not None
    prompts = class_prompts(demo_bank, Rank.SPECIES, "taxon_com", ("a photo of {}.", "{}"))
    prompts += class_prompts(demo_bank, Rank.FAMILY, "sci", ("a photo of {}.",))
    full = encode_prompts(tiny_model, prompts, batch_size=16)
    fast = encode_prompts(tiny_model, prompts, batch_size=16, trim=True)
    assert fast.shape == full.shape
    assert (fast - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_shard_is_counted_once_not_fatal(tmp_path, small_world, tiny_ckpt, workers):
    shards = write_shards(small_world["photos"], tmp_path / "shards", per_shard=15)
    tar = shards / "val" / "shard-000001.tar"
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    result = evaluate(
        EvalConfig(models=[str(tiny_ckpt)], data=str(shards), workers=workers, ranks=[Rank.GENUS])
    )
    model = result.document["models"][0]
    assert model["n_unreadable"] == 0  # a short shard is not an unreadable image
    (problem,) = model["shard_problems"]  # once, whichever reader met it
    assert problem["shard"] == str(tar) and problem["kind"] == "truncated"
    assert problem["expected"] == 15 and problem["lost"] == 15 - problem["samples"] > 0
    rec = result.records[0]
    assert rec["n_images"] == 15 + problem["samples"]  # the whole first shard, part of the second
    assert any(n.startswith(f"{tar}: the shard ended early") for n in result.notes)
    from biotrove_cli.core.errors import InputError

    with pytest.raises(InputError, match="ended early"):
        evaluate(
            EvalConfig(models=[str(tiny_ckpt)], data=str(shards), workers=workers, strict=True)
        )


@pytest.mark.parametrize(
    "workers, device, params, cores, expected",
    [
        (3, "cpu", None, 2, 3),  # as given
        (None, "cuda", 86_000_000, 16, 15),  # the GPU outpaces decoding
        (None, "cpu", 86_000_000, 2, 0),  # a ViT-B on 2 cores: decode in-process
        (None, "cpu", 86_000_000, 16, 4),
        (None, "cpu", 400_000, 2, 1),  # a tiny tower is decode-bound
        (None, "cpu", 400_000, 16, 8),
    ],
)
def test_auto_workers(monkeypatch, workers, device, params, cores, expected):
    import torch

    from biotrove_cli.core.runtime import cpu_threads, resolve_workers

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    got = resolve_workers(workers, device, params)
    assert got == expected
    before = torch.get_num_threads()
    with cpu_threads(got, device):
        if device == "cpu" and got:
            assert torch.get_num_threads() == min(before, max(1, cores - got))
    assert torch.get_num_threads() == before
