"""The stage graph the flow reads from DVC's internals is the one DVC's public CLI reports."""

from __future__ import annotations

import re

from genops.orchestration.dvc_graph import stage_dag, stage_waves
from tests.conftest import env_for, make_project, run


def test_internal_graph_matches_dvc_dag_and_dvc_stage_list(tmp_path):
    root = make_project(tmp_path / "proj", {"families": ["autoencoder", "vae", "diffusion"],
                                            "stacked": {"latent-diffusion": "vae"}})
    env = env_for(root, tmp_path)
    dot = run(["dvc", "dag", "--dot"], root, env).stdout
    public_edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))  # dependency -> dependent
    names = set(run(["dvc", "stage", "list", "--name-only"], root, env).stdout.split())
    dag = stage_dag(root)
    assert {info.name for info, _ in dag} == names
    internal_edges = {(up, info.name) for info, ups in dag for up in ups}
    assert internal_edges == public_edges
    waves = stage_waves(root)
    order = {s.name: i for i, wave in enumerate(waves) for s in wave}
    assert all(order[a] < order[b] for a, b in public_edges)
    assert next(info.cmd for info, _ in dag if info.name == "train@vae") == "genops train vae"
