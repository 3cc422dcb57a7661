"""BioTrove's evaluation suite through ``biotrove eval``: candidate sets (Confounding-Species),
name-style sweeps, VLHub/BioTrove metadata as published (cluster paths, --label-col, author
citations), image folders, and the plots."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from biotrove_cli.core.evaluation.candidates import CandidateTally
from biotrove_cli.core.evaluation.config import EvalConfig
from biotrove_cli.core.evaluation.engine import evaluate
from biotrove_cli.core.evaluation.labels import NameClasses, looks_scientific, norm_name
from biotrove_cli.core.evaluation.tables import MISSING, PathResolver
from biotrove_cli.core.evaluation.zeroshot import Mode
from biotrove_cli.core.taxonomy.lineage import Taxon
from tests.conftest import DEMO_SPECIES, REPO

CONFOUNDING = REPO / "tests" / "data" / "confounding_species_sample.csv"
Z = 1.959963984540054


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_pt(tmp_path_factory, tiny_model):
    """The seeded tiny model as a checkpoint file."""
    import torch

    path = tmp_path_factory.mktemp("suite-ckpt") / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), path)
    return path


def wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval, written out from its textbook formula."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def photo_for(name: str, index: int, lineage: Taxon | None = None) -> bytes:
    from biotrove_cli.core.data.world import render_jpeg

    return render_jpeg(lineage or Taxon.from_parts(scientific_name=name), index, size=(80, 64))


@pytest.fixture(scope="session")
def confounding(tmp_path_factory):
    """The Confounding-Species stand-in with its photos under ROOT/Confounding/<folder>/, as
    the benchmark's image archive unpacks; one photo is missing."""
    root = tmp_path_factory.mktemp("confounding")
    rows = list(csv.DictReader(open(CONFOUNDING, newline="")))
    for i, r in enumerate(rows):
        p = Path(r["path"])
        if i == 3:
            continue
        dst = root / "Confounding" / p.parent.name / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(photo_for(r["scientific_name"], i))
    return {"root": root, "rows": rows, "missing": rows[3]["path"]}


