"""Backends that train a list of work items and hand each group's records to `collect` as it finishes."""

from __future__ import annotations

from nalu_cli.benchmark.worker import run_group
from nalu_cli.errors import NaluError


# How often a worker checks that the process that started it is still alive (seconds).
PARENT_CHECK_SECONDS = 0.5
# A Ray task whose worker or node dies runs again elsewhere, this many times at most. A group
# is a pure function of its work item, so a retry gives the same records; only a finished
# task's records are collected, once, and lines already written are never touched.
RAY_RETRIES = 3
# How long --ray-address may take to answer (seconds): ray.init itself retries for minutes.
RAY_CONNECT_SECONDS = 5


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
    Ctrl-C, which a terminal sends to every process of the command, is the parent's to
    answer (it stops the workers): a worker ignores it rather than print a traceback.
    """
    import os
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_local(work: list[dict], collect, workers: int, _address) -> None:
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    from nalu_cli._tf import cores

    processes = min(workers, len(work))
    pool = worker_pool(processes)
    # Cores left over by fewer workers go to each worker's architectures (see trainer.train).
    futures = [pool.submit(run_group, item, max(1, cores() // processes)) for item in work]
    try:
        for future in as_completed(futures):
            collect(future.result())
    except BaseException as error:
        # Interrupted: stop the workers now rather than let them finish groups nobody will record.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(error, BrokenProcessPool):  # a worker was killed (the out-of-memory killer, kill -9)
            raise NaluError("a benchmark worker process died (killed, or out of memory?); "
                            "finished seeds are kept: rerun the same command to resume") from None
        raise
    pool.shutdown()


def run_ray(work: list[dict], collect, workers: int, address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise NaluError("the Ray backend needs the ray extra: pip install 'nalu-cli[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(ray, workers, address)
    try:
        remote = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(run_group)
        pending = [remote.remote(item) for item in work]
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                collect(ray.get(ready[0]))
        except BaseException as error:
            for ref in pending:  # on a cluster that outlives this process too, stop what nobody will record
                ray.cancel(ref, force=True)
            if isinstance(error, ray.exceptions.RayError) and not isinstance(error, ray.exceptions.RayTaskError):
                raise NaluError(f"Ray lost a group of seeds ({type(error).__name__}), retried {RAY_RETRIES} times; "
                                "finished seeds are kept: rerun the same command to resume") from None
            raise
    finally:
        if started_here:
            ray.shutdown()


def init_ray(ray, workers: int, address: str | None) -> None:
    """Connect to `address` (or start a local cluster of `workers` CPUs), or one clear error."""
    import signal

    if address:
        check_ray_address(address)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            # Ray runs its workers at nice 15 by default: beside any other busy process they
            # crawl (a benchmark of 28 s at nice 0 took 294 s next to two busy processes here).
            # Workers started for this benchmark are the job, as the local backend's are.
            ray.init(num_cpus=workers, log_to_driver=False, include_dashboard=False, logging_level="ERROR",
                     _system_config={"worker_niceness": 0})
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise NaluError(f"cannot connect to Ray at {address or 'a new local cluster'}: {error}") from None
    finally:
        if sigterm is not None:  # ray.init makes SIGTERM exit at once; keep the caller's (`nalu benchmark`: Ctrl-C's)
            signal.signal(signal.SIGTERM, sigterm)


def check_ray_address(address: str) -> None:
    """One clear line for a --ray-address where no Ray cluster answers: ray.init would retry
    for minutes, printing its own warnings. Asks the address for its cluster id, as ray.init does."""
    import grpc
    import ray._private.services as services
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    try:  # what ray.init would connect to: RAY_ADDRESS, or for auto the cluster recorded on this machine
        resolved = services.canonicalize_bootstrap_address(address.removeprefix("ray://"))
    except ConnectionError as error:
        raise NaluError(f"cannot connect to Ray at {address}: {error}") from None
    except ValueError:
        raise NaluError(f"--ray-address must be auto or HOST:PORT, got '{address}'") from None
    if resolved is None or address.startswith("ray://"):  # Ray Client speaks another protocol: ray.init checks
        return
    with grpc.insecure_channel(resolved, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=RAY_CONNECT_SECONDS)
        except grpc.RpcError as error:
            code = error.code()
            where = address if resolved == address else f"{address} ({resolved})"
            if code == grpc.StatusCode.UNAVAILABLE:
                raise NaluError(f"cannot reach a Ray cluster at {where}: {error.details()}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise NaluError(f"no Ray cluster answered at {where} within {RAY_CONNECT_SECONDS} s") from None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise NaluError(f"{where} is not a Ray cluster's address: give the head node's GCS port "
                                "(6379 unless set otherwise)") from None
            # anything else (authentication, say): ray.init knows better


RUNNERS = {"local": run_local, "ray": run_ray}
