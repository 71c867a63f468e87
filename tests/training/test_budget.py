"""Compute budgets: FLOPs per step counted over real steps, and the step counts they give."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.models.registry import build_family
from genops.models.step import StepContext
from genops.training.budget import FlopCount, flops_per_step, resolve_steps
from genops.training.outputs import snapshot_steps

SPEC = DataSpec(8, 8, 1, 3)
BATCH = Batch(torch.rand(8, 1, 8, 8), torch.arange(8) % 3)


def _family(name: str, **cfg):
    torch.manual_seed(0)
    return build_family(name, SPEC, {"widths": [8, 16], **cfg})


def test_counter_agrees_with_torchs_flop_counter_on_a_plain_step():
    """Our dispatch-mode sum uses torch's own formulas: on a step without double backward it must equal
    FlopCounterMode's total exactly."""
    family = _family("autoencoder")
    opts = family.make_optimizers(1e-3)
    ours, theirs = FlopCount(), FlopCounterMode(display=False)
    for counter in (ours, theirs):
        with counter:
            family.train_step(BATCH, StepContext(1, 10, opts, contextlib.nullcontext, torch.Generator()))
    assert ours.total == theirs.get_total_flops() > 0


def test_probe_leaves_the_family_and_every_random_state_as_it_was():
    family = _family("vae")
    before = {k: v.clone() for k, v in family.state_dict().items()}
    rng = torch.random.get_rng_state()
    flops = flops_per_step(family, BATCH, 1e-3, 0)
    assert flops > 0 and torch.equal(rng, torch.random.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in family.state_dict().items())
    assert flops_per_step(family, BATCH, 1e-3, 0) == flops  # a function of networks and batch shape only


def test_double_backward_and_critic_cycles_are_counted():
    """WGAN-GP's gradient penalty (FlopCounterMode cannot follow it) costs extra, and a generator step every
    n_critic steps is averaged over the cycle: more critic steps per generator step, cheaper average step."""
    gp = flops_per_step(_family("wgan-gp", n_critic=1), BATCH, 1e-3, 0)
    plain = flops_per_step(_family("gan", n_critic=1), BATCH, 1e-3, 0)
    assert gp > plain
    assert flops_per_step(_family("wgan-gp", n_critic=5), BATCH, 1e-3, 0) < gp


def test_phases_are_weighted_by_their_share_of_the_steps():
    cfg = {"widths": [8, 16], "prior_width": 8, "prior_depth": 2, "code_dim": 4, "codebook_size": 8}
    at = {f: flops_per_step(_family("vqvae", **cfg, vq_fraction=f), BATCH, 1e-3, 0) for f in (0.25, 0.5, 0.75)}
    # the two phases cost differently, and the average is linear in the VQ-VAE share
    assert at[0.75] != at[0.25]
    assert at[0.5] == pytest.approx((at[0.25] + at[0.75]) / 2, rel=1e-9)


def test_explicit_steps_win_over_the_budget_and_the_budget_divides():
    assert resolve_steps("vae", None, None, 1e12, 3e9).steps == 333
    assert resolve_steps("vae", None, None, 1e12, 3e9).source == "train.budget"
    assert resolve_steps("vae", None, 50, 1e12, 3e9).steps == 50
    chosen = resolve_steps("vae", 7, 50, 1e12, 3e9)
    assert (chosen.steps, chosen.source, chosen.total_flops) == (7, "vae.steps", 2.1e10)
    with pytest.raises(ValueError, match="no step count"):
        resolve_steps("vae", None, None, None, 3e9)


def test_snapshot_steps_are_distinct_and_inside_the_run():
    assert snapshot_steps([0.125, 0.25, 0.5], 1000) == (125, 250, 500)
    assert snapshot_steps([0.1, 0.11, 0.5], 10) == (1, 5)
    assert snapshot_steps([0.01], 10) == ()
