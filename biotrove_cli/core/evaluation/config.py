"""The configuration of ``biotrove eval``: everything one evaluation needs, built by the CLI from
flags (and read back from JSON by the distributed workers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biotrove_cli.core.evaluation.zeroshot import DEFAULT_TEMPLATES, DEFAULT_TEXT_TYPE, Mode
from biotrove_cli.core.taxonomy.captions import REFERENCE_RANDOM_TYPES, check_text_type
from biotrove_cli.core.taxonomy.rank import Rank


def parse_text_types(spec: str) -> list[str]:
    """``taxon_com``, ``sci,com,...`` or ``all`` (BioTrove's five name styles) -> text types,
    in the order given, without repeats; an unknown one is a usage error."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    if [p.lower() for p in parts] == ["all"]:
        return list(REFERENCE_RANDOM_TYPES)
    out: list[str] = []
    for p in parts or [DEFAULT_TEXT_TYPE]:
        t = check_text_type(p)
        if t not in out:
            out.append(t)
    return out


@dataclass
class EvalConfig:
    """Everything ``biotrove eval`` needs; the CLI builds it from flags."""

    models: list[str]
    data: str
    images: str | None = None
    split: str = "val"
    labels: str | None = None
    ranks: list[Rank] | None = None  # None: the ranks the data has names for
    modes: list[Mode] = field(default_factory=lambda: [Mode.ROLLUP])
    text_type: str = DEFAULT_TEXT_TYPE  # one type, a comma list or "all" (a sweep)
    templates: str = DEFAULT_TEMPLATES
    batch_size: int = 64
    device: str = "cpu"
    precision: str = "auto"
    workers: int | None = None  # None: auto (see runtime.resolve_workers)
    limit: int | None = None
    use_cache: bool = True
    per_class: str | None = None
    confusion: tuple[Rank, str] | None = None
    plot: str | None = None
    arch: str | None = None
    strict: bool = False  # a shard that cannot be read or ends early is an error
    retries: int = 3  # retries of a shard that fails to open or read
    timeout: float = 60.0  # seconds a remote shard read may wait for data
    label_col: str | None = None  # the column of class names (tables)
    candidates: str | None = None  # the column of each photo's candidate names
    group_by: str | None = None  # the column grouping candidate-set results

    @property
    def text_types(self) -> list[str]:
        """The text types to score (several: one image pass, one result per type)."""
        return parse_text_types(self.text_type)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (for the distributed workers' config file)."""
        out = dict(self.__dict__)
        out["ranks"] = [r.value for r in self.ranks] if self.ranks is not None else None
        out["modes"] = [m.value for m in self.modes]
        out["confusion"] = (
            [self.confusion[0].value, self.confusion[1]] if self.confusion is not None else None
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """The config :meth:`to_dict` wrote."""
        data = dict(data)
        ranks = data.get("ranks")
        data["ranks"] = [Rank.parse(r) for r in ranks] if ranks is not None else None
        data["modes"] = [Mode(m) for m in data.get("modes", [])]
        conf = data.get("confusion")
        data["confusion"] = (Rank.parse(conf[0]), conf[1]) if conf else None
        return cls(**data)
