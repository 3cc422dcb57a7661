"""biotrove: a command-line toolkit for CLIP-style vision-language models of biodiversity.

The Python API (see :mod:`biotrove_cli.api`) is imported on first use, so that ``import
biotrove_cli`` stays light (no torch)::

    from biotrove_cli import Classifier

    records = Classifier("clip-o").predict("photos/", rank="species", k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["BiotroveError", "Classifier", "Records", "embed", "evaluate", "load_model"]

if TYPE_CHECKING:
    from biotrove_cli.api import Classifier, Records, embed, evaluate, load_model
    from biotrove_cli.core.errors import BiotroveError


def __getattr__(name: str) -> Any:
    if name in __all__:
        from biotrove_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'biotrove_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
