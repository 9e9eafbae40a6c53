"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""

import errno
import os


class NaluError(Exception):
    """A problem with the user's input (flags, config, paths, data), not a bug."""


class WriteError(NaluError):
    """A file nalu could not write: the disk is full, a file too large, or the place read-only or not permitted."""


# What a write fails with when the cause is the disk or the place, not nalu: full, file too large
# (a file-size limit), quota, read-only, no permission.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def as_write_error(error: BaseException, path=None) -> "WriteError | None":
    """`error` as a WriteError if it is a failed write (an OSError with one of WRITE_ERRNOS), else None."""
    if isinstance(error, WriteError):
        return error
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        where = error.filename or path
        return WriteError(f"cannot write {where}: {error.strerror}" if where else f"cannot write: {error.strerror}")
    return None


def debugging() -> bool:
    """Whether NALU_DEBUG asks for tracebacks and TensorFlow's own logs: set, and not 0, false, no or off."""
    return os.environ.get("NALU_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
