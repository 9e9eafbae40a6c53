"""Writing models out: SavedModel (with its task spec), .keras, TFLite, ONNX; loading SavedModels back.

A nalu SavedModel has one `serving_default` signature taking float32 `x` of
shape [None, input_size] (a recurrent model: [None, None, input_size], sequences of
any length) and returning `y` of shape [None, 1]; it loads with plain
`tf.saved_model.load`, no nalu import needed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from nalu_cli import __version__, faults
from nalu_cli.errors import NaluError
from nalu_cli.outputs import check_apart, check_output, replacing
from nalu_cli.rundir import (
    INPUT_NAME,
    KERAS_FILE,
    META_FILE,
    OUTPUT_NAME,
    SAVED_MODEL_PB,
    ModelSource,
    atomic_path,
    resolve_source,
    rewrite_hint,
)

FORMATS = ("savedmodel", "keras", "tflite", "onnx")


def make_meta(task_spec: dict, model_config: dict, **extra) -> dict:
    return {
        "format": "nalu-saved-model",
        "nalu_version": __version__,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "task": task_spec,
        "model": model_config,
        **extra,
    }


def input_shape(task: dict) -> list:
    """The serving input's shape for a task spec (as a dict): [None, n], or [None, None, n] for sequences."""
    size = int(task["input_size"])
    return [None, None, size] if task.get("kind", "static") == "recurrent" else [None, size]


