"""Progressive distillation (Salimans & Ho 2022): nested grids, the two-step target, rounds that halve the steps."""

from __future__ import annotations

import contextlib

import pytest
import torch

from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.errors import GenopsError
from genops.models.family import StepContext
from genops.models.registry import build_family

SPEC = DataSpec(8, 8, 1, 0)
TEACHER = {"widths": [8], "timesteps": 40, "sample_steps": 4, "eval_steps": [2], "eval_ddpm": False}


def _pair(**distilled):
    torch.manual_seed(0)
    teacher = build_family("diffusion", SPEC, TEACHER)
    student = build_family("diffusion-distilled", SPEC, {"start_steps": 8, "rounds": 2, **distilled}, base=teacher)
    return teacher, student


def test_the_student_starts_as_the_teacher_on_a_nested_grid():
    teacher, student = _pair()
    for name, t in teacher.ema.module.state_dict().items():
        assert torch.equal(student.net.state_dict()[name], t) and torch.equal(student.original.state_dict()[name], t)
    assert student.cfg.sample_steps == 2 and student.cfg.widths == [8] and student.T == 40
    for n in (1, 2, 4):
        assert student.timesteps(2 * n)[0::2] == student.timesteps(n)
    assert student.timesteps(4) == [39, 29, 20, 10]
    with pytest.raises(GenopsError, match="pixel diffusion family"):
        build_family("diffusion-distilled", SPEC, {}, base=build_family("vae", SPEC, {"widths": [8]}))


def test_one_student_step_to_the_target_lands_where_two_teacher_steps_do():
    """The distillation target x~ is exactly the x0 for which one DDIM step from z_t reaches the teacher's z_t''."""
    teacher, student = _pair()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    a_t, a_mid, a_end = (torch.full((4,), v, dtype=torch.float64) for v in (0.3, 0.6, 0.9))
    t, t_mid = torch.full((4,), 30), torch.full((4,), 15)
    z_t = a_t.sqrt().view(-1, 1, 1, 1).float() * x + (1 - a_t).sqrt().view(-1, 1, 1, 1).float() * torch.randn_like(x)
    z_end = student._ddim_step(student.teacher, student._ddim_step(student.teacher, z_t, t, a_t, a_mid, None),
                               t_mid, a_mid, a_end, None)
    r = ((1 - a_end) / (1 - a_t)).sqrt().view(-1, 1, 1, 1).float()
    target = (z_end - r * z_t) / (a_end.sqrt().view(-1, 1, 1, 1).float() - r * a_t.sqrt().view(-1, 1, 1, 1).float())
    eps = (z_t - a_t.sqrt().view(-1, 1, 1, 1).float() * target) / (1 - a_t).sqrt().view(-1, 1, 1, 1).float()
    one_step = a_end.sqrt().view(-1, 1, 1, 1).float() * target + (1 - a_end).sqrt().view(-1, 1, 1, 1).float() * eps
    torch.testing.assert_close(one_step, z_end, atol=1e-5, rtol=1e-5)


def test_rounds_halve_the_steps_and_hand_the_student_over_as_the_next_teacher():
    teacher, student = _pair(lr=1e-3, grad_clip=0.0)
    opts = student.make_optimizers(1e-3)
    batch = Batch(torch.rand(8, 1, 8, 8), None)
    gen = torch.Generator().manual_seed(0)
    logged = []
    for step in range(4):  # 4 steps, 2 rounds: steps 0-1 distil 8 -> 4, steps 2-3 distil 4 -> 2
        if step == 2:
            before = {k: v.clone() for k, v in student.ema.module.state_dict().items()}
        logged.append(student.train_step(batch, StepContext(step, 4, opts, contextlib.nullcontext, gen)))
        if step == 2:  # the round-1 teacher is the round-0 student's EMA
            assert all(torch.equal(student.teacher.state_dict()[k], v) for k, v in before.items())
    assert [row["student_steps"] for row in logged] == [4.0, 4.0, 2.0, 2.0]
    assert all(torch.isfinite(row["loss"]) for row in logged)
    # the registered teacher itself is never touched
    for name, t in teacher.ema.module.state_dict().items():
        assert torch.equal(student.original.state_dict()[name], t)
    images = student.sample(3, torch.Generator().manual_seed(0))
    reference = student.sample(3, torch.Generator().manual_seed(0), teacher=True)
    assert images.shape == reference.shape == (3, 1, 8, 8) and not torch.equal(images, reference)
    assert set(student.sample_variants()) == {"teacher_ddim8", "ddim4", "teacher_ddim4", "ddim2", "teacher_ddim2"}
