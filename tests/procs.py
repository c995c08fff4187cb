"""Process helpers for crash tests: start a command, SIGKILL it at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kill_when_file_appears(cmd: list[str], path: Path, env: dict[str, str],
                           timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and SIGKILL it (no cleanup, like a dead worker) once ``path`` exists.

    Returns the finished process (its return code is ``-SIGKILL``). Fails the test when the
    command ends first or ``path`` does not appear within ``timeout_s``.
    """
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
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
