"""Every sample config is valid, and each op's file trains that op."""

from pathlib import Path

import pytest

from nalu_cli.config import OPS, resolve
from nalu_cli.config_files import load_yaml

SAMPLES = Path(__file__).resolve().parents[1] / "sample_configs"


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_sample_config_resolves(path):
    config = resolve(load_yaml(path))
    if path.stem in OPS:
        assert config.task.op == path.stem


def test_there_is_a_sample_config_per_op():
    assert {p.stem for p in SAMPLES.glob("*.yaml")} >= set(OPS)
