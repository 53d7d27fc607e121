"""Geometry of memorization across noise levels ("Two Calm Ends and the Wild Middle"): the kernels
behind jaxmem.experiments.noise_regimes.

concentration  W_sigma, entropy, effective count, source weight for a whole sigma grid in one pass
coverage       Laurent–Massart shell coverage C_sigma and the exact chi-square shell mass
mse            denoising MSE curves and denoiser-to-denoiser distances for any apply(params, x, sigma)
regimes        small / medium / large regimes from W and C; EDM-grid index ranges
queries        input checks, chunked execution sharded over devices, Monte Carlo mean and standard error
"""
