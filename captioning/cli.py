"""The command-line error contract shared by every entry point (docs/RELIABILITY.md).

An *expected* failure (missing, unreadable or corrupt input, an out-of-range value, artefacts
that do not belong together, an unwritable output, a full disk, a missing optional dependency)
ends with one ``error: …`` line on stderr naming the file or key and what to do, and exit
status 2. Anything else is a bug and keeps its traceback.

    @entry_point
    def main(argv: list[str] | None = None) -> int:
        parser = ArgumentParser(description=__doc__)
        ...

Expected failures are :class:`InputError` (every domain error of this project derives from
it), :class:`OSError` (file system), and a few library errors about the input (truncated
pickles, decompression bombs, a missing optional module).
"""
from __future__ import annotations

import argparse
import errno
import functools
import pickle
import sys
from collections.abc import Callable
from typing import Any

EXIT_INPUT = 2


class InputError(ValueError):
    """An expected failure caused by the user's input; shown as one ``error:`` line, exit status 2."""


def _expected() -> tuple[type[BaseException], ...]:
    from PIL import Image

    from cider import DFFileError
    from clip.images import ImageReadError
    from clip.pretrained import TorchFileError

    return (InputError, OSError, EOFError, pickle.UnpicklingError, ModuleNotFoundError, Image.DecompressionBombError,
            TorchFileError, ImageReadError, DFFileError)


def describe(exc: BaseException) -> str:
    """The message of an expected failure, naming the file where the exception knows it."""
    if isinstance(exc, ModuleNotFoundError):
        return f"the optional dependency {exc.name!r} is not installed; install it (pip install {exc.name}) and run again"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = exc.filename if exc.filename is not None else "an output file"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no space left on the device while writing {where}; free some space and run again"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}: {exc.strerror}; choose a folder you can write to (or fix its permissions)"
        return f"{where}: {exc.strerror}" if exc.filename is not None else str(exc)
    return str(exc)


def report(exc: BaseException) -> int:
    """Print ``exc`` as the one ``error:`` line (continuation lines indented) and return exit status 2."""
    lines = describe(exc).strip().splitlines() or [type(exc).__name__]
    print("error: " + "\n".join([lines[0]] + [ln if ln.startswith(" ") else "  " + ln for ln in lines[1:]]),
          file=sys.stderr)
    return EXIT_INPUT


def entry_point(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap ``main(argv)``: expected failures become one ``error:`` line and status 2; bugs still raise."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            status = main(*args, **kwargs)
        except _expected() as exc:
            return report(exc)
        return 0 if status is None else int(status)

    return wrapper


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's layout and shows every option's default."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the house style: defaults in --help, and a usage mistake is one ``error:`` line."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see {self.prog} --help)")


def at_least(minimum: int | float, name: str, value: int | float) -> None:
    """Raise :class:`InputError` unless ``value >= minimum`` (an out-of-range option)."""
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
