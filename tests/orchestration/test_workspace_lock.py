"""One pipeline per workspace: a second is refused with a clear message; a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from genops.errors import GenopsError
from genops.orchestration.workspace import workspace_lock

HOLD = "import sys, time; from genops.orchestration.workspace import workspace_lock\n" \
       "with workspace_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)"


def test_second_pipeline_is_refused_and_a_killed_one_releases_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = rf"another genops pipeline is running in {tmp_path} \(pid {holder.pid}, started .*wait for it"
        with pytest.raises(GenopsError, match=refused), workspace_lock(tmp_path):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops a dead process's lock: the next run gets it
        try:
            with workspace_lock(tmp_path):
                break
        except GenopsError:
            assert time.monotonic() < deadline, "lock still held after its holder was killed"
            time.sleep(0.1)
