"""Backends that train a list of work items and hand each group's records to `collect` as it finishes."""

from __future__ import annotations

from nalu_cli.benchmark.worker import run_group
from nalu_cli.errors import NaluError


# How often a worker checks that the process that started it is still alive (seconds).
PARENT_CHECK_SECONDS = 0.5


def worker_pool(workers: int):
    """Worker processes that never outlive this one, however it dies (kill -9 included).

    spawn, not fork: TensorFlow's runtime does not survive a fork.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))


def exit_with_parent(parent_pid: int) -> None:
    """In a worker: exit as soon as `parent_pid` is no longer this process's parent.

    A SIGKILLed parent (the out-of-memory killer, a scheduler) runs no cleanup, and its
    workers would otherwise sit idle for good, each holding TensorFlow's memory. An orphan
    is re-parented, so its parent id changes: a daemon thread watches for that.
    """
    import os
    import threading
    import time

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_local(work: list[dict], collect, workers: int, _address) -> None:
    from concurrent.futures import as_completed

    pool = worker_pool(min(workers, len(work)))
    futures = [pool.submit(run_group, item) for item in work]
    try:
        for future in as_completed(futures):
            collect(future.result())
    except BaseException:
        # Interrupted: stop the workers now rather than let them finish groups nobody will record.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def run_ray(work: list[dict], collect, workers: int, address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise NaluError("the Ray backend needs the ray extra: pip install 'nalu-cli[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(num_cpus=workers, log_to_driver=False, include_dashboard=False, logging_level="ERROR")
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise NaluError(f"cannot connect to Ray at {address or 'a new local cluster'}: {error}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_group)
        pending = [remote.remote(item) for item in work]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            collect(ray.get(ready[0]))
    finally:
        if started_here:
            ray.shutdown()


RUNNERS = {"local": run_local, "ray": run_ray}
