"""A cache of XLA's compiled training graphs shared by the runs of this machine: a run skips the
compilation an earlier run already did (0.55-1.1 s of a 5-13 s `nalu train` here; README, "Speed and memory").

TensorFlow keeps the executables it compiles in a directory when asked
(TF_XLA_FLAGS=--tf_xla_persistent_cache_directory), keyed by the compiled program. A training
chunk takes its seeds' streams as arguments (training/step.py), so one entry serves every seed of
an architecture, op and task shape. TensorFlow's own handling of that directory is not safe to
share: it writes an entry straight to its final name (a run killed mid-write leaves a truncated
entry, and every later run fails reading it with a traceback), and an error writing one (a full
disk) fails the compilation itself. So TensorFlow never writes to the shared directory:

- it is given a private directory of this process (in /dev/shm where there is one) holding a
  symbolic link to each complete entry of the shared one;
- what it adds there, `publish` (at the process's exit) copies to the shared directory under a
  temporary name, flushes to disk and renames, a whole file or none, then records the entry's
  size by the name of an empty file beside it (`ENTRY.bytes-N`); an entry is linked only if its
  size is the one recorded;
- anything going wrong (no home, a read-only or full disk) leaves the cache out of the run,
  which then runs as without it, never failed by it.

The shared directory is per TensorFlow version and CPU (an executable is compiled for the
host's instruction set: a home shared between machines must not hand one to another), and holds
at most MAX_BYTES (the entries least recently linked go first). TensorFlow's key names the traced
function, whose name carries a counter of the functions traced before it in the process: a
`nalu train` traces in the same order every time and finds its entries, a benchmark worker,
whose groups' cells come in any order, mostly would not, so `nalu benchmark` leaves the cache
out (its workers reuse their graphs in memory instead). The numbers trained are the same with
and without it. NALU_XLA_CACHE=off turns it off;
NALU_XLA_CACHE=DIR puts it in DIR (default: $XDG_CACHE_HOME/nalu/xla, else ~/.cache/nalu/xla).
No TensorFlow here: `enable` runs before it is imported.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ENV = "NALU_XLA_CACHE"
ENTRY_PREFIX = "xla_compile_cache"  # TensorFlow's names for its entries
SIZE_MARK = ".bytes-"
PRIVATE_PREFIX = "nalu-xla-"
TEMPORARY_PREFIX = ".incoming-"
FLAGS_ENV = "NALU_XLA_CACHE_FLAGS"  # the flags `enable` added to TF_XLA_FLAGS, for its child processes
# A publish's temporary file older than this was cut short (a publish takes well under a second);
# an entry no run has linked for this long may be evicted (a run reads its entries as it starts).
STALE_SECONDS = 3600
# Beyond this size the entries least recently linked go (a default-model run adds about 1.2 MB a
# config and op it has not run before).
MAX_BYTES = 256 * 2**20
# TensorFlow fails a compilation if it cannot write an entry: below this much free space in the
# private directory it only reads.
MIN_FREE_BYTES = 256 * 2**20

_state: dict = {}  # "shared", "private": the directories of this process, once enabled


def enable() -> bool:
    """Point TensorFlow at this process's private cache directory; call before importing it.
    False (and the cache left out) if it is off, TF_XLA_FLAGS names a cache of its own, or the
    shared directory cannot be made."""
    setting = os.environ.get(ENV, "")
    # A process started by one that enabled the cache inherits its flags: it takes its own directory.
    flags = os.environ.get("TF_XLA_FLAGS", "").replace(os.environ.get(FLAGS_ENV, "\0"), "").strip()
    if _state or setting.lower() in ("off", "0", "false", "no") or "persistent_cache" in flags:
        return bool(_state)
    try:
        shared = shared_directory(Path(setting) if setting else None)
        shared.mkdir(parents=True, exist_ok=True)
        root = _private_root(shared)
        _remove_stale(root, shared)
        private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{_host()}-{os.getpid()}-", dir=root))
        for entry in complete_entries(shared):
            (private / entry).symlink_to(shared / entry)
            _touch(shared / entry)  # in use: the last an eviction takes
        read_only = shutil.disk_usage(private).free < MIN_FREE_BYTES
    except OSError:
        return False
    ours = (f"--tf_xla_persistent_cache_directory={private} "
            f"--tf_xla_persistent_cache_read_only={'true' if read_only else 'false'}")
    os.environ["TF_XLA_FLAGS"], os.environ[FLAGS_ENV] = f"{flags} {ours}".strip(), ours
    _state.update(shared=shared, private=private)
    import multiprocessing.util  # its exit function runs in worker processes too, unlike atexit's

    multiprocessing.util.Finalize(None, _finish, exitpriority=10)
    return True


def drop_inherited() -> None:
    """Leave the cache out of this process: the flags a parent process's `enable` added go."""
    ours = os.environ.pop(FLAGS_ENV, None)
    if ours and "TF_XLA_FLAGS" in os.environ:
        os.environ["TF_XLA_FLAGS"] = os.environ["TF_XLA_FLAGS"].replace(ours, "").strip()


