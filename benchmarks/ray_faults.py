"""`nalu benchmark --backend ray` when things fail: bad addresses, a dead driver, a lost node.

    .venv/bin/python benchmarks/ray_faults.py [--parts addresses,driver,node]

addresses  `--ray-address` where no Ray cluster answers: exit code, seconds, lines on stderr.
driver     the driver (`nalu benchmark`) SIGKILLed, and stopped with Ctrl-C, once its first
           results are in: on the local cluster it started itself, and on a cluster that
           outlives it (ray.cluster_utils.Cluster): when its tasks (`ray::run_group`) and, for
           its own cluster, every Ray process are gone; the rerun's results against an
           uninterrupted local-backend run.
node       a simulated two-node cluster (Cluster: a head and a worker node, one CPU each); the
           worker node is removed (its processes killed) while it trains a group: the
           benchmark must finish, with results equal to the local backend's.

Slow (each `nalu benchmark` imports TensorFlow in every worker); run it by hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_kills import (  # noqa: E402
    CONFIG, GRID, NALU, command_line, comparable, descendants, interactive, wait_gone)

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
BAD_ADDRESSES = {
    "port closed": "127.0.0.1:1",
    "host unknown": "host.invalid:6379",
    "not HOST:PORT": "nonsense",
    "auto, no cluster here": "auto",
    "not routed (10.255.255.1)": "10.255.255.1:6379",
}


def tasks_below(pids: set[int]) -> set[int]:
    """The `ray::run_group` processes (nalu's tasks) among `pids` and everything below them."""
    everything = set(pids).union(*(descendants(pid) for pid in pids))
    return {pid for pid in everything if command_line(pid).startswith("ray::run_group")}


def silent_port() -> int:
    """A port that accepts connections and never says a word (on every address: Ray connects to
    this machine's own IP address where given 127.0.0.1)."""
    import socket
    import threading

    server, accepted = socket.create_server(("0.0.0.0", 0)), []

    def accept_forever():
        while True:
            accepted.append(server.accept())

    threading.Thread(target=accept_forever, daemon=True).start()
    return server.getsockname()[1]


def addresses_part(root: Path) -> list[list[str]]:
    rows = []
    for name, address in {**BAD_ADDRESSES, "accepts, never answers": f"127.0.0.1:{silent_port()}"}.items():
        started = time.perf_counter()
        result = subprocess.run([*NALU, "benchmark", "--ops", "add", "--units", "nac", "--seeds", "1", "--steps", "100",
                                 "--backend", "ray", "--ray-address", address, "--out", str(root / "bad-address")],
                                capture_output=True, text=True, env=ENV, timeout=600)
        lines = result.stderr.strip().splitlines()
        rows.append([name, f"`{address}`", str(result.returncode), f"{time.perf_counter() - started:.1f}",
                     str(len(lines)), "yes" if "Traceback" in result.stderr else "no",
                     lines[-1][:110] if lines else ""])
    return rows


def start_benchmark(args: list[str], out: Path) -> subprocess.Popen:
    """`nalu benchmark ... --out OUT` in its own process group, stderr to OUT.stderr."""
    stderr = open(out.with_name(out.name + ".stderr"), "w")
    return subprocess.Popen([*NALU, *args, "--out", str(out)], start_new_session=True, preexec_fn=interactive,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=stderr, text=True)


def stderr_of(out: Path) -> str:
    return out.with_name(out.name + ".stderr").read_text()


def wait_for(condition, limit: float = 600) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def has_results(out: Path) -> bool:
    return (out / "results.jsonl").exists() and bool((out / "results.jsonl").read_text().strip())


def stop(process: subprocess.Popen, how: str) -> float:
    """Stop the driver `how`; the seconds it took to exit."""
    sent = time.perf_counter()
    if how == "SIGKILL":
        os.kill(process.pid, signal.SIGKILL)
    else:
        os.killpg(process.pid, signal.SIGINT)
    process.wait()
    return time.perf_counter() - sent


def driver_part(root: Path, whole: Path, args: list[str]) -> list[list[str]]:
    import ray
    from ray.cluster_utils import Cluster

    rows = []
    for how in ("SIGKILL", "Ctrl-C"):
        # Its own cluster: every Ray process below the driver goes with it.
        out = root / f"own-{how}"
        process = start_benchmark([*args, "--backend", "ray", "--workers", "2"], out)
        wait_for(lambda: has_results(out) and tasks_below({process.pid}))
        tree, tasks = descendants(process.pid), tasks_below({process.pid})
        exited = stop(process, how)
        tasks_gone, _ = wait_gone(tasks, 60)
        all_gone, left = wait_gone(tree, 120)
        rerun = subprocess.run([*NALU, *args, "--backend", "ray", "--workers", "2", "--out", str(out)],
                               capture_output=True, text=True, env=ENV)
        rows.append([f"{how}, cluster it started", f"{exited:.1f}", seconds(tasks_gone),
                     seconds(all_gone, left, tree, 120),
                     traceback(out), verdict(rerun, out, whole)])

    for how in ("SIGKILL", "Ctrl-C"):
        # A cluster that outlives the driver: its tasks must not run on for nobody.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        raylet = cluster.head_node.all_processes["raylet"][0].process.pid
        out = root / f"external-{how}"
        ray_args = [*args, "--backend", "ray", "--ray-address", cluster.address]
        process = start_benchmark(ray_args, out)
        wait_for(lambda: has_results(out) and tasks_below({raylet}))
        tasks = tasks_below({raylet})
        exited = stop(process, how)
        tasks_gone, _ = wait_gone(tasks, 120)
        rerun = subprocess.run([*NALU, *ray_args, "--out", str(out)], capture_output=True, text=True, env=ENV)
        rows.append([f"{how}, cluster outlives it", f"{exited:.1f}", seconds(tasks_gone), "(cluster kept)",
                     traceback(out),
                     verdict(rerun, out, whole)])
        cluster.shutdown()
        ray.shutdown()
    return rows


def node_part(root: Path, whole: Path, args: list[str]) -> list[list[str]]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    raylet = worker.all_processes["raylet"][0].process.pid
    out = root / "lost-node"
    started = time.perf_counter()
    process = start_benchmark([*args, "--backend", "ray", "--ray-address", cluster.address], out)
    wait_for(lambda: has_results(out) and tasks_below({raylet}))  # mid-benchmark, a group on the worker node
    finished = len((out / "results.jsonl").read_text().splitlines()) if has_results(out) else 0
    removed_at = time.perf_counter() - started
    cluster.remove_node(worker, allow_graceful=False)
    process.wait(timeout=1800)
    total = time.perf_counter() - started
    err = stderr_of(out)
    lines = err.strip().splitlines()
    cluster.shutdown()
    result = subprocess.CompletedProcess(process.args, process.returncode, "", err)
    return [[f"worker node removed at {removed_at:.0f} s (training a group; {finished} results in)",
             str(process.returncode), f"{total:.0f}", verdict(result, out, whole), lines[-1][:90] if lines else ""]]


def seconds(value: float | None, left=(), tree=(), limit: float = 60) -> str:
    if value is not None:
        return f"{value:.1f}"
    names = sorted({command_line(pid)[:24] for pid in left})
    return f"{len(left)} of {len(tree)} alive at {limit:.0f} s: " + ", ".join(names)


def traceback(out: Path) -> str:
    return "yes" if "Traceback" in stderr_of(out) else "no"


def verdict(result: subprocess.CompletedProcess, out: Path, whole: Path) -> str:
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1][:80]}"
    return "equal" if comparable(out) == comparable(whole) else "DIFFERS"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="addresses,driver,node")
    parts = parser.parse_args(argv).parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "addresses" in parts:
            header = ["--ray-address", "given", "exit code", "seconds", "stderr lines", "traceback", "the line"]
            print("\n`nalu benchmark --backend ray --ray-address ADDRESS` where no Ray cluster answers\n")
            print(table(header, addresses_part(root)))
        if "driver" in parts or "node" in parts:
            (root / "bench.yaml").write_text(CONFIG)
            args = ["benchmark", *GRID, "--config", str(root / "bench.yaml")]
            whole = root / "whole"
            done = subprocess.run([*NALU, *args, "--workers", "2", "--out", str(whole)], capture_output=True,
                                  text=True, env=ENV)
            assert done.returncode == 0, done.stderr
        if "driver" in parts:
            header = ["driver stopped", "driver exited after (s)", "its tasks gone after that (s)",
                      "all its Ray processes gone after that (s)", "traceback", "rerun vs local backend"]
            print("\n`nalu benchmark --backend ray` stopped once its first results are in\n")
            print(table(header, driver_part(root, whole, args)))
        if "node" in parts:
            header = ["fault", "exit code", "seconds", "results vs local backend", "last line on stderr"]
            print("\nTwo-node cluster (ray.cluster_utils.Cluster), a node lost mid-benchmark\n")
            print(table(header, node_part(root, whole, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