# -- the candidate-set oracle -------------------------------------------------------------------
def test_candidate_tally_against_hand_computed_figures():
    """Two groups, logits chosen by hand: per-group and overall top-1, chance and CIs."""
    import torch

    # classes: 0 A, 1 B, 2 C; group 0 = photos 0-2, group 1 = photos 3-5
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # options A,B: predicts A, truth A -> right
            [0.2, 0.8, 0.0],  # options A,B: predicts B, truth A -> wrong
            [0.1, 0.3, 0.9],  # options A,B,C: predicts C, truth C -> right
            [0.0, 0.6, 0.5],  # options B,C: predicts B, truth B -> right
            [0.9, 0.2, 0.1],  # options B,C: A is not a candidate, predicts B, truth B -> right
            [0.5, 0.5, 0.5],  # truth not among candidates: left out
        ]
    )
    truth = np.array([0, 0, 2, 1, 1, MISSING])
    options = [(0, 1), (0, 1), (0, 1, 2), (1, 2), (1, 2), (1, 2)]
    tally = CandidateTally(groups=["g1", "g2"])
    tally.update(logits, truth, options, np.array([0, 0, 0, 1, 1, 1]), ["a"] * 6, ["A", "B", "C"])
    rows = {r["scope"] + r["group"]: r for r in tally.metrics()}
    g1, g2, macro, micro = rows["groupg1"], rows["groupg2"], rows["macro"], rows["micro"]
    assert (g1["n_images"], g1["n_correct_top1"], g1["top1"]) == (3, 2, pytest.approx(2 / 3))
    assert g1["chance"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
    # Wilson 2/3: centre (2/3 + 1.9208/3) / (1 + 3.8415/3) = 0.5731, half 0.3654
    assert g1["top1_ci_low"] == pytest.approx(0.2077, abs=1e-4)
    assert g1["top1_ci_high"] == pytest.approx(0.9385, abs=1e-4)
    assert (g2["n_images"], g2["top1"], g2["chance"]) == (2, 1.0, 0.5)
    assert g2["n_not_in_candidates"] == 1 and g2["top1_ci_high"] == 1.0
    assert g2["top1_ci_low"] == pytest.approx(0.3424, abs=1e-4)  # Wilson 2/2
    assert micro["top1"] == pytest.approx(4 / 5) and micro["chance"] == pytest.approx(
        (1 / 2 + 1 / 2 + 1 / 3 + 1 / 2 + 1 / 2) / 5
    )
    assert (micro["top1_ci_low"], micro["top1_ci_high"]) == pytest.approx(wilson(4, 5))
    assert macro["top1"] == pytest.approx((2 / 3 + 1) / 2)
    assert macro["chance"] == pytest.approx((g1["chance"] + 0.5) / 2)
    # macro CI: normal, variance sum s(1-s)/n / G^2 with s = (k+1)/(n+2)
    s1, s2 = 3 / 5, 3 / 4
    half = Z * math.sqrt((s1 * (1 - s1) / 3 + s2 * (1 - s2) / 2) / 4)
    assert macro["top1_ci_low"] == pytest.approx(macro["top1"] - half)
    assert macro["top1_ci_high"] == pytest.approx(min(1.0, macro["top1"] + half))
    assert tally.not_in_candidates_examples == ["'a' not in B / C"]


def reference_candidates(ckpt: Path, photos: list[tuple[Path, list[str], str]]) -> list[bool]:
    """Whether each photo's true name scores highest among its own candidates, computed apart
    from the engine: PIL, the model's own encoders, 'a photo of {name}.' per candidate."""
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageOps

    from biotrove_cli.core.models.load import load_model

    loaded = load_model(str(ckpt))
    model, pre, tok = loaded.model, loaded.preprocess, loaded.tokenizer
    out = []
    with torch.no_grad():
        for path, options, truth in photos:
            with Image.open(path) as im:
                img = ImageOps.exif_transpose(im).convert("RGB")
            f = F.normalize(model.encode_image(pre(img)[None]), dim=-1)[0]
            t = F.normalize(model.encode_text(tok([f"a photo of {o}." for o in options])), dim=-1)
            out.append(options[int((t @ f).argmax())] == truth)
    return out


def test_confounding_per_pair_accuracy_chance_and_cis(confounding, tiny_pt):
    """The Confounding-Species layout end to end: cluster paths resolved under --images, each
    photo scored among its own two names, the misspelt Harmonia photos reported, not scored."""
    cfg = EvalConfig(
        models=[str(tiny_pt)],
        data=str(CONFOUNDING),
        images=str(confounding["root"]),
        candidates="class_options",
        group_by="pair",
        text_type="sci",
        workers=0,
        batch_size=7,
    )
    result = evaluate(cfg)
    scored = []
    for r in confounding["rows"]:
        options = r["class_options"].split("!")
        if r["path"] == confounding["missing"] or r["scientific_name"] not in options:
            continue
        p = Path(r["path"])
        scored.append((r["pair"], confounding["root"] / "Confounding" / p.parent.name / p.name))
        scored[-1] += (options, r["scientific_name"])
    right = reference_candidates(tiny_pt, [s[1:] for s in scored])
    got = {(r["scope"], r["group"]): r for r in result.records}
    assert [k for k in got if k[0] == "group"] == [("group", f"C{i}") for i in range(1, 6)]
    for pair in ("C1", "C2", "C3", "C4", "C5"):
        hits = [ok for s, ok in zip(scored, right, strict=True) if s[0] == pair]
        rec = got[("group", pair)]
        assert rec["n_images"] == len(hits) and rec["n_correct_top1"] == sum(hits)
        assert rec["chance"] == 0.5
        lo, hi = wilson(sum(hits), len(hits))
        assert (rec["top1_ci_low"], rec["top1_ci_high"]) == pytest.approx((lo, hi), abs=1e-6)
        assert rec["text_type"] == "sci"
    # C1 lost its missing photo; C2's two "Harmonia axyridies" photos match no candidate
    assert got[("group", "C1")]["n_images"] == 3
    assert got[("group", "C2")]["n_images"] == 2
    assert got[("group", "C2")]["n_not_in_candidates"] == 2
    micro = got[("micro", "")]
    assert micro["n_images"] == 17 and micro["n_correct_top1"] == sum(right)
    assert micro["n_unreadable"] == 1 and micro["n_not_in_candidates"] == 2
    macro = got[("macro", "")]
    per_pair = [got[("group", f"C{i}")]["top1"] for i in range(1, 6)]
    assert macro["top1"] == pytest.approx(np.mean(per_pair), abs=1e-6)
    # how the cluster paths were found, and the misspelling, are both said
    paths = result.document["paths"]
    assert paths["by_suffix"] == 19 and paths["not_found"] == 1
    assert list(paths["dropped_prefixes"]) == [
        "/scratch/bf996/bioclip/bioclip-main/data/confounding"
    ]
    assert any("Harmonia axyridies" in n and "not in" in n for n in result.notes)
    assert any("19 by the longest suffix" in line for line in result.info)


def test_names_match_exactly_or_by_an_unambiguous_binomial():
    names = NameClasses.from_names(["Harmonia axyridis", "Amanita excelsa", "Amanita muscaria"])
    assert names.scientific
    assert names.index("  harmonia   AXYRIDIS ") == 0
    assert names.index("Harmonia axyridies") == -1  # a misspelling is another name
    assert names.index("Amanita excelsa Gonn. & Rabenh.") == 1  # author citation
    assert names.index("Amanita excelsa Gonn. & Rabenh.", among=(0, 2)) == -1
    two = NameClasses.from_names(["Amanita muscaria (L.) Lam.", "Amanita muscaria Fr."])
    assert len(two) == 2 and two.index("Amanita muscaria") == -1  # ambiguous binomial
    assert not NameClasses.from_names(["Chinee apple", "Negative"]).scientific
    assert looks_scientific("Mycena galopus (Pers.) P.Kumm., 1871")
    assert not looks_scientific("white backed plant hopper")
    assert norm_name("North  American Luna Moth ") == "north american luna moth"


# -- a model that can tell its pairs apart ------------------------------------------------------
PAIRS = (
    ("P1", "Sturnus vulgaris", "Vespula vulgaris"),
    ("P2", "Turdus amaurochalinus", "Bombus auricomus"),
    ("P3", "Anaxyrus americanus", "Papilio aegeus"),
    ("P4", "Quercus alba", "Pinus banksiana"),
    ("P5", "Sceloporus clarkii", "Aphonopelma johnnycashi"),
)


def train_on_pairs(photos, out: Path, steps: int = 30) -> Path:
    """A few dozen CLIP steps (symmetric contrastive loss, same-species targets shared) of the
    tiny architecture on the photos and their 'a photo of {sci}.' captions."""
    import torch
    import torch.nn.functional as F

    from biotrove_cli.core.data.images import decode
    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(0)
    loaded = load_model("biotrove-tiny:random")
    model, pre, tok = loaded.model, loaded.preprocess, loaded.tokenizer
    images = torch.stack([pre(decode(p.path.read_bytes()).image) for p in photos])
    texts = tok([f"a photo of {p.taxon.sci}." for p in photos])
    names = sorted({p.taxon.sci for p in photos})
    labels = torch.tensor([names.index(p.taxon.sci) for p in photos])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(photos), generator=gen)[:20]
        im = F.normalize(model.encode_image(images[idx]), dim=-1)
        tx = F.normalize(model.encode_text(texts[idx]), dim=-1)
        logits = model.logit_scale.exp() * im @ tx.T
        same = (labels[idx][:, None] == labels[idx][None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = -(target * logits.log_softmax(1)).sum(1).mean()
        loss = (loss - (target * logits.log_softmax(0)).sum(0).mean()) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = out / "pairs.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.slow
def test_a_model_that_tells_its_pairs_apart_scores_clearly_above_chance(cli, tmp_path, demo_bank):
    """Trained on five look-alike pairs, the model must score well above the coin flip when
    each photo is scored against its own candidates, whatever the candidates' order (the true
    name is first for one species of a pair and second for the other, as in the published
    file); with every label swapped to the pair's other name it must score well below."""
    from biotrove_cli.core.data.world import generate_world

    taxa = {t.binomial: t for t in demo_bank.taxa}
    photos = []
    for pair, a, b in PAIRS:
        for name in (a, b):
            folder = tmp_path / "img" / "Confounding" / f"{pair}_{name.replace(' ', '_')}"
            photos += generate_world([taxa[name]], folder, 6, seed=7, size=(80, 64))
    ckpt = train_on_pairs(photos, tmp_path)
    other = {a: b for _, a, b in PAIRS} | {b: a for _, a, b in PAIRS}
    pair_of = {n: (p, f"{a}!{b}") for p, a, b in PAIRS for n in (a, b)}

    def table(name: str, swap: bool) -> Path:
        path = tmp_path / name
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "pair", "scientific_name", "class_options", "idx"])
            for i, p in enumerate(photos):
                sci = p.taxon.sci
                cluster = f"/scratch/x/Confounding/{p.path.parent.name}/{p.path.name}"
                pair, options = pair_of[sci]
                w.writerow([cluster, pair, other[sci] if swap else sci, options, i % 10])
        return path

    runs = {}
    for swap in (False, True):
        code, out, err = cli(
            "eval", "-m", ckpt, "--data", table(f"pairs-{swap}.csv", swap),
            "--images", tmp_path / "img", "--candidates", "class_options",
            "--group-by", "pair", "--text-type", "sci", "--workers", "0", "--format", "csv",
        )  # fmt: skip
        assert code == 0, err
        runs[swap] = {r["scope"] + r["group"]: r for r in read_csv_text(out)}
    right, swapped = runs[False]["micro"], runs[True]["micro"]
    assert int(right["n_images"]) == 60 and float(right["chance"]) == 0.5
    assert float(right["top1_ci_low"]) > 0.5, right  # clearly above the coin flip
    assert float(swapped["top1_ci_high"]) < 0.5, swapped  # and its mirror image below it
    assert float(right["top1"]) + float(swapped["top1"]) == pytest.approx(1.0)


