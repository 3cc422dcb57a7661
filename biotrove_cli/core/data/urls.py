"""Where shards are: the locations a ``--data`` spec names, and the command that reads each.

A spec is what webdataset and open_clip take: a folder, a ``.tar``, a brace pattern
(``shard-{000000..000009}.tar``) and ``::``-separated lists of those, for local paths and for

* ``http://`` and ``https://`` URLs (read with ``curl``, with connect and stall timeouts);
* ``s3://`` URLs (read with ``aws s3 cp URL -``) and ``gs://`` URLs (``gcloud storage cat URL``,
  else ``gsutil cat URL``), when that tool is on PATH;
* ``pipe:COMMAND``, any shell command that writes the tar to stdout (webdataset's form).

A location is a plain string: a local path or one of the URLs above. Files that live beside the
shards (``sizes.json``; ``taxonomy.parquet`` one folder up) are found with :func:`sibling`, so
remote datasets carry their sample counts and label bank the same way local ones do.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from biotrove_cli.core.errors import InputError

PIPE = "pipe:"
HTTP = ("http://", "https://")
STORES = {
    "s3://": (("aws",), "the AWS command-line tool `aws` (pip install awscli)"),
    "gs://": (("gcloud", "gsutil"), "the Google Cloud CLI (`gcloud` or `gsutil`)"),
}
REMOTE = (PIPE, *HTTP, *STORES)
#: the ``*.tar`` word of a ``pipe:`` command: what its siblings are found beside
_TAR_WORD = re.compile(r"""[^\s'"]*\.tar\b""")


def is_remote(location: str) -> bool:
    """True for URLs and ``pipe:`` commands, False for local paths."""
    return str(location).lower().startswith(REMOTE)


def split_list(spec: str) -> list[str]:
    """``a::b::c`` -> ``[a, b, c]``; a ``::`` inside ``[...]`` (an IPv6 host) is kept."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(spec):
        c = spec[i]
        depth += (c == "[") - (c == "]")
        if depth == 0 and spec.startswith("::", i):
            parts.append(spec[start:i])
            start = i = i + 2
            continue
        i += 1
    parts.append(spec[start:])
    return [p for p in parts if p]


def expand(spec: str) -> list[str]:
    """Every location of a spec: ``::`` lists and brace patterns expanded, in order."""
    import braceexpand

    out: list[str] = []
    for part in split_list(spec):
        out.extend(braceexpand.braceexpand(part))
    return out


# -- commands ----------------------------------------------------------------------------------
def curl_command(url: str, timeout: float) -> str:
    """``curl`` for one http(s) URL: fail on HTTP errors, follow redirects (the Hugging Face hub
    redirects to its CDN), give up when connecting or a stalled transfer takes ``timeout`` s."""
    t = max(1, round(timeout))
    return (
        f"curl -f -sS -L -g --connect-timeout {t} --speed-limit 1 --speed-time {t} "
        f"{shlex.quote(url)}"
    )


def _store_command(url: str) -> str:
    scheme = url[:5].lower()
    tools, what = STORES[scheme]
    for tool in tools:
        if shutil.which(tool):
            if tool == "aws":
                return f"aws s3 cp {shlex.quote(url)} -"
            if tool == "gcloud":
                return f"gcloud storage cat {shlex.quote(url)}"
            return f"gsutil cat {shlex.quote(url)}"
    raise InputError(
        f"{url}: reading {scheme} URLs needs {what}, which is not on PATH",
        hint=f"install {' or '.join(tools)} and configure its credentials, or give the shards as "
        "pipe:COMMAND (any command that writes the tar to stdout)",
    )


def command_for(location: str, timeout: float = 60.0) -> str | None:
    """The shell command that writes ``location`` to stdout; None for a local path.

    Raises:
        InputError: the command-line tool the location needs is not installed.
    """
    low = location.lower()
    if low.startswith(PIPE):
        command = location[len(PIPE) :].strip()
        _check_program(command, location)
        return command
    if low.startswith(HTTP):
        if not shutil.which("curl"):
            raise InputError(
                f"{location}: reading http(s) URLs needs `curl`, which is not on PATH",
                hint="install curl, or copy the shards to a local folder",
            )
        return curl_command(location, timeout)
    if low.startswith(tuple(STORES)):
        return _store_command(location)
    return None


def _check_program(command: str, location: str) -> None:
    """A ``pipe:`` command whose program is not installed fails now, naming it."""
    if not command:
        raise InputError(f"{location!r}: an empty pipe: command", hint="use pipe:COMMAND ARGS")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise InputError(f"{location}: cannot parse the command ({exc})") from exc
    words = [w for w in words if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]  # VAR=x cmd
    program = words[0] if words else ""
    if program and "/" not in program and not _is_shell_word(program):
        if not shutil.which(program):
            raise InputError(
                f"{location}: the command `{program}` is not on PATH",
                hint=f"install {program}, or check the pipe: command",
            )


def _is_shell_word(word: str) -> bool:
    return word in ("exec", "env", "cd", "set", "{", "(", "if", "for", "while") or word[0] in "$({"


# -- names and siblings --------------------------------------------------------------------------
def shard_name(location: str) -> str:
    """The tar's file name (``shard-000003.tar``): what ``sizes.json`` calls it."""
    if location.lower().startswith(PIPE):
        words = _TAR_WORD.findall(location)
        return words[-1].rsplit("/", 1)[-1] if words else location
    if is_remote(location):
        return urlsplit(location).path.rsplit("/", 1)[-1]
    return location.replace("\\", "/").rsplit("/", 1)[-1]


def _parent(path: str, up: int) -> str:
    for _ in range(up + 1):
        path = path.rsplit("/", 1)[0] if "/" in path else ""
    return path


def sibling(location: str, name: str, up: int = 0) -> str | None:
    """The location of ``name`` in the shard's folder (``up=1``: its parent folder), read the
    same way as the shard; None when a ``pipe:`` command names no ``.tar`` file."""
    low = location.lower()
    if low.startswith(PIPE):
        words = list(_TAR_WORD.finditer(location))
        if not words:
            return None
        m = words[-1]
        folder = _parent(m.group(0), up)
        new = f"{folder}/{name}" if folder or m.group(0).startswith("/") else name
        return location[: m.start()] + new + location[m.end() :]
    if is_remote(location):
        parts = urlsplit(location)
        path = f"{_parent(parts.path, up)}/{name}"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    path = Path(location) if up == 0 else Path(os.path.abspath(location)).parents[up]
    return str(path.parent / name) if up == 0 else str(path / name)


def folder_name(location: str) -> str:
    """The name of the folder holding the shard (a split: ``train``, ``val``...)."""
    if location.lower().startswith(PIPE):
        words = _TAR_WORD.findall(location)
        path = words[-1] if words else ""
    elif is_remote(location):
        path = urlsplit(location).path
    else:
        path = location.replace("\\", "/")
    return _parent(path, 0).rsplit("/", 1)[-1]


def join(base: str, *names: str) -> str:
    """``base/name/...`` for a remote folder URL (no ``pipe:``)."""
    parts = urlsplit(base)
    path = "/".join([parts.path.rstrip("/"), *names])
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
