"""Typed configs from dataclasses, YAML presets, config files, flags and dotted overrides.

Precedence, lowest to highest: dataclass defaults < ``--preset NAME`` (YAML shipped in the
package) < ``--config FILE.yaml`` < explicit flags < dotted ``key=value`` overrides.
Every problem (unknown keys, bad values) is collected and reported at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from biotrove_cli.core.errors import ConfigError, InputError, UsageError

T = TypeVar("T")
PRESET_DIR = Path(__file__).with_name("presets")


def cfg_field(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``biotrove presets`` and docs)."""
    meta = {"help": help}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta, **kwargs)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


# -- dict <-> dataclass --------------------------------------------------------------------------
def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def field_help(cls: type) -> dict[str, str]:
    """Dotted field name -> help text, for every (nested) field of a config dataclass."""
    out: dict[str, str] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for k, v in field_help(tp).items():
                out[f"{f.name}.{k}"] = v
        else:
            out[f.name] = f.metadata.get("help", "")
    return out


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, tp: Any) -> Any:
    """Convert ``value`` to type ``tp`` or raise ValueError with a readable reason."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c).lower() == value.lower()):
                return c
        raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    if origin in (list, tuple):
        (inner, *_) = get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        items = [_coerce(v, inner) for v in value]
        return items if origin is list else tuple(items)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for m in tp:
            if value == m or str(value).lower() == str(m.value).lower():
                return m
        raise ValueError(f"expected one of {', '.join(repr(m.value) for m in tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected a string, got {value!r}")
        return "" if value is None else str(value)
    if tp is Any:
        return value
    raise ValueError(f"unsupported config type {tp!r}")  # pragma: no cover


def build(cls: type[T], data: dict[str, Any], problems: list[str], prefix: str = "") -> T:
    """Instantiate ``cls`` from a nested dict, appending every problem to ``problems``."""
    hints = get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
        data = {}
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), list(names), n=1)
            tip = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            problems.append(f"unknown key '{prefix}{key}'{tip}")
    kwargs: dict[str, Any] = {}
    for name, _f in names.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, data.get(name, {}) or {}, problems, prefix=f"{prefix}{name}.")
            continue
        if name not in data:
            continue
        try:
            kwargs[name] = _coerce(data[name], tp)
        except ValueError as exc:
            problems.append(f"{prefix}{name}: {exc}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate) and not prefix:
        problems.extend(validate())
    return obj


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'optim.lr': 1} -> {'optim': {'lr': 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = value
    return out


def parse_overrides(items: list[str] | tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    """Dotted ``key=value`` items -> nested dict; values are parsed as YAML scalars."""
    import yaml

    flat: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            problems.append(f"override {item!r} is not key=value (e.g. optim.lr=1e-4)")
            continue
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            problems.append(f"override {item!r} has no key")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        flat[key] = value
    return nest(flat)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file", hint="check the --config path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from exc
    except yaml.YAMLError as exc:
        raise UsageError(
            f"{path}: not valid YAML ({exc})",
            hint="fix the file; `--print-config` shows a valid one",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config file must be a mapping of keys to values")
    return data


# -- presets --------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    """The names of the training presets shipped in the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(name, list_presets(), n=1)
        tip = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(
            f"unknown preset {name!r}",
            hint=f"{tip}presets: {', '.join(list_presets())} (`biotrove presets`)",
        )
    return path


def preset_header(name: str) -> dict[str, str]:
    """The preset's leading comment: its command (first line) and a description (the rest)."""
    lines = []
    for line in preset_path(name).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    command = lines[0] if lines else ""
    return {"command": command, "description": " ".join(ln for ln in lines[1:] if ln)}


def load_preset(name: str) -> dict[str, Any]:
    return load_yaml(preset_path(name))


def resolve(
    cls: type[T],
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> T:
    """Build a config from every source in precedence order; report all problems at once."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    if preset:
        data = deep_merge(data, load_preset(preset))
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
    if flags:
        data = deep_merge(data, nest({k: v for k, v in flags.items() if v is not None}))
    data = deep_merge(data, parse_overrides(list(overrides), problems))
    obj = build(cls, data, problems)
    if problems:
        raise ConfigError(
            problems,
            hint="`--print-config` shows every key and its value; "
            "override one with key=value (e.g. optim.lr=1e-4)",
        )
    return obj


def dump_yaml(obj: Any, header: str | None = None) -> str:
    import yaml

    text = yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text
