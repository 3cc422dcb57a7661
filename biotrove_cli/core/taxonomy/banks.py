"""The label banks shipped in the package, by name (``--labels inat2021``).

* ``inat2021``: the 10,000 species of iNat2021 with full lineage and common names (from the public
  BioTrove/Arboretum repository, MIT, see ``resources/LICENSE.BioTrove``). The default bank of a
  model that carries none of its own.
* ``demo``: the 33 real species of ``biotrove demo``'s sample world.

A path that exists always wins over a bank name, so a file called ``demo`` is still a file.
Nothing here reads the files (see :meth:`LabelBank.load`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent.parent / "resources"


@dataclass(frozen=True)
class NamedBank:
    """A label bank shipped in the package."""

    name: str
    filename: str
    species: int
    description: str

    @property
    def path(self) -> Path:
        return RESOURCES / self.filename


BANKS: dict[str, NamedBank] = {
    "inat2021": NamedBank(
        "inat2021",
        "inat2021_categories.csv.gz",
        10_000,
        "the 10,000 species of iNat2021 with lineage and common names",
    ),
    "demo": NamedBank("demo", "demo_species.csv", 33, "the 33 species of biotrove demo"),
}
#: The bank a model without labels of its own classifies into.
DEFAULT_BANK = "inat2021"


def named_bank(name: str | Path) -> NamedBank | None:
    """The shipped bank called ``name`` (case-insensitive), unless a file of that name exists."""
    text = str(name).strip()
    if Path(text).expanduser().exists():
        return None
    return BANKS.get(text.lower())


def bank_names() -> str:
    """``inat2021, demo`` (for hints)."""
    return ", ".join(BANKS)
