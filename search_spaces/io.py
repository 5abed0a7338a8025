"""Atomic file writes: a reader never sees a half-written file, a crash leaves none."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file keeps ``path``'s suffix so libraries that look at it
    (pandas, torch, coremltools) behave as for the final name. On error it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; the result gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: Union[str, Path], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_digest(path: Union[str, Path], length: int = 16) -> str:
    """The SHA-1 of a file's bytes (first ``length`` hex digits): identifies its content."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def check_output(path: Union[str, Path], what: str, folder: bool) -> Path:
    """Refuse, before any work, an output that cannot be written: ``path`` (a folder if ``folder``, else a file)
    must not exist as the other kind, must not lie under a file, and its nearest existing folder must be
    writable. Nothing is created. ``what`` names the option in the message (``--out``)."""
    from search_spaces.errors import InvalidInputError

    path = Path(path)
    expected = "a folder" if folder else "a file"
    if path.exists() and path.is_dir() != folder:
        raise InvalidInputError(f"{what} {str(path)!r} is {'a file' if folder else 'a folder'}; expected {expected}")
    existing = path if folder and path.exists() else path.parent  # files are written by a rename in their folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"{what} {str(path)!r} lies under the file {str(existing)!r}; expected {expected} "
                                "in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{what} {str(path)!r} cannot be written: {str(existing)!r} is read-only")
    return path
