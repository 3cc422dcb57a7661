"""The Python API: light to import, the same engine as the commands (the same records), images
as paths, PIL images or numpy arrays, records with .to_pandas(), a tqdm progress bar that can be
turned off, and BiotroveError subclasses instead of exits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from biotrove_cli.core.taxonomy.rank import RANKS
from tests.conftest import REPO


def test_import_is_light_and_the_api_is_there():
    code = (
        "import sys\n"
        "import biotrove_cli\n"
        "from biotrove_cli import BiotroveError, Classifier, Records, embed, evaluate, load_model\n"
        "print(','.join(m for m in ('torch', 'open_clip', 'torchvision', 'pyarrow') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.fixture(scope="module")
def field_photos(tmp_path_factory, small_world):
    """Three PNG photos of the small world and a broken one."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("api") / "photos"
    folder.mkdir()
    for i, p in enumerate(small_world["photos"][::10]):
        with Image.open(p.path) as im:
            im.convert("RGB").save(folder / f"p{i}.png")
    (folder / "q-broken.png").write_text("no pixels here")
    return folder


def test_classifier_takes_paths_pil_images_and_arrays_like_the_cli(
    cli, field_photos, tiny_bundle, capsys
):
    from PIL import Image

    from biotrove_cli import Classifier, Records

    clf = Classifier(str(tiny_bundle), device="cpu", progress=False)
    assert len(clf.labels) == 33 and clf.model.kind == "bundle"
    records = clf.predict(field_photos, rank="genus", k=2)
    assert isinstance(records, Records) and len(records) == 3 * 2 + 1
    # the CLI gives the very same rows (one engine)
    code, out, err = cli(
        "classify", "-m", tiny_bundle, field_photos, "--rank", "genus", "-k", "2",
        "--workers", "0", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == [dict(r) for r in records]
    broken = [r for r in records if r["error"] is not None]
    assert len(broken) == 1 and broken[0]["path"].endswith("q-broken.png")
    df = records.to_pandas()
    assert list(df.columns)[:4] == ["path", "rank", "prediction", "name"] and len(df) == 7
    assert records.summary["n_classified"] == 3 and records.summary["n_errors"] == 1
    # a PIL image and a numpy array of the same pixels: the same predictions
    path = field_photos / "p0.png"
    pil = Image.open(path)  # an opened image is named by its file
    pil.load()
    array = np.asarray(pil.convert("RGB"))
    by_path = [r for r in records if r["path"] == str(path)]
    for image, key in ((pil, str(path)), (array, "image[0]")):
        got = clf.predict(image, rank="genus", k=2)
        assert [r["path"] for r in got] == [key, key]
        assert [(r["name"], r["score"]) for r in got] == [(r["name"], r["score"]) for r in by_path]
    batch = clf.predict(np.stack([array, array]), rank="genus", k=1)  # N x H x W x C
    assert [r["path"] for r in batch] == ["image[0]", "image[1]"]
    # --min-confidence and another rank without reloading anything
    one = clf.predict([path], min_confidence=0.01)
    assert len(one) == 1 and one[0]["rank"] in [r.value for r in RANKS]
    assert capsys.readouterr().err == ""  # progress=False: nothing on stderr


def test_errors_are_biotrove_errors_not_exits(tiny_bundle, tmp_path):
    from biotrove_cli import BiotroveError, Classifier
    from biotrove_cli.core.errors import InputError, UsageError

    with pytest.raises(InputError, match="no such file"):
        Classifier(str(tmp_path / "missing.pt"), device="cpu")
    with pytest.raises(BiotroveError) as info:
        Classifier(str(tiny_bundle), labels="no-such-bank", device="cpu")
    assert "inat2021, demo" in (info.value.hint or "")
    clf = Classifier(str(tiny_bundle), device="cpu", progress=False)
    with pytest.raises(UsageError, match="-k must be at least 1"):
        clf.predict(tmp_path, k=0)
    with pytest.raises(UsageError, match="unknown taxonomic rank"):
        clf.predict(tmp_path, rank="tribe")
    with pytest.raises(InputError, match="no images in this folder"):
        clf.predict(tmp_path)
    (tmp_path / "bad.jpg").write_text("x")
    with pytest.raises(InputError, match="unreadable image"):
        clf.predict(tmp_path / "bad.jpg", strict=True)


def test_progress_is_a_tqdm_bar_unless_turned_off(field_photos, tiny_bundle, capsys):
    from biotrove_cli import Classifier

    clf = Classifier(str(tiny_bundle), device="cpu")
    capsys.readouterr()
    clf.predict(field_photos / "p0.png")
    assert "classify" in capsys.readouterr().err  # tqdm writes its bar to stderr
    clf.predict(field_photos / "p0.png", progress=False)
    assert capsys.readouterr().err == ""


def test_embed_and_load_model(cli, field_photos, tiny_bundle, tmp_path):
    import pyarrow.parquet as pq

    from biotrove_cli import embed, load_model

    records = embed(field_photos, model=str(tiny_bundle), device="cpu", progress=False)
    assert records.embeddings().shape == (3, 64) and records.summary["n_errors"] == 1
    assert isinstance(records[0]["embedding"], np.ndarray)
    out = tmp_path / "e.parquet"
    assert cli("embed", "-m", tiny_bundle, field_photos, "--workers", "0", "-o", out)[0] == 0
    table = pq.read_table(out).to_pylist()
    assert [r["path"] for r in table] == [r["path"] for r in records]
    cli_vectors = np.array([r["embedding"] for r in table if r["embedding"] is not None])
    assert np.abs(cli_vectors - records.embeddings()).max() <= 1e-6
    texts = embed(model=str(tiny_bundle), text=True, labels="demo", device="cpu")
    assert len(texts) == 33 and texts.embeddings().shape == (33, 64)
    loaded = load_model(str(tiny_bundle), device="auto")
    assert loaded.kind == "bundle" and loaded.labels is not None


def test_evaluate_gives_the_records_of_biotrove_eval(cli, small_world, tiny_bundle, tmp_path):
    from biotrove_cli import evaluate

    table = tmp_path / "photos.csv"
    rows = []
    for p in small_world["photos"]:
        names = dict(zip([r.value for r in RANKS], p.taxon.names, strict=True))
        rows.append({"path": str(p.path), **names, "scientificName": p.taxon.scientific_name})
    pd.DataFrame(rows).to_csv(table, index=False)
    records = evaluate(
        table, model=str(tiny_bundle), ranks="genus,species", workers=0, progress=False
    )
    assert [r["rank"] for r in records] == ["genus", "species"]
    assert records.summary["models"][0]["n_images"] == 30
    code, out, err = cli(
        "eval", "-m", tiny_bundle, "--data", table, "--ranks", "genus,species", "--workers", "0",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err

    def numbers(recs):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in recs]

    assert numbers(json.loads(out)) == numbers(records)
    from biotrove_cli.core.errors import UsageError

    with pytest.raises(UsageError, match="unknown options: colour"):
        evaluate(table, model=str(tiny_bundle), colour="red")


def test_the_readme_example_runs(tmp_path, tiny_bundle, field_photos, monkeypatch, capsys):
    import re
    import shutil

    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "the README's API example is gone"
    demo = tmp_path / "biotrove-demo"  # what `biotrove demo` leaves behind
    demo.mkdir()
    (demo / "model").symlink_to(tiny_bundle)
    shutil.copytree(field_photos, demo / "photos")
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "3 photos classified" in out and "(3, 64)" in out and "score" in out
