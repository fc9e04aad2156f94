"""Issue 16: a local Ray runtime started by `segment --ray` ends with its command, whatever happens
(a SIGTERM while Ray starts, kill -9 of the driver). Real subprocesses, real signals, real Ray."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]


def _start(photos: Path, out: Path, model: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "unetlite.infer.cli", "segment", str(photos), "-o", str(out),
                             "--ray", "--providers", "cpu", "--no-progress", "--model", str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time of every process below ``pid`` (from /proc)."""
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                data = open(f"/proc/{name}/stat", "rb").read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2:].split()
            procs[int(name)] = (int(fields[1]), int(fields[19]))
    found, stack = {}, [pid]
    while stack:
        parent = stack.pop()
        for child, (ppid, start) in procs.items():
            if ppid == parent and child not in found:
                found[child] = start
                stack.append(child)
    return found


def _alive(pid: int, start: int) -> bool:
    try:
        data = open(f"/proc/{pid}/stat", "rb").read()
    except OSError:
        return False
    return int(data[data.rindex(b")") + 2:].split()[19]) == start and b") Z" not in data


def _wait_for_child(proc: subprocess.Popen, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _descendants(proc.pid):
            try:
                if name in open(f"/proc/{pid}/comm").read():
                    return
            except OSError:
                pass
        time.sleep(0.05)
    pytest.fail(f"no {name} started")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_sigterm_while_ray_starts_exits_143_with_the_summary(tiny_onnx, pets_dir, tmp_path):
    proc = _start(pets_dir / "images", tmp_path / "out", tiny_onnx)
    _wait_for_child(proc, "gcs_server")       # Ray is starting: its first process is up
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr
    assert re.search(r"0 done, 0 skipped .*; interrupted \(the rest resumes on the next run\)", stdout)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_kill_9_of_the_driver_leaves_no_ray_process_behind(tiny_onnx, pets_dir, tmp_path):
    proc = _start(pets_dir / "images", tmp_path / "out", tiny_onnx)
    for line in proc.stderr:                    # the plan line: the runtime is up, the job about to run
        if re.search(r"; \d+ workers? x \(", line):
            break
    started = _descendants(proc.pid)
    assert started                              # gcs_server, raylet, agents...
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in started.items()):
        time.sleep(0.2)
    left = [p for p, s in started.items() if _alive(p, s)]
    assert not left, [open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:80] for p in left]
