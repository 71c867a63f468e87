"""The DVC stage graph as the Prefect flow sees it: stages in waves, which changed, recording results.

dvc.yaml is the one description of the pipeline. The flow asks DVC for the stages and their
order, asks `dvc status` which of them changed, runs only those stage commands (several families
at once), and records the results with `dvc commit`, so after a flow run `dvc status` is clean and
a later `dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
from dvc.repo import Repo

from genops.config import FAMILIES
from genops.versioning.dvc import dvc, repo_lock


@dataclass(frozen=True)
class StageInfo:
    name: str  # e.g. "train@vae"
    cmd: str
    family: str | None  # the foreach item, None for shared stages


def stage_family(name: str) -> str | None:
    """The family a stage belongs to: the foreach key of `train@vae` & co.; None for shared stages, including
    foreach stages over other things (`sweep@0`, the first params sweep), which run whatever families are chosen."""
    key = name.split("@", 1)[1] if "@" in name else None
    return key if key in FAMILIES else None


# Why DVC's internal `Repo().index.graph`: the flow needs each resolved stage (foreach/matrix expanded) with its
# command and its edges, and no public API gives the commands (`dvc dag --dot` gives the edges, `dvc stage list`
# the names, dvc.api neither). tests/orchestration/test_dvc_graph.py pins this graph to those two public outputs,
# so a DVC release that changes the internals fails there, not in a run.


def stage_waves(root: Path, families: list[str] | None = None) -> list[list[StageInfo]]:
    """DVC's stages in dependency order, grouped so each group depends only on earlier groups."""
    with Repo(str(root)) as repo:
        graph = repo.index.graph.reverse()  # DVC's edges point at dependencies; reverse = execution order
        waves = []
        for generation in nx.topological_generations(graph):
            wave = []
            for stage in sorted(generation, key=lambda s: s.name):
                name = stage.name
                family = stage_family(name)
                if families is None or family is None or family in families:
                    cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
                    wave.append(StageInfo(name, cmd, family))
            if wave:
                waves.append(wave)
    return waves


def changed_stages(root: Path, names: list[str]) -> set[str]:
    """Which of these stages DVC would re-run (deps, params, outs or command differ from dvc.lock)."""
    with repo_lock(root):
        out = dvc(root, "status", "--json", *names)
    status = json.loads(out or "{}")
    return {name for name in names if name in status}


def commit_stages(root: Path, names: list[str]) -> None:
    """Record freshly produced outputs in dvc.lock (and the DVC cache)."""
    if names:
        with repo_lock(root):
            dvc(root, "commit", "--force", "--quiet", *names)


def stage_dag(root: Path, families: list[str] | None = None) -> list[tuple[StageInfo, list[str]]]:
    """DVC's stages in an execution order, each with the names of the stages it directly depends on, so a
    stage can start as soon as its own upstream is done (not a whole wave)."""
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        order = list(nx.topological_sort(graph.reverse()))
        out = []
        for stage in order:
            family = stage_family(stage.name)
            if families is not None and family is not None and family not in families:
                continue
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            out.append((StageInfo(stage.name, cmd, family), sorted(s.name for s in graph.successors(stage))))
    return out
