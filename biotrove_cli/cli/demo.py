"""``biotrove demo``: the whole pipeline on the embedded sample world, offline, on a CPU.

Each step runs the real command (the same code a user runs by hand), printed before it runs:
shard -> train (two processes through torchrun when there are two cores) -> eval -> classify
-> export. A rerun reuses what is already done (photos, complete shards, the trained run).
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Annotated

import click
import typer


def _run(args: list[str]) -> None:
    """Run one biotrove command in this process, as the user would type it."""
    from biotrove_cli.core.errors import BiotroveError
    from biotrove_cli.output import console

    console.info("$ biotrove " + " ".join(shlex.quote(a) for a in args))
    command = click.get_current_context().find_root().command
    rv = command.main(args=args, prog_name="biotrove", standalone_mode=False)
    if isinstance(rv, int) and rv != 0:
        raise BiotroveError(
            f"demo step `biotrove {args[0]}` ended with exit code {rv}", exit_code=rv
        )


def demo_cmd(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for everything the demo writes.")
    ] = Path("biotrove-demo"),
    species: Annotated[
        int,
        typer.Option(
            "--species", min=2, help="Species seen in training (of the 33 real species shipped)."
        ),
    ] = 24,
    images_per_species: Annotated[
        int, typer.Option("--images-per-species", min=10, help="Synthetic photos per species.")
    ] = 40,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 300,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc-per-node",
            min=1,
            help="Training processes (default: 2 when the machine has 2+ cores).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Run shard -> train -> eval -> classify -> export on synthetic photos of real species."""
    from biotrove_cli.core import demo as demolib
    from biotrove_cli.output import console, progress

    t0 = time.time()
    out = Path(os.path.relpath(out)) if not out.is_absolute() else out  # short paths in tables
    nproc = nproc or (2 if (os.cpu_count() or 1) >= 2 else 1)
    shards, run, model = out / "shards", out / "run", out / "model"

    console.step(f"1/6 building the sample world in {out}")
    console.info(
        f"    {species} real species (+{demolib.RARE_SPECIES} rare ones) from the "
        "shipped iNat2021/Arboretum label bank; the photos are synthetic: each species "
        "gets a look derived from its lineage, so relatives look alike"
    )
    with progress.progress("photos", unit="photos") as tick:
        world = demolib.build_world(out, species, images_per_species, seed=seed, progress=tick)
    console.info(f"    {world.n_images} photos in {world.images}, metadata in {world.metadata}")

    console.step("2/6 shard: metadata + photos -> WebDataset shards (train/val/unseen)")
    _run(
        [
            "shard",
            str(world.metadata),
            "--images",
            str(world.images),
            "--out",
            str(shards),
            "--image-size",
            "96",
            "--val-fraction",
            "0.2",
            "--min-per-species",
            str(demolib.MIN_PER_SPECIES),
            "--samples-per-shard",
            "64",
            "--seed",
            str(seed),
        ]
    )

    console.step(
        f"3/6 train: the tiny CLIP for {steps} steps"
        + (f", {nproc} processes through torchrun (gloo)" if nproc > 1 else "")
    )
    train_args = [
        "train",
        "--preset",
        "tiny",
        "--data",
        str(shards),
        "--val-data",
        str(shards),
        "--run-dir",
        str(run),
        "--steps",
        str(steps),
        "--nproc-per-node",
        str(nproc),
        "--batch-size",
        str(64 // nproc),
        "--workers",
        "0",
        "--seed",
        str(seed),
        f"val_every={max(1, steps // 3)}",
        f"save_every={max(1, steps // 6)}",
    ]
    if any((run / "checkpoints").glob("step-*.pt")):
        train_args += ["--resume", "latest"]
    _run(train_args)

    console.step("4/6 eval: zero-shot accuracy at every rank on the held-out val split")
    _run(
        [
            "eval",
            "--model",
            str(run),
            "--data",
            str(shards),
            "--split",
            "val",
            "--per-class",
            str(out / "eval-per-class.csv"),
        ]
    )

    console.step(
        f"5/6 classify: the field photos in {world.photos} (what they show: "
        f"{out / 'photos-truth.csv'})"
    )
    _run(["classify", str(world.photos), "--model", str(run), "-k", "3"])

    console.step("6/6 export: a portable, verified model bundle with its label bank")
    _run(["export", str(run), "--out", str(model), "--force"])

    console.step(f"done in {time.time() - t0:.0f}s. What the demo wrote:")
    for path, what in (
        (world.images, "synthetic photos"),
        (world.metadata, "their metadata"),
        (shards, "shards"),
        (run, "training run"),
        (model, "exported model"),
        (out / "eval-per-class.csv", "per-class eval"),
    ):
        console.info(f"    {path}  ({what})")
    console.info("Inspect any of them with `biotrove info PATH`. Repeat a step by hand:")
    for cmd in (
        f"biotrove shard {world.metadata} --images {world.images} --out {shards} "
        f"--image-size 96 --val-fraction 0.2 --min-per-species {demolib.MIN_PER_SPECIES}",
        f"biotrove train --preset tiny --data {shards} --val-data {shards} --run-dir {run} "
        f"--steps {steps} --nproc-per-node {nproc}" + (" --resume latest" if run.exists() else ""),
        f"biotrove eval --model {run} --data {shards} --split val --mode both",
        f"biotrove classify {world.photos} --model {model} --min-confidence 0.5",
        f"biotrove export {run} --out {model} --force",
    ):
        console.info(f"    {cmd}")
