"""Reading the files a manifest names (the manifest itself, `context`, a prompt file,
`lines()`, `inputs`): regular files only, and no more of them than a limit.

A FIFO would block the read for ever, /dev/zero or /dev/urandom never end: such a file named
by mistake (or by a symlink) must be an error that says so, not a hang or gigabytes in memory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

TEXT_LIMIT = 16 << 20  # bytes of one file read whole (a prompt, a context file, a list)


def refusal(path: Path, *, limit: int = TEXT_LIMIT) -> OSError | None:
    """Why `path` may not be read whole (not there, not a regular file, over `limit`), as
    the OSError a read would raise; None if it may. Follows symlinks, as a read does."""
    try:
        info = os.stat(path)
    except OSError as err:
        return err
    return _refusal(path, info, limit)


def _refusal(path: Path, info: os.stat_result, limit: int) -> OSError | None:
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        return OSError(errno.EINVAL, kind, str(path))
    if info.st_size > limit:
        return OSError(errno.EFBIG, f"larger than {limit >> 20} MiB", str(path))
    return None


def read_bytes(path: Path, *, limit: int = TEXT_LIMIT) -> bytes:
    """The whole of a regular file of at most `limit` bytes; else OSError (its `strerror`
    says why: "not a regular file", "larger than 16 MiB", "No such file or directory")."""
    # O_NONBLOCK: opening a FIFO for reading would wait for a writer; it is refused after.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        refused = _refusal(path, os.fstat(fd), limit)
        if refused is not None:
            raise refused
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 20):  # a file that grows as it is read stops too
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit >> 20} MiB", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path, *, limit: int = TEXT_LIMIT, errors: str = "strict") -> str:
    return read_bytes(path, limit=limit).decode("utf-8", errors=errors)


def digest_source(path: Path) -> int | None:
    """A descriptor to hash the content of `path` from (any size), or None when it is not a
    regular file (a device, a FIFO, a folder, missing): never one that blocks or never ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None
