"""CycleGAN: its losses, updates, history buffer, the bank of domain-B images through ONNX Runtime, translation,
and domain B as a generic extra data source (loaded, converted, split and refused when bad)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from genops.config.families import CycleGanConfig
from genops.data.domains import load_domain
from genops.data.spec import DataSpec
from genops.data.tensors import Batch, ImageSet
from genops.errors import GenopsError
from genops.models.capabilities import ExtraData, Translates
from genops.models.families.cyclegan import CycleGAN, cycle_loss
from genops.models.family import StepContext
from genops.models.networks.cyclegan import ImageHistory
from genops.models.registry import build_family
from genops.models.sharding import BatchNoise

SPEC = DataSpec(12, 12, 1, 3, ["0", "1", "2"])
# The declared tiny sizes; a smaller bank and history and faster learning rates for these unit tests.
TINY = {**CycleGanConfig.sized("tiny"), "bank_size": 6, "history_size": 4, "lr_g": 1e-2, "lr_d": 1e-2}


def _set(n: int, seed: int) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 1, 12, 12), generator=gen, dtype=torch.uint8), torch.arange(n) % 3)


def _cyclegan(**cfg) -> CycleGAN:
    torch.manual_seed(0)
    family = build_family("cyclegan", SPEC, {**TINY, **cfg})
    family.attach_data("domain_b", _set(20, 1), _set(9, 2))
    return family


def _ctx(family: CycleGAN, step: int = 0) -> StepContext:
    return StepContext(step, 10, family.make_optimizers(1e-2), contextlib.nullcontext,
                       torch.Generator().manual_seed(1))


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_cycle_loss_is_zero_for_identity_generators():
    a, b = torch.rand(4, 1, 12, 12), torch.rand(4, 1, 12, 12)
    assert float(cycle_loss(nn.Identity(), nn.Identity(), a, b)) == 0.0
    family = _cyclegan()
    with torch.no_grad():
        assert float(cycle_loss(family.G_ab, family.G_ba, a, b)) > 0


def test_each_optimizer_step_moves_only_its_own_networks():
    family = _cyclegan()
    family.train_mode(True)
    ctx = _ctx(family)
    nets = {k: family.networks()[k] for k in ("g_ab", "g_ba", "d_a", "d_b")}
    before = {k: _weights(n) for k, n in nets.items()}
    a = torch.rand(8, 1, 12, 12)
    _, fake_a, fake_b = family.g_step(a, family.b_batch(8, ctx), ctx)
    moved = {k for k, n in nets.items() if not _same(before[k], _weights(n))}
    assert moved == {"g_ab", "g_ba"}
    before = {k: _weights(n) for k, n in nets.items()}
    family.d_step("d_a", family.D_a, a, fake_a, ctx)
    assert {k for k, n in nets.items() if not _same(before[k], _weights(n))} == {"d_a"}
    before = {k: _weights(n) for k, n in nets.items()}
    family.d_step("d_b", family.D_b, family.b_batch(8, ctx), fake_b, ctx)
    assert {k for k, n in nets.items() if not _same(before[k], _weights(n))} == {"d_b"}


def test_training_steps_are_reproducible_and_reduce_the_cycle_loss():
    def run() -> tuple[list[float], CycleGAN]:
        family = _cyclegan()
        family.train_mode(True)
        optimizers = family.make_optimizers(1e-2)
        gen = torch.Generator().manual_seed(1)
        batch = Batch(torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(5)), torch.arange(8) % 3)
        losses = [float(family.train_step(batch, StepContext(s, 30, optimizers, contextlib.nullcontext, gen))
                        ["loss_cycle"]) for s in range(30)]
        return losses, family

    (first, fam1), (second, fam2) = run(), run()
    assert first == second
    assert all(torch.equal(x, y) for x, y in zip(fam1.state_dict().values(), fam2.state_dict().values()))
    assert np.mean(first[-5:]) < np.mean(first[:5])


def test_the_history_buffer_is_reproducible_and_swaps_once_full():
    def queries() -> list[torch.Tensor]:
        history = ImageHistory(4, (1, 2, 2))
        noise = BatchNoise(torch.Generator().manual_seed(3))
        return [history.query(torch.full((3, 1, 2, 2), float(i)), noise) for i in range(6)]

    first, second = queries(), queries()
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert torch.equal(first[0], torch.zeros(3, 1, 2, 2))  # not full yet: the fakes themselves
    later = torch.cat(first[2:])
    values = {float(v) for v in later.flatten()}
    assert any(v < i for i, q in enumerate(first[2:], start=2) for v in q.flatten().tolist())  # past fakes returned
    assert values <= {float(i) for i in range(6)}


def test_the_bank_travels_with_the_weights_and_the_onnx_graphs_match_torch(tmp_path):
    from genops.serving.onnx_export import check_parity, export_graph
    from genops.serving.onnx_runtime import load_nets
    from genops.storage.bundle import load_bundle, save_bundle
    from genops.storage.integrity import record_hashes

    family = _cyclegan()
    family.train_mode(False)
    held_out = family.domain_b[1].images
    assert all(any(torch.equal(img, h) for h in held_out) for img in family.bank.images)  # bank = held-out B
    save_bundle(tmp_path, family)
    loaded = load_bundle(tmp_path)  # no domain attached: the bank comes from the weights
    assert torch.equal(loaded.bank.images, family.bank.images)
    specs = loaded.export_specs()
    assert [s.name for s in specs] == ["b_to_a", "a_to_b", "source"]
    for spec in specs:
        export_graph(spec, tmp_path / f"{spec.name}.onnx", 18)
        assert check_parity(spec, tmp_path / f"{spec.name}.onnx", 1e-4, 0) <= 1e-4
    record_hashes(tmp_path, [f"{s.name}.onnx" for s in specs])
    nets = load_nets(tmp_path, list(loaded.sampling_nets()))
    ref = loaded.sample(10, torch.Generator().manual_seed(4))
    got = loaded.sample(10, torch.Generator().manual_seed(4), nets=nets)
    assert ref.shape == (10, 1, 12, 12) and float((ref - got).abs().max()) < 1e-4
    x = torch.rand(5, 1, 12, 12)
    for direction in ("a2b", "b2a"):
        assert float((loaded.translate(x, direction) - loaded.translate(x, direction, nets=nets)).abs().max()) < 1e-4


def test_translate_is_an_interface_method_other_families_decline():
    family = _cyclegan()
    family.train_mode(False)
    x = torch.rand(3, 1, 12, 12)
    out = family.translate(x, "b2a")
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(GenopsError, match="direction"):
        family.translate(x, "sideways")
    gan = build_family("gan", SPEC, {"widths": [4, 8], "latent_dim": 4})
    assert isinstance(family, Translates | ExtraData) and not isinstance(gan, Translates | ExtraData)


def test_evaluate_reports_translation_fid_cycle_error_and_content_against_the_baseline():
    family = _cyclegan()
    family.train_mode(False)

    class Cfg:
        batch_size = 16

    from genops.evaluation.sample_metrics import fid
    from genops.models.family import EvaluatorView

    view = EvaluatorView(lambda x: x.flatten(1)[:, :6], lambda x: torch.softmax(x.flatten(1)[:, :3], 1), fid)
    metrics = family.evaluate(_set(12, 7), Cfg(), torch.Generator().manual_seed(0), view)
    for key in ("cycle_l1", "identity_l1_a", "translation_fid_b2a", "translation_fid_a2b", "untranslated_fid_b",
                "content_kept_b2a", "content_untranslated_b", "content_kept_a2b"):
        assert np.isfinite(metrics[key]), key
    images, nrow = family.figures(torch.Generator().manual_seed(0))["translation"]
    assert images.shape == (3 * nrow, 1, 12, 12)


def test_domain_b_is_converted_to_the_main_spec_split_and_hashed(tmp_path, caplog):
    from PIL import Image

    folder = tmp_path / "b"
    for k in range(3):
        (folder / str(k)).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((20, 20, 3), 40 * k + i, np.uint8)).save(folder / str(k) / f"{i}.png")
    (folder / "1" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level("WARNING"):
        domain = load_domain("cyclegan", "domain_b", str(folder), tmp_path, SPEC, 0, 0.34)
    assert domain.train.images.shape[1:] == (1, 12, 12) and len(domain.train) + len(domain.test) == 18
    assert sorted(domain.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]  # stratified; classes mapped by name
    log = caplog.text
    assert "resized 20x20 -> 12x12" in log and "1/broken.png" in log and "colour" not in log
    again = load_domain("cyclegan", "domain_b", str(folder), tmp_path, SPEC, 0, 0.34)
    assert again.data_hash == domain.data_hash
    assert load_domain("cyclegan", "domain_b", str(folder), tmp_path, SPEC, 1, 0.34).data_hash != domain.data_hash


@pytest.mark.parametrize("bad", ["missing", "few"])
def test_a_bad_domain_b_is_refused_naming_the_key(tmp_path, bad):
    from PIL import Image

    folder = tmp_path / "b"
    if bad == "few":
        folder.mkdir()
        for i in range(3):
            Image.fromarray(np.zeros((12, 12), np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(GenopsError, match=r"cyclegan\.domain_b") as exc:
        load_domain("cyclegan", "domain_b", str(folder), tmp_path, SPEC, 0, 0.2)
    assert ("at least" in str(exc.value)) == (bad == "few")


def test_training_without_domain_b_says_what_is_missing():
    family = build_family("cyclegan", SPEC, TINY)
    batch = Batch(torch.rand(4, 1, 12, 12), torch.zeros(4, dtype=torch.long))
    with pytest.raises(GenopsError, match="domain_b"):
        family.train_step(batch, _ctx(family))
