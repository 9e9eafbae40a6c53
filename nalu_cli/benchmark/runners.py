"""Backends that train a list of work items and hand each group's records to `collect` as it finishes."""

from __future__ import annotations

from nalu_cli.benchmark.worker import run_group
from nalu_cli.errors import NaluError


def run_local(work: list[dict], collect, workers: int, _address) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: TensorFlow's runtime does not survive a fork.
    pool = ProcessPoolExecutor(max_workers=min(workers, len(work)), mp_context=multiprocessing.get_context("spawn"))
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