# -- name-style sweeps -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sweep_equals_separate_single_type_runs(small_world, tiny_pt, monkeypatch):
    from biotrove_cli.core.evaluation import zeroshot

    calls = []
    original = zeroshot.ImageEncoder.__call__
    monkeypatch.setattr(
        zeroshot.ImageEncoder, "__call__", lambda self, x: calls.append(len(x)) or original(self, x)
    )
    common = dict(
        models=[str(tiny_pt)],
        data=str(small_world["metadata"]),
        images=str(small_world["images"]),
        modes=[Mode.ROLLUP, Mode.PROMPT],
        workers=0,
        batch_size=8,
        use_cache=False,
    )
    sweep = evaluate(EvalConfig(text_type="all", **common))
    sweep_calls = list(calls)
    assert sum(sweep_calls) == 30  # the images were encoded once for all five types
    types = ["sci", "com", "taxon", "sci_com", "taxon_com"]
    assert sweep.document["text_types"] == types
    assert {m.text_type for m in sweep.models} == set(types)
    for text_type in types:
        calls.clear()
        single = evaluate(EvalConfig(text_type=text_type, **common))
        assert calls == sweep_calls
        mine = [r for r in sweep.records if r["text_type"] == text_type]
        assert mine == single.records
        assert len(mine) == 2 * 7  # modes x ranks
    # the species texts differ by type, so the results do too
    per_type = {t: tuple(r["top5"] for r in sweep.records if r["text_type"] == t) for t in types}
    assert len(set(per_type.values())) > 1


