"""Prefect retries a stage only when its failure is transient (retry_condition_fn), in a real flow run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from genops.errors import StageFailed, TransientError, is_transient

FLOW = textwrap.dedent('''
    import json, sys
    from prefect import flow
    from genops.orchestration.dvc_graph import StageInfo
    from genops.orchestration.flow import run_stage

    @flow(retry_delay_seconds=0)
    def two_stages(workspace):
        out = {}
        for name, cmd in json.loads(sys.argv[2]).items():
            try:
                run_stage.with_options(retry_delay_seconds=0)(workspace, StageInfo(name, cmd, None))
                out[name] = "ok"
            except Exception as exc:
                out[name] = type(exc).__name__
        return out

    print(json.dumps(two_stages(sys.argv[1])))
''')


def test_transient_failures_are_retried_and_deterministic_ones_are_not(tmp_path):
    # Each command appends to its own attempts file, then fails: 75 (EX_TEMPFAIL) on the first two attempts
    # only; 2 (a GenopsError: e.g. validation or parity) every time; killed by SIGKILL once.
    def counting(name: str, first_codes: str, then: int) -> str:
        f = tmp_path / f"{name}.attempts"
        return (f"echo x >> {f}; n=$(wc -l < {f}); case $n in {first_codes}) kill -9 $$ 2>/dev/null; exit 75;; "
                f"esac; exit {then}") if name == "killed" else (
                f"echo x >> {f}; n=$(wc -l < {f}); case $n in {first_codes}) exit 75;; esac; exit {then}")

    stages = {"flaky": counting("flaky", "1|2", 0), "rejected": f"echo x >> {tmp_path}/rejected.attempts; exit 2",
              "killed": counting("killed", "1", 0)}
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    proc = subprocess.run([sys.executable, "-c", FLOW, str(tmp_path), json.dumps(stages)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    attempts = {n: len((tmp_path / f"{n}.attempts").read_text().split()) for n in stages}
    assert result == {"flaky": "ok", "rejected": "StageFailed", "killed": "ok"}
    assert attempts == {"flaky": 3, "rejected": 1, "killed": 2}


@pytest.mark.parametrize("exc,transient", [
    (ConnectionRefusedError("refused"), True),
    (TransientError("server down"), True),
    (RuntimeError("wrapped"), False),
    (StageFailed("stage x failed", transient=False), False),
])
def test_is_transient_walks_the_cause_chain(exc, transient):
    assert is_transient(exc) is transient
    try:
        try:
            raise exc
        except Exception as inner:
            raise RuntimeError("register failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer) is transient
