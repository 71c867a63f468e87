"""Every option a family's `sample` may take, declared once: the models (`Family.sample_options` names a subset),
the CLI's `genops sample --OPTION` flags and the registered generator's request columns all read this table.
Torch-free, so the CLI can build its parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SampleOption:
    name: str
    type: type
    help: str


SAMPLE_OPTIONS: tuple[SampleOption, ...] = (
    SampleOption("steps", int, "sampling steps (diffusion: DDIM/DDPM chain length)"),
    SampleOption("method", str, "sampler (diffusion: ddim | ddpm)"),
    SampleOption("eta", float, "DDIM stochasticity (0 = deterministic, 1 = DDPM-like)"),
    SampleOption("guidance", float, "classifier-free guidance weight w (0 unconditional, 1 conditional, >1 guided)"),
    SampleOption("truncation", float, "StyleGAN truncation psi: w = w_avg + psi (w - w_avg); < 1 trades diversity "
                                      "for quality"),
)
SAMPLE_OPTION_TYPES: dict[str, type] = {o.name: o.type for o in SAMPLE_OPTIONS}
