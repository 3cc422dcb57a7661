"""biotrove demo: the whole pipeline on the embedded default, offline, on the CPU."""

from __future__ import annotations

import csv
import io
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import run_subprocess


def _csv_tables(text: str) -> list[list[dict[str, str]]]:
    """The stdout of a piped demo: one CSV table per step, each with its own header."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            block.append(line)
        elif block:
            tables.append(block)
            block = []
    # tables follow each other without blank lines: split where a new header starts
    out: list[list[dict[str, str]]] = []
    for blk in tables:
        current: list[str] = []
        for line in blk:
            if current and re.match(r"^(split|key|model|path|section),", line):
                out.append(list(csv.DictReader(io.StringIO("\n".join(current)))))
                current = []
            current.append(line)
        if current:
            out.append(list(csv.DictReader(io.StringIO("\n".join(current)))))
    return out


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_learns(tmp_path):
    out = tmp_path / "demo"
    result = run_subprocess(
        "demo",
        "--out",
        out,
        "--species",
        "8",
        "--images-per-species",
        "24",
        "--steps",
        "120",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "done in"):
        assert step in result.stderr
    assert "through torchrun" in result.stderr  # two processes on a 2-core machine
    tables = _csv_tables(result.stdout)
    evals = next(t for t in tables if t and "top1" in t[0] and "rank" in t[0])
    top1 = {row["rank"]: float(row["top1"]) for row in evals}
    n_species = int(next(r["n_classes"] for r in evals if r["rank"] == "species"))
    assert n_species == 8
    assert top1["species"] > 3 / n_species, top1  # far above chance (1/8)
    assert top1["kingdom"] >= top1["genus"] >= top1["species"]
    predictions = next(t for t in tables if t and "prediction" in t[0])
    assert {Path(r["path"]).name for r in predictions} >= {"IMG_0001.jpg"}
    # every path the demo printed exists, and `biotrove info` describes it
    printed = re.findall(r"^ {4}(\S+)\s+\(", result.stderr, flags=re.M)
    assert len(printed) >= 5
    for path in printed:
        assert Path(path).exists(), path
        if Path(path).suffix in ("", ".parquet"):
            info = run_subprocess("info", path, "--format", "json")
            assert info.returncode == 0, (path, info.stderr)
    # "Repeat a step by hand": each printed command works as printed, against the demo's own
    # output (shard and train continue what is there; the others write their results again)
    repeat = result.stderr.split("Repeat a step by hand:", 1)[1]
    commands = [
        shlex.split(line) for line in repeat.splitlines() if line.startswith("    biotrove ")
    ]
    assert [c[1] for c in commands] == ["shard", "train", "eval", "classify", "export"]
    for command in commands:
        again = run_subprocess(*command[1:], timeout=600)
        assert again.returncode == 0, (command, again.stderr[-3000:])
        if command[1] == "train":
            assert "resuming from" in again.stderr  # the finished run, not a new one


def test_demo_rejects_bad_sizes(cli, tmp_path):
    code, out, err = cli("demo", "--out", tmp_path / "d", "--species", "40")
    assert code == 2 and "--species must be between 2 and 30" in err
    code, out, err = cli("demo", "--out", tmp_path / "d", "--images-per-species", "3")
    assert code == 2