def test_common_names_fall_back_as_the_captions_do(tmp_path, tiny_pt):
    """A species without a common name gets the same class text as its shard caption."""
    from biotrove_cli.core.evaluation.text import class_prompts
    from biotrove_cli.core.taxonomy.captions import build_caption
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import Rank

    bare = Taxon.from_parts("Animalia", "", "", "", "", "Turdus", "chiguanco")
    bank = LabelBank.from_taxa([bare])
    for text_type in ("com", "sci_com", "taxon_com"):
        [[prompt]] = class_prompts(bank, Rank.SPECIES, text_type, ("a photo of {}.",))
        assert prompt == build_caption(bare, text_type)
    names = NameClasses.from_names(["Turdus chiguanco"])
    assert names.prompts("taxon_com", ("a photo of {}.",)) == [
        [build_caption(Taxon.from_parts(scientific_name="Turdus chiguanco"), "taxon_com")]
    ]


def test_sweep_table_groups_by_model_and_names_its_templates(cli, small_world, tiny_pt, tmp_path):
    import torch

    from biotrove_cli.core.models.load import load_model

    torch.manual_seed(5)
    other = tmp_path / "other.pt"
    torch.save(load_model("biotrove-tiny:random").model.state_dict(), other)
    templates = tmp_path / "mine.txt"
    templates.write_text("a photo of {}.\na picture of a {}.\n")
    base = ("eval", "-m", tiny_pt, "-m", other, "--data", small_world["metadata"], "--images",
            small_world["images"], "--workers", "0", "--text-type", "sci,com",
            "--templates", templates, "--ranks", "genus,species")  # fmt: skip
    code, out, err = cli(*base, "--format", "table")
    assert code == 0, err
    assert "by text type" in out and "templates mine.txt (2)" in out
    lines = out.splitlines()
    assert any(ln.strip("│ ").startswith("tiny.pt") and "sci" in ln for ln in lines)
    assert any(ln.strip("│ ").startswith("other.pt") and "sci" in ln for ln in lines)
    code, out, err = cli(*base, "--format", "csv")
    rows = read_csv_text(out)
    assert [(r["model"], r["text_type"], r["rank"]) for r in rows] == [
        (m, t, r) for m in ("tiny.pt", "other.pt") for t in ("sci", "com")
        for r in ("genus", "species")
    ]  # fmt: skip
    code, _, err = cli(*base[:-6], "--text-type", "sci,latin")
    assert code == 2 and "unknown text type 'latin'" in err


