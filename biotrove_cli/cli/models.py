"""``biotrove models [pull PRESET...]``: the published BioTrove-CLIP models on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from biotrove_cli.cli.options import DeviceOpt, FormatOpt, OutputOpt
from biotrove_cli.output.render import Format


def models_cmd(
    words: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[pull] [PRESET]...",
            help="Presets to list (default: all), or `pull` and the presets to download and "
            "convert now.",
            show_default=False,
        ),
    ] = None,
    device: DeviceOpt = "auto",
    format: FormatOpt = Format.auto,
    output: OutputOpt = None,
) -> None:
    """List the BioTrove-CLIP models: what is downloaded, where and how big; or pull them.

    A model downloads itself from the Hugging Face Hub (BGLab/BioTrove-CLIP) on first use.
    It is converted once into a safe bundle in $BIOTROVE_HOME/models/PRESET (safetensors, the
    inat2021 label bank and its class embeddings), which every later run loads.
    `pull` does it now: on a login node, say, before jobs run on nodes without network.
    HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME and HF_TOKEN apply.

    Examples:

      biotrove models

      biotrove models clip-o --format json

      biotrove models pull clip-o clip-b
    """
    from biotrove_cli.core.errors import UsageError
    from biotrove_cli.core.models.published import list_presets, preset_named, pull
    from biotrove_cli.output.render import emit

    words = list(words or [])
    action, names = "list", words
    if words and words[0].lower() in ("pull", "list"):
        action, names = words[0].lower(), words[1:]
    if action == "pull":
        if not names:
            raise UsageError("pull needs a model", hint="biotrove models pull clip-o")
        from biotrove_cli.core.runtime import resolve_device

        records = pull(names, device=resolve_device(device))
    else:
        wanted = {preset_named(n).name for n in names}
        records = [r for r in list_presets() if not wanted or r["preset"] in wanted]
    emit(
        records,
        format,
        output,
        title="BioTrove-CLIP models",
        table_columns=["preset", "state", "arch", "bundle", "bundle_size", "checkpoint_size"],
    )
