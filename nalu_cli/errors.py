"""Errors a user can cause. The CLI turns them into one line on stderr and exit code 2."""


class NaluError(Exception):
    """A problem with the user's input (flags, config, paths, data), not a bug."""