# -- metadata as BioTrove and VLHub ship it ----------------------------------------------------
def test_paths_resolve_as_the_longest_existing_suffix(tmp_path):
    root = tmp_path / "images"
    (root / "Aves").mkdir(parents=True)
    (root / "Aves" / "1.jpg").write_bytes(b"x")
    (root / "arboretum_rare_combined" / "Aves").mkdir(parents=True)
    (root / "arboretum_rare_combined" / "Aves" / "2.jpg").write_bytes(b"x")
    (root / "2.jpg").write_bytes(b"x")  # a shorter suffix also exists: the longer one wins
    (root / "Amanita excelsa Gonn. & Rabenh.").mkdir()
    (root / "Amanita excelsa Gonn. & Rabenh." / "3.JPG").write_bytes(b"x")
    (tmp_path / "beside.jpg").write_bytes(b"x")
    r = PathResolver(root, tmp_path)
    assert r.resolve("/arboretum_rare_combined/Aves/1.jpg") == str(root / "Aves" / "1.jpg")
    assert r.resolve("/work/x/arboretum_rare_combined/Aves/2.jpg") == str(
        root / "arboretum_rare_combined" / "Aves" / "2.jpg"
    )
    assert r.resolve("Amanita excelsa Gonn. & Rabenh./3.JPG") == str(
        root / "Amanita excelsa Gonn. & Rabenh." / "3.JPG"
    )
    assert r.resolve("beside.jpg") == str(tmp_path / "beside.jpg")
    assert r.resolve("/nowhere/9.jpg") is None
    s = r.summary()
    assert (s["by_suffix"], s["under_images"], s["beside_table"], s["not_found"]) == (2, 1, 1, 1)
    assert s["dropped_prefixes"] == {"/arboretum_rare_combined": 1, "/work/x": 1}
    assert s["not_found_examples"] == ["/nowhere/9.jpg"]


