"""A model saved as .keras loads in a fresh process that imports only nalu_cli."""

import subprocess
import sys

import numpy as np

from nalu_cli.config import ModelConfig
from nalu_cli.model import build_model

RELOAD = """
import sys, numpy as np, keras
import nalu_cli.units  # registers the layers
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(model(x)))
"""


def test_keras_file_reloads_in_fresh_process(tmp_path):
    model = build_model(ModelConfig(unit="nalu"), input_size=10, seed=3)
    x = np.random.default_rng(0).uniform(1, 2, (16, 10)).astype(np.float32)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [sys.executable, "-c", RELOAD, tmp_path / "model.keras", tmp_path / "x.npy", tmp_path / "y.npy"],
        check=True,
        capture_output=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.asarray(model(x)))


def test_same_seed_same_initial_weights():
    first = build_model(ModelConfig(unit="nalu"), input_size=10, seed=5)
    second = build_model(ModelConfig(unit="nalu"), input_size=10, seed=5)
    other = build_model(ModelConfig(unit="nalu"), input_size=10, seed=6)
    for a, b, c in zip(first.get_weights(), second.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
