"""DDPM / DDIM: the forward-process algebra, the samplers' equivalences, guidance, and ORT sampler parity."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import Inpaints
from genops.models.diffusion import samplers
from genops.models.diffusion.schedules import NoiseSchedule, x0_and_eps
from genops.models.diffusion.vlb import discretized_gaussian_log_prob, vlb_strata
from genops.models.families.diffusion import Diffusion
from genops.models.family import StepContext
from genops.models.registry import build_family


def _diffusion(spec: DataSpec, **cfg) -> Diffusion:
    torch.manual_seed(0)
    # eval_steps within the 50-step chain: the config refuses longer ones
    return build_family("diffusion", spec, {"timesteps": 50, "widths": [8, 16], "sample_steps": 10,
                                            "eval_steps": [10, 25], **cfg})


def _randomize(family: Diffusion, scale: float = 0.05) -> Diffusion:
    """Perturb the zero-initialised layers so the network's output depends on x_t, t and the label,
    and make the EMA an exact copy (its first update copies)."""
    with torch.no_grad():
        for p in family.net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    family.ema.update_parameters(family.net)
    family.train_mode(False)
    return family


def _batch(spec: DataSpec, n: int = 8) -> Batch:
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (n, *spec.shape), generator=gen).float() / 255
    return Batch(x, torch.arange(n) % max(spec.num_classes, 1))


# --- the maths of the forward process ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_sample_matches_iterating_the_forward_chain(kind):
    sched = NoiseSchedule.make(kind, 20)
    gen = torch.Generator().manual_seed(0)
    draws = 40_000
    x0 = torch.tensor([-0.8, 0.0, 0.5, 1.0], dtype=torch.float64).expand(draws, 4)
    x = x0.clone()
    for t in range(12):
        x = (1 - sched.beta[t]).sqrt() * x + sched.beta[t].sqrt() * torch.randn(x.shape, generator=gen,
                                                                                  dtype=torch.float64)
        if t in (0, 4, 11):
            jump = sched.q_sample(x0, torch.full((draws,), t), torch.randn(x.shape, generator=gen, dtype=torch.float64))
            ab = sched.alpha_bar[t]
            for sample in (x, jump):
                assert torch.allclose(sample.mean(0), ab.sqrt() * x0[0], atol=0.02)
                assert torch.allclose(sample.var(0), (1 - ab).expand(4), rtol=0.05, atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_mean_and_variance_are_bayes_on_the_two_gaussians(kind):
    sched = NoiseSchedule.make(kind, 30)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 2, 2, generator=gen, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(3, 1, 2, 2, generator=gen, dtype=torch.float64)
    for t in (1, 7, 29):
        # prior x_{t-1} | x_0 ~ N(sqrt(ab_{t-1}) x_0, 1 - ab_{t-1})
        # likelihood x_t | x_{t-1} ~ N(sqrt(a_t) x_{t-1}, b_t)
        ab_prev, a, b = sched.alpha_bar[t - 1], sched.alpha[t], sched.beta[t]
        precision = 1 / (1 - ab_prev) + a / b
        mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * x_t / b) / precision
        got_mean, got_var = sched.q_posterior(x0, x_t, torch.full((3,), t))
        assert torch.allclose(got_mean, mean, atol=1e-10)
        assert torch.allclose(got_var.flatten(), (1 / precision).expand(3), rtol=1e-10)
        assert math.isclose(float(sched.posterior_var[t]), float(1 / precision), rel_tol=1e-10)
    mean0, var0 = sched.q_posterior(x0, x_t, torch.zeros(3, dtype=torch.long))  # x_0 is known at t = 0
    assert torch.allclose(mean0, x0) and float(var0.abs().max()) == 0.0


def test_discretised_gaussian_is_a_distribution_over_256_values():
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.0, -1.0), (0.93, -5.0), (-1.4, -3.0), (0.2, -8.0)]:
        logp = discretized_gaussian_log_prob(bins, torch.full_like(bins, mean), torch.full_like(bins, log_scale))
        assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_prediction_converts_back_to_the_true_x0_and_eps(prediction):
    sched = NoiseSchedule.make("cosine", 40)
    x0, eps = torch.rand(4, 1, 3, 3) * 2 - 1, torch.randn(4, 1, 3, 3)
    t = torch.tensor([0, 5, 20, 39])
    x_t = sched.q_sample(x0, t, eps)
    out = eps if prediction == "eps" else sched.v_target(x0, t, eps)
    ab = sched.alpha_bar[t].float().view(-1, 1, 1, 1)
    got_x0, got_eps = x0_and_eps(out, x_t, ab, prediction, clip=False)
    assert torch.allclose(got_x0[1:], x0[1:], atol=1e-3) and torch.allclose(got_eps, eps, atol=1e-3)


# --- samplers ----------------------------------------------------------------------------------------


def test_ddim_with_eta_0_is_deterministic_and_draws_no_step_noise():
    family = _randomize(_diffusion(DataSpec(8, 8, 1)))
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    a = family.denoise(x_T, torch.Generator().manual_seed(1), method="ddim", eta=0.0, steps=10)
    b = family.denoise(x_T, torch.Generator().manual_seed(2), method="ddim", eta=0.0, steps=10)
    assert torch.equal(a, b)  # the per-step noise generator is irrelevant
    gen = torch.Generator().manual_seed(7)
    s1 = family.sample(3, gen, eta=0.0)
    after_one_draw = torch.Generator().manual_seed(7)
    torch.randn(3, 1, 8, 8, generator=after_one_draw)  # x_T is the only draw
    assert torch.equal(gen.get_state(), after_one_draw.get_state())
    assert torch.equal(s1, family.sample(3, torch.Generator().manual_seed(7), eta=0.0))
    noisy = family.sample(3, torch.Generator().manual_seed(7), eta=1.0)
    assert not torch.equal(s1, noisy)


def test_ddim_with_all_steps_and_eta_1_is_the_ancestral_ddpm_step():
    sched = NoiseSchedule.make("linear", 50)
    gen = torch.Generator().manual_seed(3)
    x0, x_t = torch.rand(2, 1, 4, 4, generator=gen) * 2 - 1, torch.randn(2, 1, 4, 4, generator=gen)
    for t in range(1, 50):
        ab_t, ab_s = float(sched.alpha_bar[t]), float(sched.alpha_bar[t - 1])
        eps = (x_t - ab_t**0.5 * x0) / (1 - ab_t) ** 0.5  # the eps consistent with (x0, x_t)
        m_ddim, s_ddim = samplers.ddim(x0, eps, x_t, ab_t, ab_s, eta=1.0)
        m_ddpm, s_ddpm = samplers.ddpm(x0, eps, x_t, ab_t, ab_s, eta=1.0)
        assert torch.allclose(m_ddim, m_ddpm, atol=1e-5)
        assert s_ddim == pytest.approx(s_ddpm, rel=1e-9) and s_ddpm**2 == pytest.approx(float(sched.posterior_var[t]))
    # Whole chains from the same x_T and noise: the same images, and step statistics over many draws agree.
    family = _diffusion(DataSpec(2, 2, 1))
    fake = {"denoiser": lambda x, t: 0.5 * x + 0.01 * t[:, None, None, None]}
    x_T = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    ddim = family.denoise(x_T, torch.Generator().manual_seed(9), nets=fake, method="ddim", eta=1.0, steps=50)
    ddpm = family.denoise(x_T, torch.Generator().manual_seed(9), nets=fake, method="ddpm", steps=50)
    assert torch.allclose(ddim, ddpm, atol=1e-4)
    ddpm_other = family.denoise(x_T, torch.Generator().manual_seed(10), nets=fake, method="ddpm", steps=50)
    assert abs(float(ddpm.mean() - ddpm_other.mean())) < 0.05 and abs(float(ddpm.std() / ddpm_other.std()) - 1) < 0.05


@torch.no_grad()
def test_guidance_zero_is_the_unconditional_prediction_and_one_the_conditional():
    spec = DataSpec(8, 8, 1, 3)
    family = _randomize(_diffusion(spec, conditional=True), scale=0.2)
    net = family.ema.module
    x, labels, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1]), 30
    tt = torch.full((4,), float(t))
    null = torch.full((4,), 3)
    cond, uncond = net(x, tt, labels), net(x, tt, null)
    assert float((cond - uncond).abs().max()) > 1e-3  # the label really reaches the output
    assert torch.allclose(family._predict(net, x, t, labels, 0.0), uncond)
    assert torch.allclose(family._predict(net, x, t, labels, 1.0), cond)
    assert torch.allclose(family._predict(net, x, t, labels, 2.5), uncond + 2.5 * (cond - uncond), atol=1e-5)
    assert torch.allclose(net(x, tt), uncond)  # no label means the null label
    a = family.sample(4, torch.Generator().manual_seed(0), labels=torch.tensor([0, 0, 0, 0]), guidance=0.0)
    b = family.sample(4, torch.Generator().manual_seed(0), labels=torch.tensor([2, 1, 2, 1]), guidance=0.0)
    assert torch.equal(a, b)


def test_time_and_label_embeddings_get_gradients_through_the_group_norms():
    """A per-channel offset added before a one-channel-per-group norm is erased; the conditioning must survive."""
    spec = DataSpec(8, 8, 1, 3)
    family = _randomize(_diffusion(spec, conditional=True, p_uncond=0.0))
    family.loss(_batch(spec), torch.Generator().manual_seed(0)).backward()
    for module in (family.net.label_embed, family.net.time_embed):
        grad = torch.cat([p.grad.flatten() for p in module.parameters()])
        assert float(grad.norm()) > 1e-4, module
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        early, late = (family.net(x, torch.full((2,), float(t)), torch.zeros(2, dtype=torch.long)) for t in (2, 40))
    assert float((early - late).abs().max()) > 1e-3


@pytest.mark.parametrize("conditional,kwargs", [
    (False, {"method": "ddpm", "steps": 50}),  # ancestral: per-step noise must line up too
    (True, {"method": "ddim", "steps": 10, "eta": 0.5, "guidance": 2.0}),  # guided: doubled ORT batch
])
def test_onnx_runtime_sampler_matches_torch(tmp_path, conditional, kwargs):
    from genops.serving.onnx_export import export_graph
    from genops.serving.onnx_runtime import load_nets

    family = _randomize(_diffusion(DataSpec(12, 12, 1, 3), conditional=conditional))
    for graph in family.export_specs():
        export_graph(graph, tmp_path / f"{graph.name}.onnx", opset=18)
    nets = load_nets(tmp_path, list(family.sampling_nets()))
    assert nets["denoiser"].input_names == (["x_t", "t", "label"] if conditional else ["x_t", "t"])
    labels = torch.tensor([0, 1, 2, 0, 1]) if conditional else None
    ref = family.sample(5, torch.Generator().manual_seed(3), labels=labels, **kwargs)
    got = family.sample(5, torch.Generator().manual_seed(3), labels=labels, nets=nets, **kwargs)
    assert ref.shape == (5, 1, 12, 12) and float((ref - got).abs().max()) <= 1e-3


# --- the family in the pipeline's terms ----------------------------------------------------------------


@pytest.mark.parametrize("spec,cfg", [
    (DataSpec(28, 28, 1, 10), {"conditional": True, "widths": [32, 64]}),
    (DataSpec(8, 8, 1), {"prediction": "v", "schedule": "cosine", "ema_warmup": True}),
    (DataSpec(20, 36, 3), {"widths": [8, 16, 16], "attention_levels": [1, 2], "depth": 2}),
])
def test_training_steps_are_finite_and_samples_have_the_right_shape(spec, cfg):
    family = _diffusion(spec, **cfg)
    opts = family.make_optimizers(1e-3)
    for step in range(3):
        losses = family.train_step(_batch(spec), StepContext(step, 3, opts, contextlib.nullcontext,
                                                             torch.Generator().manual_seed(step)))
        assert all(math.isfinite(v) for v in losses.values()), losses
    raw, ema = list(family.net.parameters()), list(family.ema.module.parameters())
    assert any(not torch.equal(r, e) for r, e in zip(raw, ema)) and int(family.ema.n_averaged) == 3
    family.train_mode(False)
    images = family.sample(3, torch.Generator().manual_seed(0), steps=4)
    assert images.shape == (3, *spec.shape) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert family.num_parameters() == sum(p.numel() for p in family.net.parameters())


def test_checkpoint_round_trip_restores_the_ema_and_its_count(tmp_path):
    from safetensors.torch import load_file, save_file

    spec = DataSpec(8, 8, 1, 2)
    family = _diffusion(spec, conditional=True)
    opts = family.make_optimizers(1e-3)
    for step in range(2):
        family.train_step(_batch(spec), StepContext(step, 2, opts, contextlib.nullcontext, torch.Generator()))
    family.train_mode(False)
    save_file({k: v.contiguous() for k, v in family.state_dict().items()}, str(tmp_path / "w.safetensors"))
    copy = _diffusion(spec, conditional=True, ema_decay=0.5)
    copy.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    copy.train_mode(False)
    assert int(copy.ema.n_averaged) == 2
    seed = torch.Generator().manual_seed
    assert torch.equal(family.sample(2, seed(0)), copy.sample(2, seed(0)))


@pytest.mark.parametrize("T,K", [(1000, 32), (1000, 1), (50, 8), (50, 49), (50, 500), (2, 4)])
def test_vlb_strata_partition_the_timesteps(T, K):
    edges = vlb_strata(T, K)
    assert edges[0] == 1 and edges[-1] == T and len(edges) == min(K, T - 1) + 1
    assert all(b > a for a, b in zip(edges, edges[1:]))  # every stratum non-empty: the estimate is unbiased


def test_invalid_settings_are_refused_with_the_key_named():
    for cfg in ({"schedule": "sqrt"}, {"prediction": "x0"}, {"sample_method": "euler"}, {"timesteps": 1}):
        with pytest.raises(GenopsError, match=next(iter(cfg))):
            build_family("diffusion", DataSpec(8, 8, 1), cfg)


def test_evaluate_reports_a_finite_bound_in_bits_per_dim():
    spec = DataSpec(8, 8, 1, 2)
    family = _randomize(_diffusion(spec, conditional=True, vlb_timesteps=8), scale=0.01)  # strata: the family's
    gen = torch.Generator().manual_seed(0)
    test = ImageSet(torch.randint(0, 256, (12, *spec.shape), generator=gen, dtype=torch.uint8), torch.arange(12) % 2)
    out = family.evaluate(test, EvaluateConfig(nll_subset=10, batch_size=4), gen)
    assert out["nll_images"] == 10 and out["vlb_timesteps"] == 8
    assert out["test_nll_bpd"] == out["test_vlb_bpd"] > 0 and math.isfinite(out["test_nll_bpd"])
    parts = out["test_prior_bpd"] + out["test_l0_bpd"] + out["test_diffusion_bpd"]
    assert parts == pytest.approx(out["test_nll_bpd"])
    assert out["test_prior_bpd"] < 1e-3  # alpha_bar_T ~ 0: q(x_T | x_0) is almost N(0, I)


def test_variants_timesteps_and_interpolation():
    with pytest.raises(GenopsError, match="eval_steps"):  # a step count beyond the chain is refused by the config
        _diffusion(DataSpec(8, 8, 1, 2), conditional=True, timesteps=60, eval_steps=[5, 30, 100])
    family = _randomize(_diffusion(DataSpec(8, 8, 1, 2), conditional=True, timesteps=60, eval_steps=[5, 30]))
    assert family.sample_variants() == {"ddpm": {"method": "ddpm", "steps": 60},
                                        "ddim5": {"method": "ddim", "steps": 5},
                                        "ddim30": {"method": "ddim", "steps": 30}}
    seq = family.timesteps(10)
    assert len(seq) == 10 and seq[0] == 59 and seq[-1] == 0 and seq == sorted(seq, reverse=True)
    assert family.timesteps(60) == list(range(59, -1, -1)) and family.timesteps(1) == [59]
    labels = _batch(family.spec, 2).y
    path = family.noise_interpolation(2, 4, labels)
    assert path.shape == (8, 1, 8, 8) and float(path.min()) >= 0 and float(path.max()) <= 1
    assert torch.equal(path, family.noise_interpolation(2, 4, labels))  # seeded noise, deterministic DDIM


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weighting_is_l_simple_when_gamma_caps_nothing_and_lighter_when_it_does(prediction):
    """Hang et al. 2023: weight min(SNR, gamma) / SNR (eps) or / (SNR + 1) (v). With gamma above every SNR the eps
    loss is L_simple exactly; a small gamma only ever lowers the weights (v: SNR / (SNR + 1) < 1 at every t)."""
    spec = DataSpec(8, 8, 1)
    batch = Batch(torch.rand(16, 1, 8, 8), torch.zeros(16, dtype=torch.long))
    losses = {}
    for gamma in (0.0, 1e12, 1.0):
        family = _diffusion(spec, prediction=prediction, min_snr_gamma=gamma)
        losses[gamma] = float(family.loss(batch, torch.Generator().manual_seed(0)))
    if prediction == "eps":
        assert losses[1e12] == pytest.approx(losses[0.0], rel=1e-6)
    assert losses[1.0] < losses[1e12] <= losses[0.0] * (1 + 1e-6)


@pytest.mark.parametrize("resample", [1, 3])
def test_repaint_keeps_the_known_pixels_and_an_oracle_denoiser_recovers_the_rest(resample):
    """RePaint with a denoiser that knows the true image: DDIM (eta 0) lands on it everywhere, and the kept pixels
    are the given ones exactly; resampling passes change nothing for an exact model."""
    schedule = NoiseSchedule.make("cosine", 50)
    truth = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.zeros(3, 1, 6, 6)
    mask[..., :3, :] = 1

    def oracle(x, t):  # the eps a perfect eps-model would predict at x_t, given the true x_0
        a = float(schedule.alpha_bar[t])
        return (x - a**0.5 * truth) / (1 - a) ** 0.5

    known = torch.where(mask.bool(), truth, torch.zeros_like(truth))
    x_T = torch.randn(truth.shape, generator=torch.Generator().manual_seed(2))
    out = samplers.run_inpaint_chain(oracle, x_T, known, mask, schedule, samplers.respaced_timesteps(50, 10),
                                     samplers.ddim, 0.0, "eps", False, torch.Generator().manual_seed(3), resample)
    assert torch.equal(out[..., :3, :], truth[..., :3, :])
    torch.testing.assert_close(out, truth, atol=1e-4, rtol=0)


def test_diffusion_inpaints_deterministically_and_other_families_decline():
    spec = DataSpec(8, 8, 1, 10)
    torch.manual_seed(0)
    fam = build_family("diffusion", spec, {"widths": [8], "timesteps": 20, "sample_steps": 4, "eval_steps": [2],
                                           "inpaint_resample": 2})
    images = torch.rand(2, 1, 8, 8)
    mask = torch.ones(2, 1, 8, 8)
    mask[..., 4:, :] = 0
    a = fam.complete(images, mask, torch.Generator().manual_seed(0))
    b = fam.complete(images, mask, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a[..., :4, :], images[..., :4, :], atol=1e-6, rtol=0)
    assert not torch.allclose(a[..., 4:, :], images[..., 4:, :])
    assert isinstance(fam, Inpaints) and not isinstance(build_family("vae", spec, {"widths": [8]}), Inpaints)