LINEAGE = ("kingdom", "phylum", "cls", "order", "family", "genus", "species")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_label_col_on_vlhub_tables(tmp_path, tiny_pt, small_world):
    """BioCLIP-Rare (a 'cls' rank and a 'class' label), Life-Stages (class_out: a level of its
    own beside the lineage ranks) and DeepWeeds (free names, no lineage: the label level
    alone), each with absolute cluster paths."""
    photos = small_world["photos"]
    img = small_world["images"]
    rare = [
        [i, *p.taxon.names[:6], p.taxon.epithet, p.taxon.common_name,
         f"/scratch/bf996/rare/{p.path.name}", p.taxon.binomial]
        for i, p in enumerate(photos)
    ]  # fmt: skip
    rare_csv = write_csv(
        tmp_path / "rare.csv", ["", *LINEAGE, "common_name", "filepath", "class"], rare
    )
    common = dict(models=[str(tiny_pt)], images=str(img), workers=0)
    got = evaluate(EvalConfig(data=str(rare_csv), label_col="class", **common))
    ranks = {r["rank"]: r for r in got.records}
    assert list(ranks) == ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    # the class rank is 'cls', not the species label in 'class'
    assert ranks["class"]["n_classes"] == len({p.taxon.names[2] for p in photos})
    assert ranks["species"]["n_classes"] == len({p.taxon.binomial for p in photos})
    assert got.document["label_kind"] == "scientific"
    # the same table without --label-col: cls is still the class rank
    plain = evaluate(EvalConfig(data=str(rare_csv), **common))
    assert [r["n_classes"] for r in plain.records] == [r["n_classes"] for r in got.records]
    # a BioTrove-schema table keeps its schema when its own name column is the label
    biotrove = dict(data=str(small_world["metadata"]), **common)
    named = evaluate(EvalConfig(label_col="scientificName", **biotrove))
    assert named.records == evaluate(EvalConfig(**biotrove)).records

    stages = ["Adult", "Larva"]
    ls = [
        [p.photo_id, p.taxon.sci, *p.taxon.names[:6], p.taxon.epithet, p.taxon.common_name,
         stages[i % 2], f"/lifestages/{p.path.name}", f"{p.taxon.common_name} {stages[i % 2]}"]
        for i, p in enumerate(photos)
    ]  # fmt: skip
    header = ["inat21_filename", "scientificName", *LINEAGE[:2], "class", *LINEAGE[3:],
              "common_name", "life_stages", "path", "class_out"]  # fmt: skip
    ls_csv = write_csv(tmp_path / "ls.csv", header, ls)
    got = evaluate(EvalConfig(data=str(ls_csv), label_col="class_out", **common))
    levels = {r["rank"]: r for r in got.records}
    assert list(levels)[-2:] == ["species", "label"]
    assert levels["label"]["n_classes"] == len({row[-1] for row in ls}) == 12  # 6 x 2 stages
    assert levels["label"]["n_images"] == levels["species"]["n_images"] == 30
    assert got.document["label_kind"] == "free" and got.document["n_label_classes"] == 12
    assert any("class_out: 12 class names" in line for line in got.info)

    weeds = [[p.path.name, i % 3, ("Chinee apple", "Lantana", "Negative")[i % 3],
              f"/deepweeds/images/{p.path.name}"] for i, p in enumerate(photos)]  # fmt: skip
    dw_csv = write_csv(tmp_path / "dw.csv", ["Filename", "Label", "Species", "path"], weeds)
    got = evaluate(EvalConfig(data=str(dw_csv), label_col="Species", **common))
    assert [r["rank"] for r in got.records] == ["label"]
    assert got.records[0]["n_classes"] == 3 and got.records[0]["n_images"] == 30
    assert got.dataset.names.prompts("sci", ("a photo of {}.",))[2] == ["a photo of Negative."]
    # top-1 among the three names, as written, against an independent computation
    weed_names = ["Chinee apple", "Lantana", "Negative"]
    right = reference_candidates(
        tiny_pt, [(p.path, weed_names, w[2]) for p, w in zip(photos, weeds, strict=True)]
    )
    assert got.records[0]["n_correct_top1"] == sum(right)


def test_author_citations_match_their_binomial(cli, tmp_path, tiny_pt, demo_bank):
    """Fungi as VLHub ships it ('Amanita augusta Gonn. & Rabenh.' in a 'class' column, no
    lineage): species alone by default; with --labels, the lineage of the matching binomial
    gives every rank."""
    names = {"Amanita augusta": "Amanita augusta Gonn. & Rabenh.",
             "Amanita bisporigera": "Amanita bisporigera G.F.Atk.",
             "Cantharellus californicus": "Cantharellus californicus D.Arora & Dunham"}  # fmt: skip
    rows = []
    for binomial, cited in names.items():
        folder = tmp_path / "DF20M" / cited
        folder.mkdir(parents=True)
        for i in range(2):
            taxon = next(t for t in demo_bank.taxa if t.binomial == binomial)
            (folder / f"{i}.JPG").write_bytes(photo_for(binomial, i, taxon))
            rows.append([len(rows), f"{cited}/{i}.JPG", cited])
    fungi = write_csv(tmp_path / "fungi_metadata.csv", ["", "filepath", "class"], rows)
    base = ("eval", "-m", tiny_pt, "--data", fungi, "--images", tmp_path / "DF20M",
            "--label-col", "class", "--workers", "0", "--format", "csv")  # fmt: skip
    code, out, err = cli(*base)
    assert code == 0, err
    recs = read_csv_text(out)
    assert [r["rank"] for r in recs] == ["species"] and recs[0]["n_classes"] == "3"
    code, out, err = cli(*base, "--labels", DEMO_SPECIES)
    assert code == 0, err
    recs = {r["rank"]: r for r in read_csv_text(out)}
    assert len(recs) == 7 and recs["species"]["n_images"] == "6"
    assert recs["species"]["n_not_in_bank"] == "0" and recs["kingdom"]["n_classes"] == "3"
    # without --label-col the table has no species column: the hint names the flag
    code, out, err = cli(*base[:7], "--workers", "0")
    assert code == 1 and "--label-col" in err and "Traceback" not in err


