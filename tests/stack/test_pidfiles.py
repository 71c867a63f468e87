"""The stack signals only its own processes: a pidfile names a process by pid, start time and command line.

After a crash or a reboot the pid in a pidfile may belong to any process; `genops stack down` must leave it
alone and clear the stale pidfile. (No services needed: a plain `sleep` stands in for the stranger.)
"""

from __future__ import annotations

import json
import subprocess
import time

from genops.stack.layout import StackLayout
from genops.stack.services import _owned, _record, stop


def _stranger() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_a_stale_pidfile_naming_a_live_stranger_leaves_it_running(tmp_path):
    layout = StackLayout(tmp_path)
    layout.run.mkdir(parents=True)
    stranger = _stranger()
    try:
        # the pid is live, but the process started at another time than the service recorded (pid reused)
        layout.pidfile("mlflow").write_text(json.dumps({"pid": stranger.pid, "create_time": time.time() - 3600,
                                                        "cmdline": ["mlflow", "server"]}))
        assert stop(layout, "mlflow", timeout=1) is False
        assert stranger.poll() is None  # not signalled
        assert not layout.pidfile("mlflow").exists()  # the stale pidfile is gone
        # an older pidfile holding only a number cannot be verified: nothing is signalled either
        layout.pidfile("prefect").write_text(f"{stranger.pid}\n")
        assert stop(layout, "prefect", timeout=1) is False and stranger.poll() is None
        assert not layout.pidfile("prefect").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_the_stacks_own_process_is_recognised_and_stopped(tmp_path):
    layout = StackLayout(tmp_path)
    layout.run.mkdir(parents=True)
    ours = _stranger()
    _record(layout, "worker", ours.pid)
    assert _owned(layout, "worker").pid == ours.pid
    assert stop(layout, "worker", timeout=5) is True
    assert ours.wait(10) is not None and not layout.pidfile("worker").exists()
    assert _owned(layout, "worker") is None
