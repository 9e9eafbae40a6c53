"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""

import os


class NaluError(Exception):
    """A problem with the user's input (flags, config, paths, data), not a bug."""


def debugging() -> bool:
    """Whether NALU_DEBUG asks for tracebacks and TensorFlow's own logs: set, and not 0, false, no or off."""
    return os.environ.get("NALU_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")
