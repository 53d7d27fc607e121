"""Denoisers as pure functions of (params, x, noise level).

The image denoisers (empirical, linear, and the EDM network through edm.precondition) follow one
calling convention: apply(params, x, sigma, ...) -> the clean estimate x0_hat, x's shape, VE
noise level sigma in data units (docs/formulas.md). The GMM laboratory's model (gmm) works on
the VP scale of paper B instead: gmm.apply(params, x_t, t) returns the noise estimate eps_hat
(the quantity its loss compares), gmm.apply_x0 the clean estimate.
"""
