"""Atomic file writing: a crash never leaves a truncated result behind."""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from captioning.cli import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The parent folder is created. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _read_umask() -> int:
    """The process umask. Reading it means setting it, so this runs once, at import: calling it
    from concurrent writers could leave the umask at 0 for the rest of the run."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a file that is not valid JSON (truncated, binary) is an error naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a valid JSON file ({e}); is it truncated? Write it again") from None


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent)


def write_pickle(path: str | os.PathLike, obj: Any, protocol: int = 2) -> None:
    """Pickle ``obj`` atomically (protocol 2 by default, as the original's n-gram files)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=protocol)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
