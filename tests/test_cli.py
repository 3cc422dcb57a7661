"""The command-line contract: help without torch, version, exit codes, error boundary,
stdout/stderr split, CSV when piped, completions, README and CI agreement."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_subprocess

COMMANDS = [
    "shard", "train", "tune", "eval", "classify", "embed", "export", "models", "demo", "presets",
    "info", "completion", "report",
]  # fmt: skip


def _registered() -> list[str]:
    import click
    import typer

    from biotrove_cli.cli.app import app

    root = typer.main.get_command(app)
    return sorted(root.list_commands(click.Context(root)))


def test_help_never_imports_torch_or_open_clip():
    commands = _registered()
    code = (
        "import sys\n"
        "from biotrove_cli.cli.app import main\n"
        f"for args in [['--help']] + [[c, '--help'] for c in {commands!r}]:\n"
        "    assert main(args) == 0, args\n"
        "heavy = [m for m in ('torch', 'open_clip', 'torchvision', 'webdataset', 'pyarrow') "
        "if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stdout or out.stdout.strip().endswith("HEAVY=")


def test_help_lists_the_commands_that_work():
    result = run_subprocess("--help")
    assert result.returncode == 0
    for name in _registered():
        assert name in result.stdout
    assert set(_registered()) <= set(COMMANDS)


def test_version(cli):
    from biotrove_cli import __version__

    code, out, err = cli("--version")
    assert code == 0 and out.strip() == f"biotrove {__version__}" and err == ""


def test_usage_error_exits_2_without_traceback():
    result = run_subprocess("presets", "--format", "bogus")
    assert result.returncode == 2
    assert "bogus" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_domain_error_exits_1_with_error_and_hint(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"PK\x03\x04 truncated zip")
    result = run_subprocess("info", evil)
    assert result.returncode == 1
    assert "Error:" in result.stderr and "Hint:" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_debug_variable_shows_the_traceback(tmp_path):
    result = run_subprocess("info", tmp_path / "missing.pt", env={"BIOTROVE_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unexpected_errors_and_ctrl_c(cli, monkeypatch, tmp_path):
    import biotrove_cli.core.inspect as info

    def boom(path):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(info, "describe", boom)
    code, out, err = cli("info", tmp_path)
    assert code == 1 and "unexpected RuntimeError: kaboom" in err and "BIOTROVE_DEBUG" in err
    assert "Traceback" not in err

    def interrupt(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "describe", interrupt)
    code, out, err = cli("info", tmp_path)
    assert code == 130


def test_piped_records_are_csv_and_json_is_stable():
    result = run_subprocess("presets")  # stdout is a pipe here
    assert result.returncode == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["preset"] for r in rows} == {"clip-o", "clip-b", "clip-m", "tiny"}
    js = json.loads(run_subprocess("presets", "--format", "json").stdout)
    assert all(re.fullmatch(r"[a-z_]+", k) for k in js[0])


def test_output_file_is_written_atomically(cli, tmp_path):
    target = tmp_path / "presets.json"
    code, out, err = cli("presets", "-o", target)
    assert code == 0 and out == ""
    assert len(json.loads(target.read_text())) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["presets.json"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions_are_fresh(shell):
    from biotrove_cli.cli.app import completion_script as generate
    from biotrove_cli.cli.completion import FILENAMES, Shell

    path = REPO / "completions" / FILENAMES[Shell(shell)]
    assert path.is_file(), "run: biotrove completion --write completions/"
    assert path.read_text() == generate(Shell(shell)), (
        "completions/ is stale: run `biotrove completion --write completions/`"
    )
    for name in _registered():
        assert name in path.read_text()


def test_bash_completion_script_is_valid_bash():
    path = REPO / "completions" / "biotrove.bash"
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_changelog_has_unreleased_section():
    text = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text and "Keep a Changelog" in text


def _readme_block_after(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(marker)
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text[start:], re.S)
    assert block, f"no code block after {marker!r}"
    return block.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    readme_cmd = _readme_block_after("<!-- test-command -->")
    ci = (REPO / ".ci" / "run").read_text()
    assert readme_cmd in ci
    assert Path(REPO / ".ci" / "run").stat().st_mode & 0o111


def test_atomic_files_follow_the_umask(tmp_path):
    import os

    from biotrove_cli.core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