def test_image_folder_equals_the_same_photos_as_a_table(tmp_path, tiny_pt, small_world):
    photos = small_world["photos"]
    root = tmp_path / "folder"
    for p in photos:
        dst = root / p.taxon.binomial.replace(" ", "_") / p.path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(p.path.read_bytes())
    (root / "notes.txt").write_text("not a class")
    common = dict(models=[str(tiny_pt)], workers=0, batch_size=5)
    folder = evaluate(EvalConfig(data=str(root), **common))
    assert folder.document["kind"] == "folder" and folder.document["n_samples"] == 30
    rows = [[p.path.name, p.taxon.binomial] for p in photos]
    table = write_csv(tmp_path / "t.csv", ["path", "label"], rows)
    as_table = evaluate(
        EvalConfig(data=str(table), images=str(small_world["images"]), label_col="label", **common)
    )
    strip = ("model_spec",)
    a = [{k: v for k, v in r.items() if k not in strip} for r in folder.records]
    b = [{k: v for k, v in r.items() if k not in strip} for r in as_table.records]
    assert a == b and [r["rank"] for r in a] == ["species"] and a[0]["n_images"] == 30


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--group-by", "pair"], 2, "--group-by groups candidate-set results"),
        (["--candidates", "options"], 1, "--candidates options: no such column"),
        (["--candidates", "class_options", "--ranks", "species"], 2, "--ranks does not apply"),
        (["--label-col", "nope"], 1, "--label-col nope: no such column"),
    ],
)
def test_bad_suite_flags_fail_clearly(cli, tiny_pt, confounding, args, code, message):
    got, out, err = cli(
        "eval", "-m", tiny_pt, "--data", CONFOUNDING, "--images", confounding["root"],
        "--workers", "0", *args,
    )  # fmt: skip
    assert got == code, err
    assert message in err and "Traceback" not in err and out == ""


def test_candidates_need_a_table(cli, tiny_pt, small_world):
    code, out, err = cli(
        "eval", "-m", tiny_pt, "--data", small_world["images"], "--candidates", "x"
    )  # fmt: skip
    assert code == 2 and "is not a table" in err


# -- tables and plots ------------------------------------------------------------------------
def test_candidate_table_and_plot(cli, confounding, tiny_pt, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "confounding.png"
    code, out, err = cli(
        "eval", "-m", tiny_pt, "--data", CONFOUNDING, "--images", confounding["root"],
        "--candidates", "class_options", "--group-by", "pair", "--workers", "0",
        "--text-type", "sci,taxon", "--format", "table", "--plot", png,
    )  # fmt: skip
    assert code == 0, err
    assert "Candidate-set top-1" in out and "chance" in out and "tiny.pt (taxon)" in out
    rows = [ln.split("│")[1].strip() for ln in out.splitlines() if ln.startswith("│")]
    assert [r for r in rows if r] == ["C1", "C2", "C3", "C4", "C5", "macro", "micro"]
    assert "by the longest suffix" in err and "Harmonia axyridies" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = Path("/tmp") / "biotrove-h16-plots"
    if keep.is_dir():  # a developer's look at the pictures
        (keep / png.name).write_bytes(png.read_bytes())


def test_rank_and_sweep_plots(small_world, tiny_pt, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    common = dict(
        models=[str(tiny_pt)],
        data=str(small_world["metadata"]),
        images=str(small_world["images"]),
        workers=0,
    )
    for name, extra in (("ranks.png", {}), ("sweep.png", {"text_type": "sci,com,taxon"})):
        png = tmp_path / name
        result = evaluate(EvalConfig(plot=str(png), **common, **extra))
        assert result.files["plot"] == str(png)
        with Image.open(png) as im:
            assert im.size[0] > 600 and im.size[1] > 300
        keep = Path("/tmp") / "biotrove-h16-plots"
        if keep.is_dir():
            (keep / name).write_bytes(png.read_bytes())


def test_records_carry_text_type_and_chance(cli, small_world, tiny_pt):
    code, out, err = cli(
        "eval", "-m", tiny_pt, "--data", small_world["metadata"], "--images",
        small_world["images"], "--workers", "0", "--format", "jsonl", "--ranks", "genus,species",
    )  # fmt: skip
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["text_type"] for r in recs] == ["taxon_com"] * 2
    assert all(r["chance"] == pytest.approx(1 / r["n_classes"], abs=1e-6) for r in recs)
