"""PixelCNN and VQ-VAE: causality, exact likelihood, vector quantisation, ONNX sampling parity, training."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn

from genops.config.families import PixelCNNConfig, VQVAEConfig
from genops.config.sections import EvaluateConfig
from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet
from genops.errors import GenopsError
from genops.models.family import Family, StepContext
from genops.models.networks.pixelcnn import GatedPixelCNN
from genops.models.networks.vq import VectorQuantizer
from genops.models.registry import build_family
from genops.serving.onnx_export import check_parity, export_graph
from genops.serving.onnx_runtime import load_nets

GREY = DataSpec(8, 8, 1, 3)  # labeled
RGB = DataSpec(6, 6, 3, 0)
# The declared tiny sizes, a little wider and deeper where these tests need a receptive field over 8 x 8 images.
TINY_PIXELCNN = {**PixelCNNConfig.sized("tiny"), "width": 12, "depth": 3}
TINY_VQVAE = {**VQVAEConfig.sized("tiny"), "code_dim": 4, "codebook_size": 16, "depth": 1, "prior_embed": 4,
              "dead_window": 2}


def _images(spec: DataSpec, n: int, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *spec.shape), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % spec.num_classes if spec.labeled else torch.full((n,), -1)
    return ImageSet(images, labels)


def _dependencies(net: nn.Module, shape: tuple[int, int, int], y: torch.Tensor | None) -> torch.Tensor:
    """(C, H, W, C, H, W) bool: does output sub-pixel (c, i, j) depend on input sub-pixel (c', i', j')?

    Read off input gradients, united over a few random images so no accidental zero hides a link.
    """
    c, h, w = shape
    x = torch.rand(8, c, h, w, dtype=torch.float64, requires_grad=True)
    out = net(x, y)
    deps = torch.zeros(c, h, w, c, h, w, dtype=torch.bool)
    for k in range(c):
        for i in range(h):
            for j in range(w):
                (grad,) = torch.autograd.grad(out[:, :, k, i, j].sum(), x, retain_graph=True)
                deps[k, i, j] = (grad != 0).any(0)
    return deps


def _earlier(shape: tuple[int, int, int], k: int, i: int, j: int) -> torch.Tensor:
    """Sub-pixels before (k, i, j): every channel of earlier pixels, and channels < k of this one."""
    c, h, w = shape
    mask = torch.zeros(c, h, w, dtype=torch.bool)
    mask.view(c, -1)[:, : i * w + j] = True
    mask[:k, i, j] = True
    return mask


@pytest.mark.parametrize("shape,layers", [((1, 5, 5), 6), ((3, 4, 4), 5)], ids=["grey", "rgb"])
def test_each_output_sees_exactly_the_earlier_subpixels(shape, layers):
    """Causal (nothing at or after the sub-pixel, R -> G -> B within a pixel) and no blind spot."""
    torch.manual_seed(0)
    net = GatedPixelCNN(shape[0], 256, hidden=12, layers=layers, kernel=3, num_classes=3).double()
    deps = _dependencies(net, shape, torch.arange(8) % 3)
    for k in range(shape[0]):
        for i in range(shape[1]):
            for j in range(shape[2]):
                assert torch.equal(deps[k, i, j], _earlier(shape, k, i, j)), (k, i, j)


def test_dilated_layers_stay_causal_and_see_much_further():
    """Dilations (1, 2, 4) keep every output on earlier sub-pixels only, and with 5 layers the last pixel of a
    9 x 9 image sees the top-left one, which 5 undilated 3 x 3 layers (5 rows of reach) cannot."""
    torch.manual_seed(0)
    shape = (1, 9, 9)
    dilated = GatedPixelCNN(1, 256, hidden=8, layers=5, kernel=3, dilations=(1, 2, 4)).double()
    plain = GatedPixelCNN(1, 256, hidden=8, layers=5, kernel=3).double()
    deps, plain_deps = _dependencies(dilated, shape, None), _dependencies(plain, shape, None)
    for i in range(shape[1]):
        for j in range(shape[2]):
            assert not (deps[0, i, j] & ~_earlier(shape, 0, i, j)).any(), (i, j)
    assert deps[0, 8, 8, 0, 0, 0] and not plain_deps[0, 8, 8, 0, 0, 0]
    assert deps[0, 8, 8].sum() > plain_deps[0, 8, 8].sum()
    x = torch.rand(2, *shape, dtype=torch.float64)
    with torch.no_grad():  # the sampler's cropped passes stay exact with dilation
        torch.testing.assert_close(dilated(x[:, :, :4]), dilated(x)[:, :, :, :4])


@pytest.mark.parametrize("channels", [1, 3])
def test_even_one_layer_sees_the_pixel_above_right(channels):
    """The vertical stack covers the upper right that a single masked 3x3 stack would miss."""
    torch.manual_seed(0)
    shape = (channels, 4, 4)
    net = GatedPixelCNN(channels, 256, hidden=12, layers=1, kernel=3).double()
    deps = _dependencies(net, shape, None)
    for k in range(channels):
        d = deps[k, 2, 1]
        assert d[:, 1, 2].all() and d[:, 2, 0].all()  # above-right, left
        assert not (d & ~_earlier(shape, k, 2, 1)).any()


@pytest.mark.parametrize("spec", [GREY, RGB])
def test_rows_up_to_i_need_only_rows_up_to_i(spec):
    """The sampler feeds only the rows generated so far: on those rows the cropped pass must equal the full one."""
    torch.manual_seed(0)
    net = GatedPixelCNN(spec.channels, 256, hidden=12, layers=3, kernel=3).eval()
    x = torch.rand(2, *spec.shape)
    with torch.no_grad():
        full = net(x)
        for rows in (2, spec.height // 2, spec.height - 1):
            torch.testing.assert_close(net(x[:, :, :rows]), full[:, :, :, :rows], atol=1e-5, rtol=1e-5)


def test_nll_is_the_sum_of_per_subpixel_conditionals():
    """One masked pass == the chain rule evaluated sub-pixel by sub-pixel with later ones scrambled."""
    torch.manual_seed(0)
    spec = DataSpec(4, 4, 3, 2)
    family = build_family("pixelcnn", spec, {**TINY_PIXELCNN, "conditional": True})
    family.train_mode(False)
    test = _images(spec, 3)
    batch = test.batch(torch.arange(3))
    with torch.no_grad():
        one_pass = family.nll(batch.x, batch.y)
        targets = family.targets(batch.x)
        gen = torch.Generator().manual_seed(1)
        total = torch.zeros(3)
        for i in range(4):
            for j in range(4):
                for k in range(3):
                    later = ~_earlier(spec.shape, k, i, j)
                    junk = torch.randint(0, 256, batch.x.shape, generator=gen).float() / 255
                    canvas = torch.where(later, junk, batch.x)
                    logp = torch.log_softmax(family.net(canvas, batch.y)[:, :, k, i, j], dim=1)
                    total -= logp.gather(1, targets[:, k, i, j, None]).squeeze(1)
    assert torch.allclose(one_pass, total, rtol=1e-5)
    metrics = family.evaluate(test, EvaluateConfig(nll_subset=2, batch_size=1), torch.Generator())
    assert metrics["nll_images"] == 2
    assert metrics["test_nll_nats"] == pytest.approx(one_pass[:2].mean().item(), rel=1e-5)
    assert metrics["test_nll_bpd"] == pytest.approx(metrics["test_nll_nats"] / (spec.dims * math.log(2)))


def test_quantizer_returns_nearest_codebook_vectors_with_straight_through_gradients():
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 3)
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, codes, _, _ = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(flat, vq.embedding.detach()).argmin(1)
    assert torch.equal(codes.reshape(-1), nearest)
    assert torch.allclose(z_q.detach().permute(0, 2, 3, 1).reshape(-1, 3), vq.embedding.detach()[nearest])
    upstream = torch.randn_like(z_q)
    (z_q * upstream).sum().backward()
    assert torch.equal(z_e.grad, upstream)  # identity Jacobian: straight through the argmin


def test_dead_codes_and_perplexity_follow_a_constructed_usage_history():
    vq = VectorQuantizer(4, 2, dead_window=3)
    history = [([0, 1], 2.0, 0), ([0], 1.0, 0), ([0, 2], 2.0, 1), ([0], 1.0, 2)]
    for used, perp, dead in history:  # after step 3 code 3 has been idle 3 steps; after step 4 code 1 too
        got_perp, got_dead = vq.record_usage(torch.tensor(used).view(1, 1, -1))
        assert got_perp == pytest.approx(perp) and got_dead == dead
    assert vq.dead_mask().tolist() == [False, True, False, True]
    z_e = torch.randn(1, 2, 3, 3)
    assert vq.reset_dead(z_e, torch.Generator().manual_seed(0)) == 2
    assert vq.dead_codes() == 0
    candidates = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    for code in (1, 3):
        assert (candidates == vq.embedding[code]).all(1).any()  # re-seeded from the batch


def test_ema_codebook_moves_used_codes_to_the_mean_of_their_vectors():
    vq = VectorQuantizer(3, 2, ema=True, decay=0.0)
    before = vq.embedding.clone()
    z_e = torch.tensor([[1.0, 3.0, 10.0], [2.0, 4.0, 0.0]]).view(1, 2, 1, 3)
    vq.ema_update(z_e, torch.tensor([[[0, 0, 2]]]))
    assert torch.allclose(vq.embedding[0], torch.tensor([2.0, 3.0]), atol=1e-3)
    assert torch.allclose(vq.embedding[2], torch.tensor([10.0, 0.0]), atol=1e-3)
    assert vq.embedding[1].abs().max() <= before[1].abs().max()  # unused: decays, never jumps
    assert not any(p.requires_grad for p in vq.parameters())  # EMA codebook is not an optimiser's


def _family(kind: str, spec: DataSpec, **cfg) -> Family:
    torch.manual_seed(0)
    if kind == "pixelcnn":
        return build_family("pixelcnn", spec, {**TINY_PIXELCNN, "conditional": spec.labeled, **cfg})
    return build_family("vqvae", spec, {**TINY_VQVAE, "conditional": spec.labeled, **cfg})


@pytest.mark.parametrize("kind,spec", [("pixelcnn", DataSpec(6, 6, 1, 3)), ("pixelcnn", RGB), ("vqvae", GREY)],
                         ids=["pixelcnn-grey-labeled", "pixelcnn-rgb", "vqvae-labeled"])
def test_onnx_sampler_reproduces_torch_images(tmp_path, kind, spec):
    family = _family(kind, spec)
    family.train_mode(False)
    for graph in family.export_specs():
        export_graph(graph, tmp_path / f"{graph.name}.onnx", opset=18)
        assert check_parity(graph, tmp_path / f"{graph.name}.onnx", atol=1e-4, seed=0) <= 1e-4
    nets = load_nets(tmp_path, list(family.sampling_nets()))
    ref = family.sample(5, torch.Generator().manual_seed(3), progress=False)
    got = family.sample(5, torch.Generator().manual_seed(3), nets=nets, progress=False)
    assert ref.shape == (5, *spec.shape)
    assert (ref - got).abs().max() <= 1e-5
    other = family.sample(5, torch.Generator().manual_seed(4), progress=False)
    assert not torch.equal(ref, other)  # the seed, not a constant, decides the images


def _train(family: Family, data: ImageSet, steps: int, total_steps: int | None = None) -> list[dict[str, float]]:
    """The first `steps` of a run of `total_steps` (default: `steps`)."""
    opts = family.make_optimizers(1e-3)
    gen = torch.Generator().manual_seed(0)
    family.train_mode(True)
    out = []
    for step in range(steps):
        batch = data.batch(torch.arange(step, step + 4) % len(data))
        ctx = StepContext(step, total_steps or steps, opts, contextlib.nullcontext, gen)
        out.append(family.train_step(batch, ctx))
    family.train_mode(False)
    return out


@pytest.mark.parametrize("spec", [GREY, RGB], ids=["8x8x1-labeled", "6x6x3"])
def test_pixelcnn_short_run_is_finite_and_samples_are_images(spec):
    family = _family("pixelcnn", spec)
    losses = _train(family, _images(spec, 8), 3)
    assert all(math.isfinite(v) for row in losses for v in row.values())
    images = family.sample(3, torch.Generator().manual_seed(0), progress=False)
    assert images.shape == (3, *spec.shape) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images * 255, (images * 255).round())  # 8-bit values


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("spec,ema", [(GREY, True), (RGB, False)], ids=["8x8x1-labeled-ema", "6x6x3-sgd-codebook"])
def test_vqvae_two_phases_train_their_own_parts_and_samples_are_images(spec, ema):
    family = _family("vqvae", spec, ema=ema, vq_fraction=2 / 3)  # of 3 steps: 2 VQ-VAE steps, then the prior
    data = _images(spec, 8)
    enc0, prior0 = _weights(family.encoder), _weights(family.prior)
    vq_rows = _train(family, data, 2, total_steps=3)
    enc1, prior1 = _weights(family.encoder), _weights(family.prior)
    assert all(torch.equal(a, b) for a, b in zip(prior0, prior1))
    assert not all(torch.equal(a, b) for a, b in zip(enc0, enc1))
    opts = family.make_optimizers(1e-3)
    family.train_mode(True)
    batch = data.batch(torch.arange(4))
    prior_row = family.train_step(batch, StepContext(2, 3, opts, contextlib.nullcontext, torch.Generator()))
    assert all(torch.equal(a, b) for a, b in zip(enc1, _weights(family.encoder)))
    assert not all(torch.equal(a, b) for a, b in zip(prior1, _weights(family.prior)))
    assert [r["phase"] for r in vq_rows] == [0.0, 0.0] and prior_row["phase"] == 1.0
    assert all(r.keys() == prior_row.keys() for r in vq_rows)  # one history.csv header for both phases
    assert all(math.isfinite(v) for row in [*vq_rows, prior_row] for v in row.values())
    assert vq_rows[0]["perplexity"] > 1.5  # data-dependent init: the first batch already uses several codes
    assert 1.0 <= prior_row["perplexity"] <= family.num_codes
    assert {"quantizer.last_used", "quantizer.updates"} <= family.state_dict().keys()  # resumable usage window
    family.train_mode(False)
    images = family.sample(3, torch.Generator().manual_seed(0), progress=False)
    assert images.shape == (3, *spec.shape) and images.min() >= 0 and images.max() <= 1
    metrics = family.evaluate(data, EvaluateConfig(batch_size=4), torch.Generator())
    assert metrics["test_codes_used"] + metrics["test_dead_codes"] == family.num_codes
    assert all(math.isfinite(v) for v in metrics.values())
    a, b = data.batch(torch.arange(2)), data.batch(torch.arange(2, 4))
    path = family.interpolate(a, b, steps=4)
    assert path.shape == (8, *spec.shape)
    assert torch.allclose(path[0], family.sampling_nets()["decoder"](family.encode(a.x))[0])  # t = 0 is a


def test_vqvae_refuses_a_step_budget_that_leaves_a_phase_without_steps():
    family = _family("vqvae", GREY, vq_fraction=0.9)
    family.check_steps(10)
    assert family.cfg.phase_split(10) == 9  # 9 VQ-VAE steps, 1 prior step
    for steps in (1, 4):  # round(0.9) = 1 of 1 step, round(3.6) = 4 of 4 steps: no prior steps
        with pytest.raises(GenopsError, match="vq_fraction"):
            family.check_steps(steps)
    with pytest.raises(GenopsError, match="vq_fraction"):  # round(0.2) = 0: no VQ-VAE steps
        _family("vqvae", GREY, vq_fraction=0.1).check_steps(2)