def write_saved_model(model, meta: dict, path: Path) -> None:
    """Atomically write `model` as a SavedModel with a stable `serving_default` signature."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda x: {OUTPUT_NAME: model(x, training=False)},
        input_signature=[tf.TensorSpec(input_shape(meta["task"]), tf.float32, name=INPUT_NAME)],
    )
    from nalu_cli._tf import tensorflow_writes

    with atomic_path(path, directory=True) as tmp:  # locked: `recover` deletes it only once its writer is gone
        with tensorflow_writes(path):
            archive.write_out(str(tmp), verbose=False)
        (tmp / META_FILE).parent.mkdir(parents=True, exist_ok=True)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        faults.reached("saved-model", tmp / SAVED_MODEL_PB)


def write_model(model, meta: dict, saved_model_path: Path, keras_path: Path | None = None) -> None:
    """Write `model` as a SavedModel carrying `meta` and, given `keras_path`, as a .keras file; each atomically.

    The SavedModel is written first: `keras_path` may lie inside it (`out/model.keras` of an
    export or a snap), and writing the SavedModel replaces its directory. A run directory
    holds the two side by side (`saved_model/`, `model.keras`).
    """
    write_saved_model(model, meta, saved_model_path)
    if keras_path is not None:
        with atomic_path(keras_path) as tmp:
            model.save(str(tmp))
            faults.reached("keras", tmp)


class SavedModelPredictor:
    """Calls a SavedModel's serving signature on numpy batches."""

    def __init__(self, path: Path):
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(path))
            self._signature = self._loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise NaluError(f"cannot load SavedModel {path}: {first_line}") from None
        spec = self._signature.structured_input_signature[1][INPUT_NAME]
        self.input_size = int(spec.shape[-1])
        self.recurrent = spec.shape.rank == 3

    def __call__(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        import tensorflow as tf

        x = np.asarray(x, dtype=np.float32)
        expected = "[N, T, {}] (sequences)" if self.recurrent else "[N, {}]"
        if not self.recurrent and x.ndim == 3:
            raise NaluError(f"a static model reads one sample per row, shape [N, {self.input_size}]; "
                            f"got sequences of shape {list(x.shape)}")
        if x.ndim != (3 if self.recurrent else 2) or x.shape[-1] != self.input_size or (self.recurrent and x.shape[1] < 1):
            raise NaluError(f"model expects inputs of shape {expected.format(self.input_size)}, got {list(x.shape)}")
        if not np.all(np.isfinite(x)):
            row = int(np.flatnonzero(~np.all(np.isfinite(x.reshape(len(x), -1)), axis=1))[0])
            raise NaluError(f"inputs must be finite numbers; row {row} holds NaN or inf")
        # About 10^7 numbers a call: long sequences go through in smaller batches.
        batch_size = batch_size or max(1, 10_000_000 // max(1, int(np.prod(x.shape[1:]))))
        outputs = [
            self._signature(**{INPUT_NAME: tf.constant(x[i : i + batch_size])})[OUTPUT_NAME].numpy()
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs, axis=0)


def read_inputs(path: Path) -> np.ndarray:
    """Inference inputs from a .npy file or a CSV/whitespace text file, one sample per row."""
    path = Path(path)
    if not path.exists():
        raise NaluError(f"no such input file: {path}")
    if not path.is_file():
        raise NaluError(f"input path is not a file: {path}")
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            delimiter = "," if "," in text else None
            with warnings.catch_warnings():  # "input contained no data": said below, in one line
                warnings.simplefilter("ignore", UserWarning)
                data = np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=np.float64)
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as error:  # EOFError: an empty .npy
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise NaluError(f"cannot read inputs from {path}: {reason}") from None
    if data.ndim == 1:
        data = data[None, :]
    if not np.issubdtype(data.dtype, np.number):
        raise NaluError(f"inputs in {path} are not numbers")
    if data.size == 0:
        raise NaluError(f"{path} holds no inputs")
    return data


def predict(source_path: Path, input_path: Path) -> np.ndarray:
    """Predictions of a run or nalu SavedModel for the rows of an input file.

    A static model reads one sample per row (.npy [N, n] or CSV); a recurrent one reads
    sequences, a .npy of shape [N, T, n] (a CSV row cannot hold a sequence).
    """
    source = resolve_source(Path(source_path))
    if source.meta["task"].get("kind", "static") == "recurrent" and Path(input_path).suffix != ".npy":
        n = source.meta["task"]["input_size"]
        raise NaluError(f"a recurrent model reads sequences: give a .npy file of shape [N, T, {n}], "
                        f"not {Path(input_path).name} (a CSV row cannot hold a sequence)")
    x = read_inputs(input_path)
    return SavedModelPredictor(source.saved_model)(x)[:, 0]


def load_keras_model(path: Path, fix: str = ""):
    """A .keras file as a Keras model, or one error naming it (and `fix`, what to do about damage)."""
    import keras

    import nalu_cli.units  # noqa: F401  (registers the unit layers for deserialisation)

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as error:  # keras raises many types for unreadable archives
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise NaluError(f"cannot load Keras model {path}: {reason}{'; ' + fix if fix else ''}") from None


def export(source_path: Path, out: Path, formats: list[str], overwrite: bool = False) -> dict:
    """Export a run (or a nalu SavedModel) to `out`, a SavedModel directory holding the other formats too.

    out/                 the SavedModel (always written; the other formats derive from it)
    out/model.keras      --format keras
    out/model.tflite     --format tflite
    out/model.onnx       --format onnx (needs the `onnx` extra)

    Recurrent models export as savedmodel, keras and onnx (tf2onnx turns the RNN's while loop
    into an ONNX Loop; onnxruntime runs any sequence length). TFLite is refused: the loop keeps
    its inputs in TensorList ops and computes in float64, which TFLite's built-in ops cannot run
    (converting the pure forward pass instead still needs float64 FlexStridedSlice); the
    SELECT_TF_OPS conversion needs the Flex delegate at run time, which tf.lite's own
    interpreter does not link (measured with TF 2.21).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise NaluError(f"unknown export format '{unknown[0]}' (choose from {', '.join(FORMATS)})")
    if "onnx" in formats:
        _require_onnx()
    source = resolve_source(Path(source_path))
    if "tflite" in formats and source.meta["task"].get("kind", "static") == "recurrent":
        raise NaluError(
            "--format tflite cannot hold a recurrent model: its float64 loop over TensorList ops needs TF's "
            "Flex delegate, which TFLite interpreters lack; use savedmodel, keras or onnx"
        )
    out = Path(out)
    check_apart(source.run_dir or source.saved_model, out)
    check_output(out, overwrite, kind="SavedModel")  # before loading the model, so a refusal is immediate
    model = _source_keras_model(source) if ("keras" in formats or source.run_dir) else None
    written = {}
    with replacing(out, overwrite, kind="SavedModel"):
        if model is not None:
            write_model(model, source.meta, out, out / KERAS_FILE if "keras" in formats else None)
        else:
            _copy_saved_model(source, out)
        written["savedmodel"] = str(out)
        if "keras" in formats:
            written["keras"] = str(out / KERAS_FILE)
        if "tflite" in formats:
            written["tflite"] = str(_write_tflite(out))
        if "onnx" in formats:
            written["onnx"] = str(_write_onnx(out, source.meta))
    return {"source": str(source_path), "out": str(out), "files": written, "task": source.meta["task"]}


def _source_keras_model(source: ModelSource):
    if source.run_dir is None:
        raise NaluError("--format keras needs a run directory (a bare SavedModel has no Keras model)")
    keras_path = source.run_dir / KERAS_FILE
    if not keras_path.is_file():
        raise NaluError(f"run {source.run_dir} has no {KERAS_FILE}")
    return load_keras_model(keras_path, rewrite_hint(source.run_dir))


def _copy_saved_model(source: ModelSource, out: Path) -> None:
    import shutil

    with atomic_path(out, directory=True) as tmp:
        shutil.copytree(source.saved_model, tmp, dirs_exist_ok=True)
        faults.reached("saved-model", tmp / SAVED_MODEL_PB)


def _write_tflite(out: Path) -> Path:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(out))
    flatbuffer = converter.convert()
    path = out / "model.tflite"
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    return path


def tflite_interpreter(path: Path):
    """An interpreter for a .tflite file, allocated: LiteRT's (`ai_edge_litert`, the `tflite` extra)
    where it is installed, else tf.lite's, the same API, without the warning that it is deprecated.

    Measured with ai-edge-litert 2.3.0 and TF 2.21: LiteRT runs nalu's exports in a process that
    imported TensorFlow first, and the other way round (tests/test_export.py runs it after TF).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
            return tf.lite.Interpreter(model_path=str(path))
    return Interpreter(model_path=str(path))


def predict_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """A .tflite model's outputs for the float32 rows of `x` (one call, resized to the batch)."""
    interpreter = tflite_interpreter(path)
    x = np.asarray(x, dtype=np.float32)
    (tensor,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(tensor["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(tensor["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        raise NaluError("ONNX export needs the onnx extra: pip install 'nalu-cli[onnx]'") from None


def _write_onnx(out: Path, meta: dict) -> Path:
    import tensorflow as tf
    import tf2onnx

    loaded = tf.saved_model.load(str(out))  # keep a reference: the signature needs its variables alive
    signature = loaded.signatures["serving_default"]

    @tf.function(autograph=False)
    def serve(x):
        return signature(**{INPUT_NAME: x})

    spec = (tf.TensorSpec(input_shape(meta["task"]), tf.float32, name=INPUT_NAME),)
    model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=17)
    path = out / "model.onnx"
    with atomic_path(path) as tmp:
        tmp.write_bytes(model_proto.SerializeToString())
    return path
