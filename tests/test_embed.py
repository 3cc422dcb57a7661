"""``biotrove embed``: one L2-normalised embedding per image (stock open_clip's encode_image on
the same pixels), Parquet with a fixed-size list column, npy + index CSV, JSON lines on a pipe,
the same inputs as classify, broken files as error rows, --resume, and class texts (--text)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def pngs(tmp_path_factory, demo_bank):
    """Five lossless photos (their pixels decode the same everywhere) and a broken file."""
    from biotrove_cli.core.data.world import render

    folder = tmp_path_factory.mktemp("embed") / "photos"
    folder.mkdir()
    for i, taxon in enumerate(demo_bank.taxa[:5]):
        render(taxon, index=i, seed=3, size=(90 + 7 * i, 70)).save(folder / f"p{i}.png")
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def args(bundle, *extra):
    return ["embed", "-m", bundle, "--workers", "0", "--batch-size", "2", *extra]


def stock_open_clip(bundle, paths):
    """Embeddings of the files by stock open_clip, loading the bundle with local-dir:."""
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{bundle}")
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        return model.encode_image(pixels, normalize=True).numpy()


def test_parquet_embeddings_equal_stock_open_clip(cli, pngs, tiny_bundle, tmp_path):
    import duckdb

    out = tmp_path / "embeddings.parquet"
    summary = tmp_path / "summary.json"
    code, stdout, err = cli(*args(tiny_bundle, pngs, "-o", out, "--summary", summary))
    assert code == 0, err
    assert stdout == "" and "embedded 5 images (64 dims)" in err and "1 unreadable" in err
    table = pq.read_table(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    assert table.column_names == ["path", "embedding", "model", "dims", "error"]
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == [str(p) for p in sorted(pngs.iterdir())]  # input order
    good = [r for r in rows if r["error"] is None]
    bad = [r for r in rows if r["error"] is not None]
    assert len(good) == 5 and bad[0]["embedding"] is None and bad[0]["error"] == "not_image"
    assert {r["model"] for r in rows} == {str(tiny_bundle)} and {r["dims"] for r in rows} == {64}
    got = np.array([r["embedding"] for r in good], dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    ref = stock_open_clip(tiny_bundle, [r["path"] for r in good])
    assert np.abs(got - ref).max() <= 1e-5
    assert json.loads(summary.read_text())["n_embedded"] == 5
    # pandas and duckdb read the file as it is
    df = pd.read_parquet(out)
    assert len(df) == 6 and len(df.loc[0, "embedding"]) == 64
    con = duckdb.connect()
    n, dims = con.execute(
        f"select count(*), max(len(embedding)) from read_parquet('{out}') where error is null"
    ).fetchone()
    assert (n, dims) == (5, 64)


def test_npy_with_an_index_csv(cli, pngs, tiny_bundle, tmp_path):
    out = tmp_path / "vectors" / "card.npy"
    code, _, err = cli(*args(tiny_bundle, pngs, "--format", "npy", "-o", out))
    assert code == 0, err
    array = np.load(out)
    index = pd.read_csv(out.with_name("card.index.csv"), keep_default_na=False)
    assert array.shape == (5, 64) and array.dtype == np.float32
    assert list(index.columns) == ["row", "path", "model", "dims", "error"]
    ok = index[index["error"] == ""]
    assert ok["row"].astype(int).tolist() == [0, 1, 2, 3, 4]
    assert index[index["error"] != ""]["row"].tolist() == [""]
    ref = stock_open_clip(tiny_bundle, ok["path"].tolist())
    assert np.abs(array - ref).max() <= 1e-5


def test_the_same_inputs_as_classify_and_json_lines_on_a_pipe(
    cli, pngs, tiny_bundle, tmp_path, monkeypatch
):
    nested = tmp_path / "card" / "day1"
    nested.mkdir(parents=True)
    (nested / "x.png").write_bytes((pngs / "p0.png").read_bytes())
    listing = "\n".join([str(pngs / "p1.png"), str(pngs / "p2.png")]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(listing))
    code, stdout, err = cli(*args(tiny_bundle, "-", pngs / "p*.png", "-r", tmp_path / "card"))
    assert code == 0, err
    rows = [json.loads(line) for line in stdout.splitlines()]  # piped: JSON lines
    names = [r["path"].rsplit("/", 1)[-1] for r in rows]
    assert names == ["p1.png", "p2.png", "p0.png", "p3.png", "p4.png", "x.png"]  # no repeats
    assert all(len(r["embedding"]) == 64 and r["error"] is None for r in rows)
    by_name = dict(zip(names, rows, strict=True))
    assert np.allclose(by_name["x.png"]["embedding"], by_name["p0.png"]["embedding"], atol=1e-6)
    # --format json: one array that pandas reads as a table
    code, out, err = cli(*args(tiny_bundle, pngs / "p0.png", "--format", "json"))
    assert code == 0, err
    df = pd.read_json(io.StringIO(out))
    assert list(df.columns) == ["path", "embedding", "model", "dims", "error"] and len(df) == 1


def _read(path):
    """The rows of an embed output, whichever format."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    array = np.load(path)
    index = pd.read_csv(path.with_name(path.stem + ".index.csv"), keep_default_na=False)
    return [
        {**row, "embedding": array[int(row["row"])].tolist() if row["row"] != "" else None}
        for row in index.to_dict("records")
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_an_interrupted_run_resumes_where_it_stopped(
    cli, pngs, tiny_bundle, tmp_path, monkeypatch, suffix
):
    from biotrove_cli.core.evaluation import embed as core

    reference = tmp_path / f"reference{suffix}"
    assert cli(*args(tiny_bundle, pngs, "-o", reference))[0] == 0
    out = tmp_path / f"out{suffix}"
    real = core.EmbedJob._rows
    calls = {"n": 0}

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(core.EmbedJob, "_rows", flaky)
    code, _, err = cli(*args(tiny_bundle, pngs, "-o", out))
    assert code == 130 and "--resume" in err and not out.exists()
    monkeypatch.setattr(core.EmbedJob, "_rows", real)
    code, _, err = cli(*args(tiny_bundle, pngs, "-o", out, "--resume"))
    assert code == 0, err
    assert "resuming: 2 images already in" in err and "embedded 3 images" in err
    assert _read(out) == _read(reference)
    assert not list(tmp_path.glob(".*"))  # no segments, no temp files left
    # resuming a complete output adds nothing
    code, _, err = cli(*args(tiny_bundle, pngs, "-o", out, "--resume"))
    assert code == 0 and "embedded 0 images" in err
    assert _read(out) == _read(reference)


def test_class_texts(cli, tiny_bundle, demo_bank, tmp_path):
    import open_clip
    import torch

    out = tmp_path / "classes.parquet"
    code, _, err = cli("embed", "--text", "-m", tiny_bundle, "--labels", "demo", "-o", out)
    assert code == 0, err
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 33 == len(demo_bank)
    assert [r["name"] for r in rows] == [t.binomial for t in demo_bank.taxa]
    assert all(r["kingdom"] and r["genus"] and r["text"].startswith("a photo of") for r in rows)
    # one template: a class embedding is the normalised text embedding of its prompt
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_bundle}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_bundle}")
    with torch.no_grad():
        ref = model.eval().encode_text(tokenizer([r["text"] for r in rows]), normalize=True)
    got = np.array([r["embedding"] for r in rows], dtype=np.float32)
    assert np.abs(got - ref.numpy()).max() <= 1e-5


@pytest.mark.parametrize(
    "extra, message",
    [
        ((), "no images given"),
        (("--text", "photo.png"), "--text embeds the label bank's class texts"),
        (("photo.png", "--format", "npy"), "--format npy writes a file"),
        (("photo.png", "--resume"), "--resume needs -o FILE"),
        (("photo.png", "--labels", "demo"), "--labels goes with --text"),
    ],
)
def test_bad_usage_exits_2(cli, tiny_bundle, extra, message):
    code, out, err = cli("embed", "-m", tiny_bundle, *extra)
    assert code == 2 and message in err and out == ""