def shared_directory(base: Path | None = None) -> Path:
    """The shared directory for this TensorFlow and CPU, under `base` or the user's cache directory."""
    if base is None:
        cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache_home) / "nalu" / "xla"
    return base / f"tf-{_tensorflow_version()}-{_cpu_fingerprint()}"


def complete_entries(shared: Path) -> list[str]:
    """The entries of `shared` whose size is one recorded when they were published."""
    names = os.listdir(shared)
    recorded: dict[str, set] = {}
    for name in names:
        entry, mark, size = name.rpartition(SIZE_MARK)
        if mark and size.isdigit():
            recorded.setdefault(entry, set()).add(int(size))
    complete = []
    for name in names:
        if name.startswith(ENTRY_PREFIX) and SIZE_MARK not in name and name in recorded:
            try:
                if (shared / name).stat().st_size in recorded[name]:
                    complete.append(name)
            except OSError:
                pass
    return complete


def publish() -> int:
    """Copy the entries TensorFlow added to this process's private directory into the shared one
    (whole files only); returns how many. An error (a full or read-only disk) publishes no more."""
    if not _state:
        return 0
    shared, private, published = _state["shared"], _state["private"], 0
    try:
        complete = set(complete_entries(shared))
        for name in sorted(os.listdir(private)):
            if name.startswith(ENTRY_PREFIX) and name not in complete and not (private / name).is_symlink():
                _publish_one(private / name, shared)
                published += 1
        if published:
            evict(shared)
    except OSError:
        pass
    return published


def evict(shared: Path, max_bytes: int = MAX_BYTES) -> None:
    """Remove the entries least recently linked until the cache holds at most `max_bytes`, none
    linked within STALE_SECONDS (a run that linked one may be about to read it)."""
    entries = []
    for name in os.listdir(shared):
        if name.startswith(ENTRY_PREFIX) and SIZE_MARK not in name:
            try:
                stat = (shared / name).stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, name))
    total, now = sum(size for _, size, _ in entries), time.time()
    for mtime, size, name in sorted(entries):
        if total <= max_bytes or now - mtime < STALE_SECONDS:
            break
        for path in [shared / name, *shared.glob(f"{name}{SIZE_MARK}*")]:
            path.unlink(missing_ok=True)
        total -= size


def _publish_one(source: Path, shared: Path) -> None:
    size = source.stat().st_size
    for final, content in ((shared / source.name, source), (shared / f"{source.name}{SIZE_MARK}{size}", None)):
        handle, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=shared)
        try:
            with os.fdopen(handle, "wb") as out:
                if content is not None:
                    with open(content, "rb") as data:
                        shutil.copyfileobj(data, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _finish() -> None:
    """At exit: publish what is left, then remove the private directory."""
    publish()
    private = _state.get("private")
    if private is not None:
        shutil.rmtree(private, ignore_errors=True)


def _private_root(shared: Path) -> Path:
    """/dev/shm where it can be written (memory: a full disk cannot fail a compilation), else the shared directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else shared


def _remove_stale(root: Path, shared: Path) -> None:
    """Private directories of this host's processes that are gone (killed before their exit ran),
    and temporary files of publishes cut short."""
    prefix = f"{PRIVATE_PREFIX}{_host()}-"
    for path in root.iterdir():
        pid = path.name[len(prefix):].split("-")[0] if path.name.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    now = time.time()
    for path in shared.iterdir():
        try:
            if path.name.startswith(TEMPORARY_PREFIX) and now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
        except OSError:  # renamed or removed by its own process meanwhile
            pass


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # a cache we may read but not write
        pass


def _host() -> str:
    return platform.node().replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tensorflow_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cpu_fingerprint() -> str:
    """The machine's architecture and its CPU's model and instruction-set flags, hashed."""
    described = [platform.machine()]
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and line not in described:
                    described.append(line)
                if not line.strip() and len(described) > 1:
                    break  # the first processor's block
    except OSError:
        described.append(platform.processor())
    return hashlib.sha256("".join(described).encode()).hexdigest()[:12]
