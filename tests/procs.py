"""Process helpers for crash tests: start a command, SIGKILL it at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kill_when_file_appears(
    cmd: list[str], path: Path, env: dict[str, str], timeout_s: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and SIGKILL it (no cleanup, like a dead worker) once ``path`` exists.

    Returns the finished process (its return code is ``-SIGKILL``). Fails the test when the
    command ends first or ``path`` does not appear within ``timeout_s``.
    """
    proc = subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not path.exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"{path.name} did not appear in {timeout_s} s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.wait(timeout=60)
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {err[-2000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def crash_and_resume(
    cmd: list[str],
    checkpoint: Path,
    env: dict[str, str],
) -> tuple[int, list[dict], subprocess.CompletedProcess[str]]:
    """SIGKILL a training command at its first checkpoint, then run it again to the end.

    Returns (epoch of the checkpoint at the kill, its history records, the finished rerun).
    """
    import json

    from tarq.model.io import load_weights

    kill_when_file_appears(cmd, checkpoint, env)
    out = checkpoint.parent.parent  # <out>/checkpoints/last.pt
    assert not (out / "model.pt").exists() and not (out / "metrics.json").exists()
    ckpt = load_weights(checkpoint)
    done = int(ckpt["epoch"])
    assert done < 2, "training finished before the kill; the fault was not injected"
    at_kill = json.loads(ckpt["history"])
    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"tarq epoch {done + 2}/3" in rerun.stderr  # resumed after the checkpoint
    return done, at_kill, rerun
