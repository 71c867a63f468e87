"""Flow runs whose process died (a killed worker, a lost host) marked CRASHED instead of RUNNING for ever.

Prefect's documented answer for a self-hosted server (docs: "How to detect and respond to zombie flows"): runs
emit heartbeat events, and an automation that expects the next heartbeat (or a terminal state) within a few
heartbeat periods changes the run to CRASHED when neither comes. The stack's worker sets the period; `genops stack
up` creates the automation once (by name), so a team's dashboard tells dead runs from live ones."""

from __future__ import annotations

import json

HEARTBEAT_S = 30  # Prefect's minimum; runs are minutes long, so the events are few
MISSED_BEATS = 3  # heartbeats a run may miss (a busy host, a slow server) before it is called dead
AUTOMATION_NAME = "genops: crash flow runs that stopped beating"


def automation() -> dict:
    """The automation as Prefect's `automation create --from-json` takes it."""
    states = ["Completed", "Failed", "Cancelled", "Crashed"]
    return {
        "name": AUTOMATION_NAME,
        "description": f"A flow run with no heartbeat (every {HEARTBEAT_S} s) and no final state for "
                       f"{MISSED_BEATS * HEARTBEAT_S} s lost its process: mark it Crashed",
        "enabled": True,
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["prefect.flow-run.heartbeat"],
            "expect": ["prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in states)],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": MISSED_BEATS * HEARTBEAT_S,
        },
        "actions": [{"type": "change-flow-run-state", "state": "CRASHED",
                     "message": f"no heartbeat for {MISSED_BEATS * HEARTBEAT_S} s: its process is gone "
                                "(worker or host died)"}],
    }


def automation_json() -> str:
    return json.dumps(automation())
