"""The XLA cache: TensorFlow never writes the shared directory; entries there are whole or unused;
a run with it trains the same numbers, and a later run's compilations are read from it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nalu_cli import xla_cache
from tests.conftest import metrics_without_timing

ENTRY = "xla_compile_cache__1__2__XLA_CPU_JIT.pb"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """This process's cache state in tmp_path: (shared, private)."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    monkeypatch.setattr(xla_cache, "_state", {"shared": shared, "private": private})
    return shared, private


def test_only_entries_of_their_recorded_size_are_used(tmp_path):
    (tmp_path / ENTRY).write_bytes(b"x" * 10)
    (tmp_path / f"{ENTRY}.bytes-10").touch()
    (tmp_path / "xla_compile_cache__3__4__XLA_CPU_JIT.pb").write_bytes(b"x" * 7)  # cut short: 10 recorded
    (tmp_path / "xla_compile_cache__3__4__XLA_CPU_JIT.pb.bytes-10").touch()
    (tmp_path / "xla_compile_cache__5__6__XLA_CPU_JIT.pb").write_bytes(b"x")  # no record: not published by us
    (tmp_path / ".incoming-abc").write_bytes(b"x")
    assert xla_cache.complete_entries(tmp_path) == [ENTRY]


def test_publish_copies_what_tensorflow_added_whole_and_records_its_size(cache):
    shared, private = cache
    (private / ENTRY).write_bytes(b"compiled" * 100)
    (shared / "xla_compile_cache__7__8__XLA_CPU_JIT.pb").write_bytes(b"old")
    (shared / "xla_compile_cache__7__8__XLA_CPU_JIT.pb.bytes-3").touch()
    (private / "xla_compile_cache__7__8__XLA_CPU_JIT.pb").symlink_to(shared / "xla_compile_cache__7__8__XLA_CPU_JIT.pb")
    assert xla_cache.publish() == 1
    assert (shared / ENTRY).read_bytes() == b"compiled" * 100 and (shared / f"{ENTRY}.bytes-800").exists()
    assert sorted(xla_cache.complete_entries(shared)) == [ENTRY, "xla_compile_cache__7__8__XLA_CPU_JIT.pb"]
    assert xla_cache.publish() == 0  # published once
    assert not [p for p in shared.iterdir() if p.name.startswith(xla_cache.TEMPORARY_PREFIX)]


