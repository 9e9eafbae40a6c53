"""Every unit exports to a SavedModel that plain TensorFlow loads and runs without nalu_cli."""

import json
import subprocess
import sys

import numpy as np

from nalu_cli.config import UNITS, ModelConfig
from nalu_cli.export import make_meta, write_saved_model
from nalu_cli.model import build_model

LOAD_ALL = """
import json, sys, numpy as np, tensorflow as tf
x = np.load(sys.argv[1])
outputs = {}
for unit, path in json.loads(sys.argv[2]).items():
    serve = tf.saved_model.load(path).signatures["serving_default"]
    outputs[unit] = serve(x=tf.constant(x))["y"].numpy()
np.savez(sys.argv[3], **outputs)
assert not any(name.startswith("nalu_cli") for name in sys.modules), "nalu_cli was imported"
"""


def test_every_unit_round_trips_through_a_plain_tensorflow_saved_model(tmp_path):
    x = np.random.default_rng(0).uniform(1, 2, (32, 10)).astype(np.float32)
    task = {"op": "mul", "input_size": 10, "subsets": [[0, 3], [2, 5]], "interpolation_range": [[1, 2]],
            "extrapolation_range": [[2, 6]], "seed": 0}
    expected, paths = {}, {}
    for unit in UNITS:
        model_config = ModelConfig(unit=unit)
        model = build_model(model_config, input_size=10, seed=1)
        expected[unit] = np.asarray(model(x))
        paths[unit] = str(tmp_path / unit)
        write_saved_model(model, make_meta(task, {"unit": unit}), tmp_path / unit)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [sys.executable, "-c", LOAD_ALL, tmp_path / "x.npy", json.dumps(paths), tmp_path / "y.npz"],
        check=True, capture_output=True, cwd=tmp_path,
    )
    with np.load(tmp_path / "y.npz") as loaded:
        for unit in UNITS:
            np.testing.assert_allclose(loaded[unit], expected[unit], rtol=1e-5, err_msg=unit)
