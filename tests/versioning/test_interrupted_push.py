"""A `dvc push` that dies while collecting what to send must not leave the next push short.

DVC caches that collection in its data index output by output under a key of the data's hashes; a push killed
part-way leaves part of it under the full key, and the next push of the same data took the part for the whole
(reported success, remote incomplete: treeverse/dvc#10977). The push here dies for real (os._exit, as a kill -9
would leave things) inside DVC's own collection, after some outputs are committed to that cache."""

from __future__ import annotations

import json
import subprocess
import sys

from genops.versioning.dvc import push_to_remote
from tests.conftest import env_for, run

DIE_IN_COLLECTION = """
import os, sys
import dvc_data.index.collect as collect
from dvc.repo import Repo
real, calls = collect._collect_from_index, []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) > 3:  # three outputs' entries are committed to DVC's cache of the collection
        os._exit(137)
    return real(*args, **kwargs)
collect._collect_from_index = dying
Repo(sys.argv[1]).push()
"""


def _project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    env = env_for(root, tmp_path)
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    stages = {f"s{i}": {"cmd": f"mkdir -p o{i} && echo {i} > o{i}/a && echo x{i} > o{i}/b", "outs": [f"o{i}"]}
              for i in range(8)}
    (root / "dvc.yaml").write_text(json.dumps({"stages": stages}))
    run(["dvc", "repro", "-q"], root, env)
    run(["dvc", "remote", "add", "--local", "-d", "r", str(tmp_path / "remote")], root, env)
    return root, env


def _cloud_status(root, env) -> dict:
    return json.loads(run(["dvc", "status", "--cloud", "--json"], root, env).stdout or "{}")


def test_a_push_after_one_killed_while_collecting_fills_the_remote(tmp_path):
    root, env = _project(tmp_path)
    died = subprocess.run([sys.executable, "-c", DIE_IN_COLLECTION, str(root)], cwd=root, env=env,
                          capture_output=True, text=True)
    assert died.returncode == 137, died.stderr
    assert len(_cloud_status(root, env)) == 24  # 8 outputs + their 16 files: nothing reached the remote
    push_to_remote(root)
    assert _cloud_status(root, env) == {}
