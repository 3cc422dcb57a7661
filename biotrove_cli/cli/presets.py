"""``biotrove presets``: the shipped training presets and what each one sets."""

from __future__ import annotations

from typing import Annotated

import typer

from biotrove_cli.cli.options import FormatOpt, OutputOpt
from biotrove_cli.output.render import Format


def presets_cmd(
    name: Annotated[
        str | None, typer.Argument(help="Show one preset in full (resolved YAML).")
    ] = None,
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
) -> None:
    """List the training presets (BioTrove-CLIP recipes and tiny) and the values they set."""
    from biotrove_cli.core import config
    from biotrove_cli.core.training.config import TrainConfig, preset_records
    from biotrove_cli.output import console
    from biotrove_cli.output.render import emit

    if name:
        cfg = config.resolve(TrainConfig, preset=name)
        header = config.preset_header(name)
        text = config.dump_yaml(cfg, header=header["command"])
        if output is not None and str(output) != "-":
            from biotrove_cli.core.io import atomic_write_text

            atomic_write_text(output, text)
        else:
            console.write_out(text)
        return
    emit(
        preset_records(),
        format,
        output,
        title="Training presets",
        table_columns=[
            "preset",
            "summary",
            "arch",
            "init",
            "epochs",
            "batch_size",
            "lr",
            "precision",
        ],
    )
