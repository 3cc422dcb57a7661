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


class BusyError(BiotroveError):
    """Another live process is writing to the same run folder, dataset folder or output file."""


class TrainingError(BiotroveError):
    """Training cannot start or cannot go on."""


class PreemptedError(BiotroveError):
    """Training was asked to stop (SIGTERM/SIGUSR1) and saved a checkpoint first."""

    exit_code = 75  # EX_TEMPFAIL: "try again later"; SLURM scripts requeue on it


class InterruptedByUser(BiotroveError):
    """Stopped by Ctrl-C (SIGINT) after saving what resumes the job (exit 130)."""

    exit_code = 130


class VerificationError(BiotroveError):
    """An export, reloaded the way a user would, does not reproduce the source model."""


# -- ordinary OS errors: the user's to fix, not bugs ------------------------------------------
_OS_ERRORS: dict[str, tuple[str, str]] = {
    # errno name: (what happened to PATH, what to do)
    "ENOSPC": ("no space left on the device", "free some space there, or write to another disk"),
    "EDQUOT": ("disk quota exceeded", "free some space in your quota, or write elsewhere"),
    "EFBIG": (
        "file too large (for this file system, or for the file size limit, `ulimit -f`)",
        "write to another file system, or raise the limit",
    ),
    "EACCES": (
        "permission denied",
        "check the permissions of that path and of the folders above it, or write elsewhere",
    ),
    "EPERM": ("operation not permitted", "check the permissions of that path, or write elsewhere"),
    "EROFS": ("read-only file system", "write to a folder on a writable file system"),
    "ENOTDIR": (
        "a part of this path is a file where a folder should be",
        "check the path; pick a location whose parent folders are folders",
    ),
    "EISDIR": ("is a folder where a file is needed", "give a file name, not a folder"),
    "EEXIST": ("already exists", "remove it, or pick another name"),
    "ENOENT": ("no such file or folder", "check the path"),
    "ENAMETOOLONG": ("file name too long", "use a shorter name or a shallower folder"),
    "ELOOP": ("too many levels of symbolic links", "check the links on that path"),
    "EIO": ("input/output error", "the disk or network file system failed; check it, then rerun"),
    "ENXIO": ("no such device or address", "check the path (a FIFO needs a reader)"),
    "ENODEV": ("no such device", "check the path"),
    "EBUSY": ("device or resource busy", "wait for what uses it, or write elsewhere"),
    "ETXTBSY": ("file busy", "wait for what uses it, or write elsewhere"),
    "ENOTEMPTY": ("folder not empty", "empty it, or pick another folder"),
    "EMFILE": ("too many open files", "raise the limit (`ulimit -n`) or use fewer --workers"),
    "ENFILE": ("too many open files in the system", "close other programs, or use fewer --workers"),
    "ENOMEM": ("out of memory", "use a smaller --batch-size or fewer --workers"),
}


def os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError behind ``exc``: itself, or one it was raised from or while handling (torch
    and pyarrow turn a failed write into their own RuntimeError, raised during the OSError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def from_os_error(exc: OSError) -> BiotroveError | None:
    """An ordinary OS error (no space left, permission denied, a read-only file system, a file
    where a folder should be...) as a BiotroveError that says what failed, on which path, and
    what to do; None for one that is not the user's to fix (a bug)."""
    import errno as errno_

    name = errno_.errorcode.get(exc.errno or -1, "")
    path = exc.filename
    if name not in _OS_ERRORS:
        if path is None:
            return None
        what, hint = (exc.strerror or type(exc).__name__), "check the path, then rerun"
    else:
        what, hint = _OS_ERRORS[name]
    if path is None:
        return BiotroveError(what[0].upper() + what[1:], hint=hint)
    other = exc.filename2
    where = str(path) + (f" -> {other}" if other is not None and str(other) != str(path) else "")
    if str(path).startswith(("/proc/", "/sys/")) or str(path) in ("/proc", "/sys"):
        hint = "that is a kernel interface, not a place for files; write elsewhere"
    elif name == "EEXIST" and _is_file(str(path)):
        what, hint = "is a file where a folder is needed", "pick another folder, or move the file"
    return BiotroveError(f"{where}: {what}", hint=hint)


def _is_file(path: str) -> bool:
    import os

    return os.path.isfile(path)
