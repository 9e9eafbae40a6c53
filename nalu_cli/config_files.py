"""Config files: YAML read as users write it, and a resolved config written back.

PyYAML is imported only here and only when a file is read or written (`nalu --help` never
reads YAML). Errors name the file, the line and the column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nalu_cli.errors import NaluError

if TYPE_CHECKING:
    from nalu_cli.config import Config


def load_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise NaluError(f"config file not found: {path}")
    if not path.is_file():
        raise NaluError(f"config path is not a file: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise NaluError(f"cannot read config file {path}: {error}") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> dict:
    """The settings in YAML `text` (read from `path`, which errors name): a mapping, or {} if empty."""
    import yaml  # here, not at the top: `nalu --help` never reads YAML (18 ms of its start-up)

    try:
        data = yaml.load(text, Loader=_yaml_loader(yaml))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise NaluError(f"malformed YAML in {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NaluError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _yaml_loader(yaml):
    """PyYAML's safe loader, reading exponent numbers without a dot (1e-3, 5E4) as floats.

    PyYAML follows YAML 1.1, where `1e-3` is the string "1e-3"; YAML 1.2 and every
    user mean the number. The resolver is added to a subclass: yaml.SafeLoader is untouched.
    """
    import re

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789"))
    return Loader


def dump_yaml(config: Config) -> str:
    """A resolved config as the YAML nalu writes into a run directory (config.yaml)."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
