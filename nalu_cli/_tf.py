"""Import TensorFlow quietly: its C++ start-up logs (oneDNN, CUDA probing) go to fd 2 before
any Python logging is set up, and would bury the one-line messages nalu prints."""

import os
import sys


def import_tensorflow():
    if "tensorflow" in sys.modules or os.environ.get("NALU_DEBUG"):
        import tensorflow

        return tensorflow
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
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
