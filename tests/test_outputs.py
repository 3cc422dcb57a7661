"""Records that pipe cleanly (JSON a plain array that pandas and duckdb read, an empty error is
null, CSV keeps six decimals like JSONL, the summary on stderr and in --summary FILE), and the
label banks shipped in the package (inat2021, demo; the default of a model without labels)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import subprocess

import pandas as pd
import pytest

from tests.conftest import INAT2021


@pytest.fixture(scope="module")
def photos(tmp_path_factory, small_world):
    folder = tmp_path_factory.mktemp("pipe") / "photos"
    folder.mkdir()
    for p in small_world["photos"][:4]:
        shutil.copy(p.path, folder / p.path.name)
    (folder / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return folder


def classify(cli, bundle, photos, *extra):
    code, out, err = cli(
        "classify", "-m", bundle, photos, "--workers", "0", "-k", "3", *extra
    )  # fmt: skip
    assert code == 0, err
    return out, err


def test_json_jsonl_and_csv_read_as_the_same_table(cli, tiny_bundle, photos, tmp_path):
    import duckdb

    summary = tmp_path / "summary.json"
    out_json, err = classify(cli, tiny_bundle, photos, "--format", "json", "--summary", summary)
    records = json.loads(out_json)
    assert isinstance(records, list) and len(records) == 4 * 3 + 1  # a plain array of records
    assert [r["error"] for r in records if r["prediction"] is not None] == [None] * 12
    assert [r["error"] for r in records if r["prediction"] is None] == ["truncated"]
    # the summary: a line on stderr and a JSON document in --summary FILE
    assert "classified 4 images" in err and "1 unreadable (truncated 1)" in err
    doc = json.loads(summary.read_text())
    assert doc["n_classified"] == 4 and doc["n_errors"] == 1 and doc["model"]["kind"] == "bundle"
    # pandas and duckdb read the array as a table
    df = pd.read_json(io.StringIO(out_json))
    assert len(df) == 13 and df["error"].isna().sum() == 12
    (tmp_path / "r.json").write_text(out_json)
    con = duckdb.connect()
    n_errors, n_rows = con.execute(
        f"select count(error), count(*) from read_json('{tmp_path / 'r.json'}')"
    ).fetchone()
    assert (n_errors, n_rows) == (1, 13)
    # JSONL: null errors, so `jq 'select(.error)'` finds the failures only
    out_jsonl, _ = classify(cli, tiny_bundle, photos, "--format", "jsonl")
    (tmp_path / "r.jsonl").write_text(out_jsonl)
    lines = [json.loads(line) for line in out_jsonl.splitlines()]
    assert lines == records
    assert [r["path"] for r in lines if r["error"]] == [str(photos / "zz-broken.jpg")]
    if shutil.which("jq"):
        jq = subprocess.run(
            ["jq", "-c", "select(.error)", str(tmp_path / "r.jsonl")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert [json.loads(x)["error"] for x in jq.stdout.splitlines()] == ["truncated"]
    assert con.execute(
        f"select count(*) from read_json('{tmp_path / 'r.jsonl'}') where error is null"
    ).fetchone() == (12,)
    # CSV keeps six decimals, as JSONL does: the same scores, to the digit
    out_csv, _ = classify(cli, tiny_bundle, photos, "--format", "csv")
    (tmp_path / "r.csv").write_text(out_csv)
    csv_scores = pd.read_csv(io.StringIO(out_csv))["score"].dropna().tolist()
    assert csv_scores == [r["score"] for r in records if r["score"] is not None]
    assert any(len(str(s).split(".")[1]) > 4 for s in csv_scores)  # more than a table's 4
    duck = con.execute(f"select score from read_csv('{tmp_path / 'r.csv'}')").fetchall()
    assert [s for (s,) in duck if s is not None] == csv_scores


def test_every_record_command_writes_a_plain_array(cli, tiny_bundle, tmp_path):
    summary = ["--summary", tmp_path / "s.json"]
    for args in (["presets"], ["models"], ["info", tiny_bundle, *summary]):
        code, out, err = cli(*args, "--format", "json")
        assert code == 0, (args, err)
        df = pd.read_json(io.StringIO(out))
        assert len(df) > 0 and isinstance(json.loads(out), list), args
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "bundle"  # info's document


# -- label banks ----------------------------------------------------------------------------------
def test_the_shipped_banks(tmp_path, monkeypatch):
    from biotrove_cli.core.errors import InputError
    from biotrove_cli.core.taxonomy.banks import BANKS
    from biotrove_cli.core.taxonomy.labelbank import LabelBank
    from biotrove_cli.core.taxonomy.rank import Rank

    inat = LabelBank.load("inat2021")
    assert len(inat) == 10_000 == BANKS["inat2021"].species and inat.source == "inat2021"
    assert BANKS["inat2021"].path == INAT2021
    assert sum(1 for t in inat.taxa if t.common_name) > 9_000
    assert len(inat.classes(Rank.KINGDOM)) >= 3 and inat.taxa[0].genus
    assert len(LabelBank.load("DEMO")) == 33
    # a file that exists wins over a bank name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    with pytest.raises(InputError, match="holds no labels.parquet"):
        LabelBank.load("demo")
    with pytest.raises(InputError) as info:
        LabelBank.load("inat2022")
    assert "inat2021, demo" in (info.value.hint or "")


def test_a_model_without_labels_classifies_into_the_default_bank(
    cli, tiny_model, photos, tmp_path, monkeypatch
):
    """The default bank is inat2021 (its 10,000 species are encoded in the model tests); here
    a smaller stand-in keeps the test fast."""
    import torch

    from biotrove_cli.core.taxonomy import banks

    ckpt = tmp_path / "bare.pt"
    torch.save(tiny_model.model.state_dict(), ckpt)
    monkeypatch.setitem(
        banks.BANKS, "inat2021", dataclasses.replace(banks.BANKS["demo"], name="inat2021")
    )
    out, err = classify(cli, ckpt, photos, "--format", "json")
    assert f"{ckpt} carries no label bank: classifying into inat2021" in err
    assert "--labels changes it" in err
    rows = [r for r in json.loads(out) if r["error"] is None]
    names = {t.binomial for t in _demo_taxa()}
    assert rows and {r["name"] for r in rows} <= names
    assert all(r["kingdom"] and r["genus"] for r in rows)


def _demo_taxa():
    from biotrove_cli.core.taxonomy.labelbank import LabelBank

    return LabelBank.load("demo").taxa


def test_the_shipped_banks_are_package_data():
    """A wheel (non-editable install) carries every file of resources/: pyproject's
    package-data globs cover them."""
    import tomllib

    from tests.conftest import REPO, RESOURCES

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["biotrove_cli"]
    package = REPO / "biotrove_cli"
    covered = {p for g in globs for p in package.glob(g) if p.is_file()}
    shipped = {p for p in RESOURCES.rglob("*") if p.is_file()}
    assert shipped and shipped <= covered, sorted(str(p) for p in shipped - covered)
