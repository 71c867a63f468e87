"""StyleGAN: modulated convolutions, style mixing, truncation, separate updates, path length, the mixing grid."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from genops.data.spec import DataSpec
from genops.data.tensors import Batch
from genops.models.families.stylegan import StyleGAN, trimmed_mean
from genops.models.family import StepContext
from genops.models.networks.stylegan import ModulatedConv
from genops.models.registry import build_family

SPEC = DataSpec(12, 12, 1, 3)


def _stylegan(**cfg) -> StyleGAN:
    torch.manual_seed(0)
    return build_family("stylegan", SPEC, {"latent_dim": 8, "w_dim": 8, "widths": [8, 16], "mapping_depth": 2,
                                           **cfg})


def _ctx(family: StyleGAN, step: int = 0) -> StepContext:
    return StepContext(step, 1, family.make_optimizers(1e-3), contextlib.nullcontext,
                       torch.Generator().manual_seed(1))


def _batch() -> Batch:
    return Batch(torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(2)), torch.arange(8) % 3)


def _params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_modulated_conv_equals_convolving_each_sample_with_its_own_modulated_demodulated_weights():
    """The activation-scaling form the exporter needs must be exactly StyleGAN2's per-sample weight form."""
    torch.manual_seed(0)
    conv = ModulatedConv(5, 7, w_dim=6)
    x, w = torch.randn(3, 5, 9, 9), torch.randn(3, 6)
    style = conv.affine(w)
    expected = []
    for i in range(3):
        weight = conv.weight * conv.scale * style[i][None, :, None, None]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        expected.append(F.conv2d(x[i: i + 1], weight, padding=1))
    assert torch.allclose(conv(x, w), torch.cat(expected), atol=1e-5)


def test_each_update_moves_only_its_own_network_and_the_ema_follows_the_generator():
    family = _stylegan()
    ctx = _ctx(family)
    g0, d0, e0 = _params(family.G), _params(family.D), _params(family.ema.module)
    out = family.d_step(_batch(), ctx)  # step 0: the lazy R1 penalty is due
    assert out["r1"] > 0
    assert _same(g0, _params(family.G)) and not _same(d0, _params(family.D))
    d1 = _params(family.D)
    family.g_step(8, ctx)
    assert _same(d1, _params(family.D)) and not _same(g0, _params(family.G))
    assert not _same(e0, _params(family.ema.module))
    assert torch.count_nonzero(family.G.mapping.w_avg) > 0
    assert torch.equal(family.ema.module.mapping.w_avg, family.G.mapping.w_avg)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_style_mixing_switches_once_from_one_w_to_another(p):
    family = _stylegan(style_mixing=p)
    with torch.no_grad():
        ws = family.mixed_styles(16, _ctx(family).noise)
    assert ws.shape == (16, family.num_ws, 8)
    for row in ws:
        changes = int((row[1:] != row[:-1]).any(dim=1).sum())
        assert changes == (1 if p == 1.0 else 0)  # p = 1: every sample mixes, at a layer in 1..num_ws-1


def test_truncation_zero_collapses_every_sample_onto_the_mean_w():
    family = _stylegan(noise=False)  # with noise the images would still differ in their stochastic detail
    family.G.mapping.w_avg.normal_()
    family.ema.module.load_state_dict(family.G.state_dict())
    gen = torch.Generator().manual_seed(0)
    psi0 = family.sample(4, gen, truncation=0.0)
    assert torch.allclose(psi0, psi0[:1].expand_as(psi0), atol=1e-6)
    full = family.sample(4, torch.Generator().manual_seed(0))
    assert (full - full[:1]).abs().max() > 1e-3
    assert set(family.sample_variants()) == {"psi050", "psi070"}


def test_path_length_scales_with_the_square_of_the_feature_scale_and_is_reproducible():
    family = _stylegan()
    feats = lambda x: x.flatten(1)  # noqa: E731

    def ppl(scale: float) -> dict[str, float]:
        return family.path_lengths(lambda x: scale * feats(x), 32, 1e-2, 16, torch.Generator().manual_seed(5))

    one, two = ppl(1.0), ppl(2.0)
    assert one == ppl(1.0)
    assert set(one) == {"ppl_z", "ppl_w"} and all(v > 0 for v in one.values())
    for k in one:
        assert two[k] == pytest.approx(4 * one[k], rel=1e-6)


def test_trimmed_mean_drops_the_one_percent_tails():
    values = torch.cat([torch.ones(98, dtype=torch.float64), torch.tensor([1e6, -1e6], dtype=torch.float64)])
    assert trimmed_mean(values, 0.01) == pytest.approx(1.0)


def test_style_mixing_grid_takes_coarse_styles_from_rows_and_fine_styles_from_columns():
    family = build_family("stylegan", DataSpec(28, 28, 1, 0), {"widths": [8, 8, 8], "w_dim": 8, "latent_dim": 8})
    assert family.coarse_layers() == 3  # 4x4 and both 7x7 layers of 4 -> 7 -> 14 -> 28
    k = 3
    grid = family.style_mixing_grid(torch.Generator().manual_seed(0), k=k).view(k + 1, k + 1, 1, 28, 28)
    assert torch.count_nonzero(grid[0, 0]) == 0  # the blank corner
    fine_sources, coarse_sources = grid[0, 1:], grid[1:, 0]
    mixed = grid[1:, 1:]
    assert not torch.allclose(mixed[0, 0], fine_sources[0]) and not torch.allclose(mixed[0, 0], coarse_sources[0])
    # A row shares its coarse styles: its cells are closer to each other than a column's cells are.
    row_spread = (mixed - mixed.mean(dim=1, keepdim=True)).abs().mean()
    col_spread = (mixed - mixed.mean(dim=0, keepdim=True)).abs().mean()
    assert row_spread < col_spread


def test_conditional_stylegan_is_refused_by_the_schema():
    with pytest.raises(Exception, match="unconditional"):
        _stylegan(conditional=True)
