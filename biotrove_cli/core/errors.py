"""Errors the core raises; the CLI error boundary shows them as ``Error:`` + ``Hint:``."""

from __future__ import annotations


class BiotroveError(Exception):
    """A problem the user can act on: a plain message, a hint naming the next step, an exit code.

    Exit code 1 is a domain/runtime error, 2 a usage error (bad flag value, bad config).
    """

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(BiotroveError):
    """The command line or a config asks for something that cannot be (exit 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more problems in a configuration, all reported at once."""

    def __init__(self, problems: list[str], hint: str | None = None):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} configuration {noun}:\n{lines}", hint=hint)


class InputError(BiotroveError):
    """An input file or folder is missing, unreadable or not in a form biotrove knows."""


class SchemaError(InputError):
    """A metadata table lacks the columns biotrove needs."""


class ModelLoadError(BiotroveError):
    """A model, checkpoint or pretrained tag cannot be loaded."""


class UnsafeCheckpointError(ModelLoadError):
    """A checkpoint's pickle asks to import or call something that is not plain data."""


class CheckpointCorruptError(ModelLoadError):
    """A checkpoint file is truncated or unreadable."""


class NonFiniteError(BiotroveError):
    """A model's weights or embeddings hold NaN or infinite numbers: every score would be noise."""


class OutputExistsError(BiotroveError):
    """An output location already holds something biotrove must not overwrite."""


class TrainingError(BiotroveError):
    """Training cannot start or cannot go on."""


class PreemptedError(BiotroveError):
    """Training was asked to stop (SIGTERM/SIGUSR1) and saved a checkpoint first."""

    exit_code = 75  # EX_TEMPFAIL: "try again later"; SLURM scripts requeue on it


class VerificationError(BiotroveError):
    """An export, reloaded the way a user would, does not reproduce the source model."""
