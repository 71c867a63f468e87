"""Diffusion schedules, samplers, EMA and the variational bound, apart from any network (as in diffusers)."""
