"""Import TensorFlow quietly: its C++ start-up logs (oneDNN, CUDA probing) go to fd 2 before
any Python logging is set up, and would bury the one-line messages nalu prints."""

import contextlib
import os
import sys

from nalu_cli import xla_cache
from nalu_cli.errors import WriteError, debugging


def import_tensorflow(cache_compilations: bool = True):
    """TensorFlow, imported with its start-up logs silenced; `cache_compilations`: with the XLA
    cache (nalu_cli/xla_cache.py) when this call is the one that imports it."""
    if "tensorflow" in sys.modules or debugging():
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if cache_compilations:  # before TensorFlow reads TF_XLA_FLAGS
        xla_cache.enable()
    else:
        xla_cache.drop_inherited()
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with _without_matplotlib():
            import tensorflow

        tensorflow.config.list_physical_devices()  # the CUDA probe logs here, not at import
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    # Python-side warnings too (e.g. "N calls triggered tf.function retracing" when a benchmark
    # worker builds one trainer per group of seeds): expected here, and noise for a user.
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


@contextlib.contextmanager
def _without_matplotlib():
    """matplotlib unimportable while TensorFlow imports Keras, if it is not imported already.

    keras.src.visualization imports matplotlib.pyplot when it is installed (the plot extra), for
    image galleries nalu never draws: 31 MiB of every TensorFlow process and 0.45 s of its import
    here. Keras catches the ImportError; afterwards matplotlib imports as usual (nalu_cli.plots),
    and only Keras's own visualization functions in this process go without it.
    """
    if "matplotlib" in sys.modules:
        yield
        return
    sys.modules["matplotlib"] = None  # an import of it raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("matplotlib", True) is None:
            del sys.modules["matplotlib"]


def use_threads(tf, threads: int = 1) -> bool:
    """Run TensorFlow's ops on `threads` threads (intra-op; one inter-op thread); False if the
    runtime had already started.

    These models' ops are tiny: handing one model's ops to a thread pool costs more than it
    saves. Measured with the replica trainer (a*b, 8,000 steps): the default model with 4
    restarts trained in 4.9 s on one thread against 8.0 s on TF's default pools, one
    NAU -> NMU in 1.6 against 1.8 s, 8 in 7.1 against 8.2 s; at 16 they broke even and at 32
    the pools won (19.5 against 25.7 s). Several architectures, each stepped from its own
    Python thread (trainer.train), need a thread each: XLA runs a compiled chunk on the
    intra-op pool, so with one thread two chunks take turns. One thread or several, every
    op sums in the same order: the numbers do not change (README, "Design").
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime already started in this process (e.g. inside a test)
        return False
    return True


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing).

    XLA's compilations free far more than they keep, and glibc keeps what they freed in the
    middle of its heap: after a recurrent run's first evaluation 52 MiB of its resident memory
    was such pages, and the chunks compiled next rose from there (README, "Speed and memory").
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def tensorflow_writes(path):
    """TensorFlow fails a write with its own errors (under a file-size limit, an OutOfRangeError with
    no message): as one WriteError naming `path`."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as error:
        reason = (str(error.message or "").strip().splitlines() or [f"TensorFlow's {type(error).__name__}"])[0]
        raise WriteError(f"cannot write {path}: {reason} (is the disk full, or the place read-only?)") from None
