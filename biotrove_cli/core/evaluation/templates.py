"""Prompt templates: ``simple`` (the training captions), ``openai`` (the 80 ImageNet prompts
the BioTrove reference evaluation used), or a file with one ``{}`` template per line."""

from __future__ import annotations

from pathlib import Path

from biotrove_cli.core.errors import InputError

SIMPLE = ("a photo of {}.",)


#: open_clip's OPENAI_IMAGENET_TEMPLATES as text (importing open_clip would import torch)
OPENAI_FILE = Path(__file__).resolve().parents[2] / "resources" / "openai_templates.txt"


def openai_templates() -> tuple[str, ...]:
    lines = OPENAI_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(ln for ln in lines if ln.strip() and not ln.startswith("#"))


def load_templates(spec: str | Path) -> tuple[str, tuple[str, ...]]:
    """Return (name, templates) for ``simple``, ``openai`` or a text file.

    A template file has one template per line with ``{}`` (or ``{c}``) where the class name goes;
    blank lines and ``#`` comments are ignored.
    """
    text = str(spec).strip()
    if text.lower() == "simple":
        return "simple", SIMPLE
    if text.lower() == "openai":
        return "openai", openai_templates()
    path = Path(text)
    if not path.is_file():
        raise InputError(
            f"{text}: not a template set or file",
            hint="use --templates simple, --templates openai, or a file with one "
            "template per line containing {}",
        )
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip() if not line.strip().startswith("{") else line.strip()
        if not line:
            continue
        line = line.replace("{c}", "{}")
        if line.count("{}") != 1:
            raise InputError(
                f"{path}:{i}: a template needs exactly one {{}} for the class name",
                hint="e.g. 'a photo of {}.'",
            )
        out.append(line)
    if not out:
        raise InputError(f"{path}: no templates in the file", hint="one template per line")
    return path.name, tuple(out)
