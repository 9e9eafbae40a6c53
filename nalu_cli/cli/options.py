"""Arguments and options that several commands share, and the choices they accept.

Typer reads a parameter's flag and help from its `Annotated` metadata, so a flag that means
the same in every command is declared once here (as huggingface_hub's CLI does).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from nalu_cli.config import OPS, TASK_KINDS

Op = Enum("Op", {op: op for op in OPS}, type=str)
TaskKind = Enum("TaskKind", {kind: kind for kind in TASK_KINDS}, type=str)


class Protocol(str, Enum):
    mj = "mj"
    trask = "trask"


class Backend(str, Enum):
    local = "local"
    ray = "ray"


ModelPathArg = Annotated[Path, typer.Argument(help="Run directory or nalu SavedModel.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
TaskOption = Annotated[
    Optional[TaskKind],
    typer.Option("--task", help="static: one vector in; recurrent: a sequence in, y after its last step (task.kind)."),
]


def overwrite_option(target: str):
    """`--overwrite / --no-overwrite`, its help naming what it replaces: overwrite_option("image at --out").

    Use as `overwrite: Annotated[bool, overwrite_option(...)] = False`.
    """
    return typer.Option(help=f"Replace an existing {target}.")
