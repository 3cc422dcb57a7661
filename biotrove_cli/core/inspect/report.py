"""The report ``biotrove info`` renders: sections of key/value rows, plus a JSON document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    kind: str
    title: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    document: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, key: str, value: Any) -> None:
        self.rows.append({"section": section, "key": key, "value": value})
