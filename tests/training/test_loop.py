"""The training loop: deterministic on CPU, and a resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from genops.data.spec import DataSpec
from genops.data.tensors import ImageSet
from genops.errors import TrainingDiverged
from genops.models.registry import build_family
from genops.training.loop import LoopSettings, train

SPEC = DataSpec(8, 8, 1, 0)


def _data() -> ImageSet:
    g = torch.Generator().manual_seed(3)
    return ImageSet(torch.randint(0, 256, (96, 1, 8, 8), dtype=torch.uint8, generator=g), torch.full((96,), -1))


def _fresh_vae():
    torch.manual_seed(0)
    return build_family("vae", SPEC, {"latent_dim": 4, "widths": [8, 16]})


def _cfg(**kw) -> LoopSettings:
    return LoopSettings(**{"steps": 12, "batch_size": 16, "lr": 1e-3, "checkpoint_every": 4, "log_every": 1,
                           "seed": 5, "max_loss": 1e8, "progress": False, **kw})


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    cpu = torch.device("cpu")
    straight = _fresh_vae()
    train(straight, _data(), _cfg(), tmp_path / "a", "fp", cpu)

    def stop_at_8(step, _losses):
        if step == 8:
            raise Interrupt

    interrupted = _fresh_vae()
    with pytest.raises(Interrupt):
        train(interrupted, _data(), _cfg(), tmp_path / "b", "fp", cpu, on_log=stop_at_8)
    resumed = _fresh_vae()  # a new process would start from fresh weights and load the checkpoint
    result = train(resumed, _data(), _cfg(), tmp_path / "b", "fp", cpu)
    assert result.resumed_from == 8
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in result.history] == pytest.approx(
        [h["loss"] for h in train(_fresh_vae(), _data(), _cfg(), tmp_path / "c", "fp", cpu).history])


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    cpu = torch.device("cpu")
    train(_fresh_vae(), _data(), _cfg(steps=4), tmp_path, "params-A", cpu)
    result = train(_fresh_vae(), _data(), _cfg(steps=4), tmp_path, "params-B", cpu)
    assert result.resumed_from == 0


def test_divergence_fails_with_a_clear_message(tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged at step 1"):
        train(_fresh_vae(), _data(), _cfg(max_loss=1.0), tmp_path, "fp", torch.device("cpu"))


def _interrupted_at_8(folder):
    def stop_at_8(step, _losses):
        if step == 8:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_fresh_vae(), _data(), _cfg(), folder, "fp", torch.device("cpu"), on_log=stop_at_8)


def test_a_bit_flipped_or_truncated_checkpoint_is_refused_with_what_to_do(tmp_path):
    from genops.training.checkpoint import CorruptCheckpoint

    _interrupted_at_8(tmp_path)
    (weights,) = tmp_path.glob("ckpt-*.safetensors")
    assert weights.name == "ckpt-000008.safetensors"  # older weights are gone once the state names the new ones
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match=rf"ckpt-000008.safetensors: sha256 .* differs .* delete {tmp_path}"):
        train(_fresh_vae(), _data(), _cfg(), tmp_path, "fp", torch.device("cpu"))
    state = tmp_path / "ckpt-state.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    with pytest.raises(CorruptCheckpoint, match="ckpt-state.pt: unreadable or not a plain tensor file"):
        train(_fresh_vae(), _data(), _cfg(), tmp_path, "fp", torch.device("cpu"))


def test_a_checkpoint_state_carrying_pickled_code_is_not_run(tmp_path):
    """torch.load(weights_only=True): an object whose unpickling would call a function is refused, not called."""
    from genops.training.checkpoint import CorruptCheckpoint

    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    _interrupted_at_8(tmp_path)
    torch.save({"step": 8, "fingerprint": "fp", "evil": Payload()}, tmp_path / "ckpt-state.pt")
    with pytest.raises(CorruptCheckpoint, match="not a plain tensor file"):
        train(_fresh_vae(), _data(), _cfg(), tmp_path, "fp", torch.device("cpu"))


def test_kill_between_the_weights_and_the_state_rename_resumes_the_previous_checkpoint(tmp_path):
    """New weights written, state not yet replaced (a kill -9 between the two renames): the old state still names
    complete weights of its own step, so the resumed run ends exactly where an uninterrupted one does."""
    import shutil

    cpu = torch.device("cpu")
    _interrupted_at_8(tmp_path / "b")
    (tmp_path / "b" / "ckpt-000004.safetensors").write_bytes(b"")  # stale leftovers must not confuse the loader
    shutil.copy(tmp_path / "b" / "ckpt-000008.safetensors", tmp_path / "b" / "ckpt-000012.safetensors")
    resumed = _fresh_vae()
    result = train(resumed, _data(), _cfg(), tmp_path / "b", "fp", cpu)
    assert result.resumed_from == 8
    straight = _fresh_vae()
    train(straight, _data(), _cfg(), tmp_path / "a", "fp", cpu)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
