"""Denoisers as pure functions: apply(params, x, noise_level, **cond) -> clean estimate."""
