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
from typing import Annotated, Any

import click
import typer


def _run(args: list[str]) -> None:
    """Run one biotrove command in this process, as the user would type it."""
    from biotrove_cli.core.errors import BiotroveError
    from biotrove_cli.output import console

    console.info("$ biotrove " + " ".join(shlex.quote(a) for a in args))
    command = click.get_current_context().find_root().command
    # the root's callback sets the consoles again for each step: hand on the demo's own -q/-v
    verbosity = ["-q"] * console.STATE.quiet + ["-v"] * console.STATE.verbose
    rv = command.main(args=verbosity + args, prog_name="biotrove", standalone_mode=False)
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

    console.step(f"1/6 building the sample world in {out}")
    console.info(
        f"    {species} real species (+{demolib.RARE_SPECIES} rare ones) from the "
        "shipped iNat2021/Arboretum label bank; the photos are synthetic: each species "
        "gets a look derived from its lineage, so relatives look alike"
    )
    with progress.progress("photos", unit="photos") as tick:
        world = demolib.build_world(out, species, images_per_species, seed=seed, progress=tick)
    console.info(f"    {world.n_images} photos in {world.images}, metadata in {world.metadata}")

    steps_run = _steps(out, world, steps=steps, nproc=nproc, seed=seed)
    for number, (title, args) in enumerate(steps_run, start=2):
        console.step(f"{number}/6 {title}")
        _run(args)

    console.step(f"done in {time.time() - t0:.0f}s. What the demo wrote:")
    for path, what in (
        (world.images, "synthetic photos"),
        (world.metadata, "their metadata"),
        (out / "shards", "shards"),
        (out / "run", "training run"),
        (out / "model", "exported model"),
        (out / "eval-per-class.csv", "per-class eval"),
    ):
        console.info(f"    {path}  ({what})")
    console.info("Inspect any of them with `biotrove info PATH`. Repeat a step by hand:")
    for _, args in steps_run:
        console.info("    biotrove " + " ".join(shlex.quote(a) for a in args))


def _steps(
    out: Path, world: Any, *, steps: int, nproc: int, seed: int
) -> list[tuple[str, list[str]]]:
    """The demo's commands after the sample world, each as (title, arguments): the one list
    that is run and then printed for repeating a step by hand. Each works again as printed:
    shard and train resume (train's ``--resume auto``), the others rewrite their output."""
    from biotrove_cli.core import demo as demolib

    shards, run, model = str(out / "shards"), out / "run", str(out / "model")
    shard = ["shard", str(world.metadata), "--images", str(world.images), "--out", shards]
    shard += ["--image-size", "96", "--val-fraction", "0.2"]
    shard += ["--min-per-species", str(demolib.MIN_PER_SPECIES), "--samples-per-shard", "64"]
    shard += ["--seed", str(seed)]
    train = ["train", "--preset", "tiny", "--data", shards, "--val-data", shards]
    train += ["--run-dir", str(run), "--steps", str(steps), "--nproc-per-node", str(nproc)]
    train += ["--batch-size", str(64 // nproc), "--workers", "0", "--seed", str(seed)]
    train += [f"val_every={max(1, steps // 3)}", f"save_every={max(1, steps // 6)}"]
    per_class = str(out / "eval-per-class.csv")
    evaluate = ["eval", "--model", str(run), "--data", shards, "--split", "val"]
    evaluate += ["--per-class", per_class]
    torchrun = f", {nproc} processes through torchrun (gloo)" if nproc > 1 else ""
    truth = out / "photos-truth.csv"
    return [
        ("shard: metadata + photos -> WebDataset shards (train/val/unseen)", shard),
        (f"train: the tiny CLIP for {steps} steps{torchrun}", train),
        ("eval: zero-shot accuracy at every rank on the held-out val split", evaluate),
        (
            f"classify: the field photos in {world.photos} (what they show: {truth})",
            ["classify", str(world.photos), "--model", str(run), "-k", "3"],
        ),
        (
            "export: a portable, verified model bundle with its label bank",
            ["export", str(run), "--out", model, "--force"],
        ),
    ]
