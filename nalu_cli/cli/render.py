"""Rich output for the commands: a console, and a table made from a header and rows.

Rich is imported on first use, not at import time, so `nalu --help` does not load it.
"""

from __future__ import annotations


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def table(header: list[str], rows: list[list[str]], **options):
    """A Rich table with one column per header entry; `options` (title, caption) go to rich.table.Table."""
    from rich.table import Table

    grid = Table(**options)
    for column in header:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*row)
    return grid
