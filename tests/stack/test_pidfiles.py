"""The stack signals only its own processes: a pidfile names a process by boot, pid and start tick.

After a crash or a reboot the pid in a pidfile may belong to any process; `genops stack down` must leave it
alone and clear the stale pidfile. (No services needed: a plain `sleep` stands in for the stranger.)
"""

from __future__ import annotations

import json
import subprocess

from genops.stack.layout import StackLayout
from genops.stack.services import _identity, _owned, _record, stop


def _stranger() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_a_stale_pidfile_naming_a_live_stranger_leaves_it_running(tmp_path):
    layout = StackLayout(tmp_path)
    layout.run.mkdir(parents=True)
    stranger = _stranger()
    try:
        # the pid is live, but the process started at another tick than the service recorded (pid reused)
        real = _identity(stranger.pid)
        layout.pidfile("mlflow").write_text(json.dumps({**real, "start_ticks": real["start_ticks"] - 1000,
                                                        "cmdline": ["mlflow", "server"]}))
        assert stop(layout, "mlflow", timeout=1) is False
        assert stranger.poll() is None  # not signalled
        assert not layout.pidfile("mlflow").exists()  # the stale pidfile is gone
        # same pid and tick, another boot: after a reboot the numbers repeat, the boot id does not
        layout.pidfile("worker").write_text(json.dumps({**real, "boot_id": "another-boot"}))
        assert stop(layout, "worker", timeout=1) is False and stranger.poll() is None
        assert not layout.pidfile("worker").exists()
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
    record = json.loads(layout.pidfile("worker").read_text())
    # no wall-clock time in the identity: a clock step (NTP, a VM restored from a snapshot) must not orphan it
    assert set(record) == {"pid", "boot_id", "start_ticks", "cmdline"} and record["cmdline"] == ["sleep", "60"]
    assert _owned(layout, "worker") == ours.pid
    assert stop(layout, "worker", timeout=5) is True
    assert ours.wait(10) is not None and not layout.pidfile("worker").exists()
    assert _owned(layout, "worker") is None
