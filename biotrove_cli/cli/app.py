"""The root ``biotrove`` app: global flags, command registration, and ``main()``, the single
error boundary (``Error:`` + ``Hint:``, no traceback; ``BIOTROVE_DEBUG=1`` re-raises).

The global flags ``-q/--quiet`` and ``-v/--verbose`` are accepted before and after the
subcommand (``biotrove -q classify ...`` and ``biotrove classify ... -q``): every command gets
them too. Ordinary OS errors (no space left, permission denied, a read-only file system...)
are the user's to fix, not bugs: the boundary says what failed, where, and what to do."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Any

import click
import typer

from biotrove_cli import __version__
from biotrove_cli.core.errors import (
    BiotroveError,
    InterruptedByUser,
    from_os_error,
    os_error_in,
)
from biotrove_cli.output import console

HELP = (
    "biotrove: CLIP-style vision-language models of biodiversity, from metadata to deployed "
    "classifier.\n\n"
    "shard -> train -> eval -> classify/embed -> export, with one taxonomy-aware schema. "
    "Results go to stdout; progress, logs and errors to stderr.\n\n"
    "Exit codes: 0 ok, 1 error, 2 usage error, 130 interrupted."
)

app = typer.Typer(
    name="biotrove",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)


QUIET_HELP = "Only results and errors; no progress."
VERBOSE_HELP = (
    "More detail on stderr: resolved paths, model and data decisions, timings per stage "
    "(-vv: library logs too)."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"biotrove {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
    verbose: Annotated[
        int,
        typer.Option("--verbose", "-v", count=True, help=VERBOSE_HELP),
    ] = 0,
) -> None:
    """Global flags; configure the consoles before any command runs."""
    console.configure(quiet=quiet, verbose=verbose)


def _late_global_flag(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``-q``/``-v`` given after the subcommand: add them to those given before it."""
    if param.name == "quiet" and value:
        console.configure(quiet=True, verbose=console.STATE.verbose)
    elif param.name == "verbose" and value:
        console.configure(quiet=console.STATE.quiet, verbose=console.STATE.verbose + value)


def _with_global_flags(command: click.Command) -> None:
    """Give a subcommand the global ``-q``/``-v`` (position-free global flags), and with
    ``-v`` log the options it runs with and how long it took."""
    names = {opt for p in command.params for opt in getattr(p, "opts", [])}
    if "-q" in names or "-v" in names:
        return
    if command.callback is not None:
        command.callback = _traced(command.name or "command", command.callback)
    command.params += [
        click.Option(
            ["--quiet", "-q"],
            is_flag=True,
            expose_value=False,
            callback=_late_global_flag,
            help=QUIET_HELP,
        ),
        click.Option(
            ["--verbose", "-v"],
            count=True,
            expose_value=False,
            callback=_late_global_flag,
            help=VERBOSE_HELP,
        ),
    ]


def _traced(name: str, callback: Any) -> Any:
    """``callback`` logging (``-v``) the values it was called with and its run time."""
    import functools

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        given = {k: v for k, v in kwargs.items() if v not in (None, False, [], ())}
        console.debug(f"{name}: " + ", ".join(f"{k}={_shown(v)}" for k, v in given.items()))
        t0 = time.perf_counter()
        try:
            return callback(*args, **kwargs)
        finally:
            console.debug(f"{name}: {time.perf_counter() - t0:.2f} s in all")

    return run


def _shown(value: Any) -> str:
    value = getattr(value, "value", value)  # choice enums
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


def _register() -> None:
    """Add the commands (as huggingface_hub's ``cli/hf.py`` does): command modules are plain
    functions that never import this root; none imports torch or open_clip at import time."""
    from biotrove_cli.cli.classify import classify_cmd
    from biotrove_cli.cli.completion import completion_cmd
    from biotrove_cli.cli.demo import demo_cmd
    from biotrove_cli.cli.embed import embed_cmd
    from biotrove_cli.cli.eval import eval_cmd
    from biotrove_cli.cli.export import EXAMPLES as EXPORT_EXAMPLES
    from biotrove_cli.cli.export import export_cmd
    from biotrove_cli.cli.info import info_cmd
    from biotrove_cli.cli.models import models_cmd
    from biotrove_cli.cli.presets import presets_cmd
    from biotrove_cli.cli.report import report_cmd
    from biotrove_cli.cli.shard import EPILOG as SHARD_EPILOG
    from biotrove_cli.cli.shard import shard_cmd
    from biotrove_cli.cli.train import train_cmd
    from biotrove_cli.cli.tune import EPILOG as TUNE_EPILOG
    from biotrove_cli.cli.tune import tune_cmd

    app.command("classify", rich_help_panel="Evaluate and use")(classify_cmd)
    app.command("completion", rich_help_panel="Inspect")(completion_cmd)
    app.command("demo", rich_help_panel="Pipeline")(demo_cmd)
    app.command("embed", rich_help_panel="Evaluate and use")(embed_cmd)
    app.command("eval", rich_help_panel="Evaluate and use")(eval_cmd)
    app.command("export", rich_help_panel="Models", epilog=EXPORT_EXAMPLES)(export_cmd)
    app.command("info", rich_help_panel="Inspect")(info_cmd)
    app.command("models", rich_help_panel="Models")(models_cmd)
    app.command("presets", rich_help_panel="Inspect")(presets_cmd)
    app.command("report", rich_help_panel="Inspect")(report_cmd)
    app.command("shard", rich_help_panel="Data", epilog=SHARD_EPILOG)(shard_cmd)
    app.command("train", rich_help_panel="Pipeline")(train_cmd)
    app.command("tune", rich_help_panel="Pipeline", epilog=TUNE_EPILOG)(tune_cmd)


_register()


def root_command() -> click.Group:
    """The click command tree of the whole CLI (every command with the global flags too)."""
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    for command in root.commands.values():
        _with_global_flags(command)
    return root


def completion_script(shell: str) -> str:
    """The static completion script of ``shell`` for this CLI (``completions/`` holds them)."""
    from biotrove_cli.cli.completion import Shell, generate

    return generate(Shell(shell), root_command())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; every error ends here."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = console.debug_enabled()
    command = root_command()
    try:
        rv = command.main(args=args, prog_name="biotrove", standalone_mode=False)
        # click returns the exit code of an Exit (e.g. 130 after Ctrl-C) in this mode
        code = rv if isinstance(rv, int) else 0
        if code == 130:
            console.err().print("Interrupted.")
        return code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        console.err().print("Interrupted.")
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        console.err().print("Interrupted.")
        return 130
    except InterruptedByUser as exc:  # Ctrl-C after saving what resumes the job
        console.interrupted(exc.message, exc.hint)
        return int(exc.exit_code)
    except BiotroveError as exc:
        if debug:
            raise
        console.error(exc.message, exc.hint)
        return int(exc.exit_code)
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 0
    except Exception as exc:  # the last line of defence: never a bare traceback
        if debug:
            raise
        # no space left, permission denied...: the user's to fix (also when torch or pyarrow
        # reports the failed write as an error of their own)
        os_exc = os_error_in(exc)
        known = from_os_error(os_exc) if os_exc is not None else None
        if known is None:
            return _bug(exc)
        console.error(known.message, known.hint)
        return int(known.exit_code)


def _bug(exc: BaseException) -> int:
    """What is left is a bug of ours: say so, and how to get the traceback."""
    console.error(
        f"unexpected {type(exc).__name__}: {exc}",
        "this is a bug in biotrove; rerun with BIOTROVE_DEBUG=1 for the traceback and report it",
    )
    return 1
