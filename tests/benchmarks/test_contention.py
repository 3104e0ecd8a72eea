"""The bounded busy load of the captioning benchmark's contention row: it spins while held and never outlives its
bounds (the block, its deadline, its parent)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.contention import BUSY_LOAD, busy_core, thread_counts


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_the_busy_load_spins_while_held_and_reports_its_cpu_time():
    with busy_core(max_seconds=30) as record:
        time.sleep(0.3)
    assert record["held_s"] >= 0.3 and 0 < record["load_cpu_s"] <= record["held_s"] + 0.05


def test_a_load_that_ends_before_the_round_raises():
    with pytest.raises(RuntimeError, match="stopped before the round ended"), busy_core(max_seconds=0.1):
        time.sleep(0.5)


def test_the_busy_load_stops_when_its_parent_is_killed():
    command = f'"{sys.executable}" -I -S "{BUSY_LOAD}" $$ 60 & echo $!; wait'
    shell = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, text=True)
    lines = sorted(shell.stdout.readline().strip() for _ in range(2))  # its pid and "spinning", in either order
    pid = int(lines[0])
    assert lines[1] == "spinning" and alive(pid)
    shell.kill()
    shell.wait()
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid)


def test_thread_counts_hold_one_two_and_every_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert thread_counts() == [1, 2, 16]
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert thread_counts() == [1, 2]
