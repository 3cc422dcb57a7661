"""The search space of ``biotrove tune``: YAML over the dotted config keys ``train`` uses, each
with a distribution, checked before Ray starts with every problem reported at once.

```yaml
optim.lr: {loguniform: [1.0e-5, 1.0e-3]}   # low, high (both > 0)
optim.wd: {uniform: [0.0, 0.3]}            # low, high
optim.warmup: {randint: [10, 200]}         # integers low..high-1
optim.beta1: {choice: [0.9, 0.98]}         # one of the values, sampled
data.batch_size: {grid: [32, 64]}          # every value (times --num-samples)
seed: 3                                    # a plain value: the same in every trial
```

Nested mappings (``optim: {lr: {loguniform: [...]}}``) mean the same as dotted keys. Checked:
unknown keys (with a suggestion), keys the search sets itself, unknown or malformed
distributions, and every value the config would reject (each choice, each range's ends, a
float range over an integer key).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from biotrove_cli.core import config as configlib
from biotrove_cli.core.errors import ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")
#: keys the search sets for every trial, with what to use instead
RESERVED = {
    "run_dir": "every trial gets its own run folder in the search folder",
    "max_steps": "the length of every trial is --max-steps",
}


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) config key."""

    key: str
    kind: str  # a DISTRIBUTIONS name, or "value" for a plain value
    args: tuple[Any, ...]

    def describe(self) -> str:
        if self.kind == "value":
            return repr(self.args[0])
        return f"{self.kind}({', '.join(repr(a) for a in self.args)})"

    def to_ray(self) -> Any:
        """The Ray Tune search-space object (ray.tune imported here, after the checks)."""
        from ray import tune

        if self.kind == "value":
            return self.args[0]
        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        low, high = self.args
        return {"loguniform": tune.loguniform, "uniform": tune.uniform, "randint": tune.randint}[
            self.kind
        ](low, high)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @property
    def keys(self) -> list[str]:
        """The searched keys (not the fixed ones): the columns of the trials table."""
        return [p.key for p in self.params if p.kind != "value"]

    def grid_size(self) -> int:
        size = 1
        for p in self.params:
            if p.kind == "grid":
                size *= len(p.args)
        return size

    def to_ray(self) -> dict[str, Any]:
        return {p.key: p.to_ray() for p in self.params}

    def to_dict(self) -> dict[str, Any]:
        """The space as YAML-ready data (the search folder keeps it for --resume)."""
        return {
            p.key: p.args[0] if p.kind == "value" else {p.kind: list(p.args)} for p in self.params
        }


def load_space(path: Path, base: Any) -> SearchSpace:
    """Read and check a space file against ``base`` (the resolved TrainConfig of the search).

    Raises:
        InputError / UsageError: the file is missing or not YAML.
        ConfigError: every problem of the space at once.
    """
    data = configlib.load_yaml(path)
    return parse_space(data, base, source=str(path))


def parse_space(data: dict[str, Any], base: Any, source: str = "space") -> SearchSpace:
    """Check a space mapping (see the module docstring); all problems at once."""
    problems: list[str] = []
    params = []
    types = _field_types(type(base))
    groups = {k.rsplit(".", 1)[0] for k in types if "." in k}
    for key, spec in _flatten(data, groups):
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            tip = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{key}: not a training config key{tip}")
            continue
        if key in RESERVED:
            problems.append(f"{key}: set by the search, not searchable ({RESERVED[key]})")
            continue
        param = _parse_param(key, spec, problems)
        if param is not None:
            problems += _check_values(param, types[key], base)
            params.append(param)
    if not params and not problems:
        problems.append("the space is empty: give at least one key and its distribution")
    if problems:
        raise ConfigError(
            [f"{source}: {p}" for p in problems],
            hint="a space maps dotted config keys (see `biotrove train --print-config`) to "
            "{loguniform|uniform|randint: [low, high]} or {choice|grid: [values]}",
        )
    return SearchSpace(tuple(params))


def _flatten(data: Any, groups: set[str], prefix: str = "") -> list[tuple[str, Any]]:
    """``{optim: {lr: SPEC}}`` and ``{optim.lr: SPEC}`` -> [("optim.lr", SPEC)]: a mapping
    under a config group (model, data, optim, ...) is nested keys, anywhere else a spec."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in groups:
            out += _flatten(value, groups, name + ".")
        else:
            out.append((name, value))
    return out


def _parse_param(key: str, spec: Any, problems: list[str]) -> Param | None:
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            problems.append(f"{key}: a list is not a distribution (use {{choice: [...]}})")
            return None
        return Param(key, "value", (spec,))
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    others = [str(k) for k in spec if k not in DISTRIBUTIONS]
    if len(kinds) != 1 or others:
        unknown = others[0] if others else ""
        close = difflib.get_close_matches(unknown, DISTRIBUTIONS, n=1) if unknown else []
        tip = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(
            f"{key}: expected one distribution of {', '.join(DISTRIBUTIONS)}, got "
            f"{', '.join(map(str, spec)) or 'nothing'}{tip}"
        )
        return None
    kind = kinds[0]
    args = spec[kind]
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            problems.append(f"{key}: {kind} needs a non-empty list of values, got {args!r}")
            return None
        return Param(key, kind, tuple(args))
    return _parse_range(key, kind, args, problems)


def _parse_range(key: str, kind: str, args: Any, problems: list[str]) -> Param | None:
    def number(v: Any) -> bool:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return ok and (kind != "randint" or isinstance(v, int))

    what = "integers" if kind == "randint" else "numbers"
    if not isinstance(args, list) or len(args) != 2 or not all(number(v) for v in args):
        problems.append(f"{key}: {kind} needs [low, high], two {what}, got {args!r}")
        return None
    low, high = args
    if not low < high:
        problems.append(f"{key}: {kind} needs low < high, got [{low}, {high}]")
        return None
    if kind == "loguniform" and low <= 0:
        problems.append(f"{key}: loguniform needs low > 0, got {low}")
        return None
    return Param(key, kind, (low, high))


def _field_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted config key -> its type, for every leaf field of a config dataclass."""
    out: dict[str, Any] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(_field_types(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


def _check_values(param: Param, tp: Any, base: Any) -> list[str]:
    """What the config says about each value the parameter can take."""
    if param.kind in ("uniform", "loguniform") and tp is int:
        return [
            f"{param.key}: an integer key; {param.kind} draws fractions (use randint or choice)"
        ]
    values = list(param.args)
    if param.kind == "randint":
        values[1] -= 1  # Ray's randint excludes high
    problems: list[str] = []
    base_dict = configlib.to_dict(base)
    for value in values:
        trial = configlib.deep_merge(base_dict, configlib.nest({param.key: value}))
        found: list[str] = []
        configlib.build(type(base), trial, found)
        for p in found:
            message = p if p.startswith(param.key) else f"{param.key}={value!r}: {p}"
            if message not in problems:
                problems.append(message)
    return problems