def test_a_publish_that_fails_leaves_nothing_half_written_and_raises_nothing(cache, monkeypatch):
    shared, private = cache
    (private / ENTRY).write_bytes(b"compiled")

    def full_disk(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    assert xla_cache.publish() == 0
    assert list(shared.iterdir()) == []


def test_stale_private_directories_go_and_live_ones_stay(tmp_path):
    host = xla_cache._host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"{xla_cache.PRIVATE_PREFIX}{host}-{dead.pid}-abc"
    live = tmp_path / f"{xla_cache.PRIVATE_PREFIX}{host}-{os.getpid()}-abc"
    other = tmp_path / f"{xla_cache.PRIVATE_PREFIX}otherhost-{dead.pid}-abc"  # another machine's /dev/shm user
    for directory in (gone, live, other):
        directory.mkdir()
    xla_cache._remove_stale(tmp_path, tmp_path)
    assert not gone.exists() and live.exists() and other.exists()


def test_a_child_of_a_process_with_the_cache_takes_a_private_directory_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(xla_cache, "_state", {})
    monkeypatch.setattr(xla_cache, "_private_root", lambda shared: tmp_path)
    monkeypatch.setattr(xla_cache, "_finish", lambda: None)
    inherited = f"--tf_xla_persistent_cache_directory={tmp_path / 'parent'} --tf_xla_persistent_cache_read_only=false"
    monkeypatch.setenv("TF_XLA_FLAGS", f"--xla_other_flag=1 {inherited}")
    monkeypatch.setenv(xla_cache.FLAGS_ENV, inherited)
    monkeypatch.setenv(xla_cache.ENV, str(tmp_path / "cache"))
    assert xla_cache.enable()
    flags = os.environ["TF_XLA_FLAGS"]
    assert flags.startswith("--xla_other_flag=1 ") and flags.count("persistent_cache_directory") == 1
    assert f"={xla_cache._state['private']} " in flags and "parent" not in flags
    # A cache the user set up in TF_XLA_FLAGS is theirs: left alone.
    monkeypatch.setattr(xla_cache, "_state", {})
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_persistent_cache_directory=/theirs")
    monkeypatch.delenv(xla_cache.FLAGS_ENV)
    assert not xla_cache.enable() and os.environ["TF_XLA_FLAGS"] == "--tf_xla_persistent_cache_directory=/theirs"


def train(tmp_path, name, seed, cache):
    """A whole `nalu train` process (a-b: solved at its first evaluation) with the cache in `cache`."""
    out = tmp_path / name
    env = {**os.environ, "NALU_XLA_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-m", "nalu_cli", "train", "--op", "sub", "--seed", str(seed), "--steps",
                           "1000", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def private_directories() -> set:
    return set(Path("/dev/shm").glob(f"{xla_cache.PRIVATE_PREFIX}{xla_cache._host()}-*"))


def test_a_later_run_reads_its_compilations_from_the_cache_and_trains_the_same_numbers(tmp_path):
    cache, before = tmp_path / "cache", private_directories()
    first = train(tmp_path, "first", 0, cache)
    (shared,) = cache.iterdir()
    entries = sorted(xla_cache.complete_entries(shared))
    assert len(entries) == 2  # the two members' training chunks
    listing = {p.name: p.stat().st_ino for p in shared.iterdir()}  # a publish renames a new file in
    train(tmp_path, "other_seed", 1, cache)
    assert {p.name: p.stat().st_ino for p in shared.iterdir()} == listing  # another seed: nothing compiled anew
    # An entry cut short (a disk's damage: nalu publishes whole files only) is not read: the next run
    # compiles that graph again, publishes it whole, and reads the other one.
    damaged = shared / entries[0]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    again = train(tmp_path, "again", 0, cache)
    assert sorted(xla_cache.complete_entries(shared)) == entries
    assert (shared / entries[1]).stat().st_ino == listing[entries[1]]
    assert metrics_without_timing(again) == metrics_without_timing(first)  # read or compiled: the same numbers
    assert private_directories() <= before  # each run removed its own at exit


def test_eviction_takes_the_entries_least_recently_linked_and_none_linked_lately(tmp_path):
    now = __import__("time").time()
    for index, age in enumerate((3 * 3600, 2 * 3600, 60)):  # linked 3 h, 2 h and a minute ago
        entry = tmp_path / f"xla_compile_cache__{index}__0__XLA_CPU_JIT.pb"
        entry.write_bytes(b"x" * 100)
        (tmp_path / f"{entry.name}.bytes-100").touch()
        os.utime(entry, (now - age, now - age))
    xla_cache.evict(tmp_path, max_bytes=150)  # 300 bytes: the two oldest go
    assert sorted(xla_cache.complete_entries(tmp_path)) == ["xla_compile_cache__2__0__XLA_CPU_JIT.pb"]
    xla_cache.evict(tmp_path, max_bytes=0)  # the last was linked a minute ago: a run may be about to read it
    assert xla_cache.complete_entries(tmp_path) == ["xla_compile_cache__2__0__XLA_CPU_JIT.pb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xla_compile_cache__2__0__XLA_CPU_JIT.pb",
                                                           "xla_compile_cache__2__0__XLA_CPU_JIT.pb.bytes-100"]


def test_a_process_without_the_cache_drops_the_flags_its_parent_added(monkeypatch):
    ours = "--tf_xla_persistent_cache_directory=/dev/shm/x --tf_xla_persistent_cache_read_only=false"
    monkeypatch.setenv("TF_XLA_FLAGS", f"--xla_other_flag=1 {ours}")
    monkeypatch.setenv(xla_cache.FLAGS_ENV, ours)
    xla_cache.drop_inherited()
    assert os.environ["TF_XLA_FLAGS"] == "--xla_other_flag=1" and xla_cache.FLAGS_ENV not in os.environ
