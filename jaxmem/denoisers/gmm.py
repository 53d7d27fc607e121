"""The GMM denoiser of the memorization laboratory (VP process), as pure functions.

Process (jaxmem.noise): x_t = alpha_t x0 + sigma_t eps, alpha_t = sqrt(1 - t^2), sigma_t = t.
Model: M means mu_m [M, d], one shared scalar variance s^2 (stored as `log_var` = log s^2, or
as the standard deviation `std` = s, the authors' trainable parameter: see `variance`), uniform
priors over the components that `mask` switches on. The exact posterior mean of x0 under this
model (the paper's denoiser) is

    v_t      = alpha_t^2 s^2 + sigma_t^2
    w_m      = softmax_m(-|x_t - alpha_t mu_m|^2 / (2 v_t))        (over unmasked m)
    x0_hat   = sum_m w_m [mu_m + (alpha_t s^2 / v_t)(x_t - alpha_t mu_m)]
    eps_hat  = (x_t - alpha_t x0_hat) / sigma_t = (sigma_t / v_t)(x_t - alpha_t mbar),

with mbar = sum_m w_m mu_m. The logits are computed in matmul form: |x_t|^2 is the same for
every component and cancels in the softmax, leaving (alpha_t <x_t, mu_m> - alpha_t^2 |mu_m|^2 / 2)
/ v_t, so a batch needs one [B, d] x [d, M] product and no [B, M, d] difference tensor; the
softmax is a log-sum-exp (jax.nn.softmax subtracts the row maximum).

The same function with fixed parameters gives the baselines: the ground-truth (generalising)
denoiser of the data GMM (means = data means, s^2 = s0^2), the fully memorising denoiser
(means = all N training points, s^2 -> 0: the empirical optimal denoiser) and the partially
memorising one (means = a fixed subset of M training points, s^2 -> 0). `log_var = -inf`
gives s^2 = 0 exactly.

Parameters: {"means": [M, d] float32, "log_var": [] float32} or {"means": [M, d] float32, "std": []
float32} (every function here takes either; the gradients are w.r.t. the parameter stored).
`mask`: [M] bool (None = all).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmem.noise import vp_alpha, vp_sigma


def make_params(means, variance) -> dict:
    """Parameters {"means": [M, d] float32, "log_var": [] float32} from means and s^2 (>= 0)."""
    means = jnp.asarray(means, jnp.float32)
    return {"means": means, "log_var": jnp.log(jnp.asarray(variance, jnp.float32))}


def ground_truth_params(data_means, data_variance: float = 1.0) -> dict:
    """The data GMM itself: the generalising (Bayes-optimal) denoiser."""
    return make_params(data_means, data_variance)


def memorizing_params(train_points) -> dict:
    """Means = all N training points, s^2 = 0: the empirical optimal denoiser."""
    return make_params(train_points, 0.0)


def variance(params: dict):
    """s^2 of either parametrisation: exp(log_var), or std^2 (the model depends on s only through
    s^2, so s and -s are the same model)."""
    return jnp.square(params["std"]) if "std" in params else jnp.exp(params["log_var"])


def _schedule(t):
    t = jnp.asarray(t, jnp.float32)
    return vp_alpha(t), vp_sigma(t)


def component_logits(params: dict, x_t, t, mask=None):
    """Log-posterior of each component up to a per-row constant: [B, M].

    x_t: [B, d]; t: scalar or [B]; mask: [M] bool or None. Masked components get -inf.
    """
    means = params["means"]
    alpha, sigma = _schedule(t)
    alpha, sigma = jnp.broadcast_to(alpha, x_t.shape[:1]), jnp.broadcast_to(sigma, x_t.shape[:1])
    v = alpha**2 * variance(params) + sigma**2                                  # [B]
    cross = x_t @ means.T                                                       # [B, M]
    half_sqnorm = 0.5 * jnp.sum(means * means, axis=-1)                         # [M]
    logits = (alpha[:, None] * cross - alpha[:, None] ** 2 * half_sqnorm) / v[:, None]
    if mask is not None:
        logits = jnp.where(mask, logits, -jnp.inf)
    return logits


def _posterior_terms(params: dict, x_t, t, mask):
    """(alpha [B,1], sigma [B,1], v [B,1], s^2, mbar [B, d]) shared by both parametrisations."""
    alpha, sigma = _schedule(t)
    alpha = jnp.broadcast_to(alpha, x_t.shape[:1])[:, None]
    sigma = jnp.broadcast_to(sigma, x_t.shape[:1])[:, None]
    s2 = variance(params)
    v = alpha**2 * s2 + sigma**2
    weights = jax.nn.softmax(component_logits(params, x_t, t, mask), axis=-1)   # [B, M]
    return alpha, sigma, v, s2, weights @ params["means"]


def apply(params: dict, x_t, t, mask=None):
    """eps-prediction eps_hat = (sigma_t / v_t)(x_t - alpha_t mbar): [B, d], units of eps.

    x_t: [B, d] noisy points; t: scalar or [B] VP times in (0, 1); mask: [M] bool or None.
    """
    alpha, sigma, v, _, mean_of_means = _posterior_terms(params, x_t, t, mask)
    return (sigma / v) * (x_t - alpha * mean_of_means)


def apply_x0(params: dict, x_t, t, mask=None):
    """Posterior mean x0_hat = (alpha_t s^2 x_t + sigma_t^2 mbar) / v_t: [B, d], data units.

    Algebraically (x_t - sigma_t eps_hat) / alpha_t, written without the division by alpha_t.
    """
    alpha, sigma, v, s2, mean_of_means = _posterior_terms(params, x_t, t, mask)
    return (alpha * s2 * x_t + sigma**2 * mean_of_means) / v


def _block_loss_and_grad(params, x_t, t, eps, point_weights, mask):
    """Loss and parameter gradient of one block of points: (loss [], {"means": [M, d], "log_var" or
    "std": []}, the keys of params)."""
    alpha, sigma = _schedule(t)
    alpha, sigma = alpha[:, None], sigma[:, None]                                 # [B, 1]
    means, s2 = params["means"], variance(params)
    v = alpha**2 * s2 + sigma**2                                            # [B, 1]
    logits = component_logits(params, x_t, t, mask > 0)                           # [B, M]
    weights = jax.nn.softmax(logits, axis=-1)
    mean_of_means = weights @ means                                               # [B, d]
    eps_hat = (sigma / v) * (x_t - alpha * mean_of_means)
    residual = eps_hat - eps
    loss = jnp.sum(point_weights * jnp.sum(residual * residual, axis=-1))
    # Backward (see weighted_eps_loss), with dL = 1.
    grad_residual = 2.0 * point_weights[:, None] * residual                       # [B, d]
    grad_mbar = -(sigma * alpha / v) * grad_residual                              # [B, d]
    grad_weights = grad_mbar @ means.T                                            # [B, M]
    grad_logits = weights * (grad_weights - jnp.sum(grad_mbar * mean_of_means, axis=-1, keepdims=True))
    grad_means = (weights.T @ grad_mbar + (grad_logits * (alpha / v)).T @ x_t
                  - jnp.sum(grad_logits * (alpha**2 / v), axis=0)[:, None] * means)
    finite_logits = jnp.where(mask > 0, logits, 0.0)
    grad_v = -(jnp.sum(grad_residual * eps_hat, axis=-1, keepdims=True)
               + jnp.sum(grad_logits * finite_logits, axis=-1, keepdims=True)) / v
    grad_variance = jnp.sum(grad_v * alpha**2)                                    # dL/ds^2
    if "std" in params:                                                           # ds^2/ds = 2 s
        grad_std = grad_variance * 2.0 * params["std"]
        return loss, {"means": grad_means, "std": grad_std.astype(params["std"].dtype)}
    return loss, {"means": grad_means, "log_var": (grad_variance * s2).astype(params["log_var"].dtype)}


def loss_and_grad(params: dict, x_t, t, eps, point_weights, mask, block: int = 0):
    """(weighted_eps_loss, its gradient w.r.t. params) in one pass over blocks of `block` points.

    Each block's [block, M] logits live only while the block is processed (a block of a few
    thousand points stays in the CPU's L2 cache), and the loss and gradient of all blocks are
    summed in a lax.scan; block <= 0 or >= P: one block. Padding to whole blocks uses
    zero-weight copies of the last point, so it changes nothing.
    """
    num_points = x_t.shape[0]
    if block <= 0 or block >= num_points:
        return _block_loss_and_grad(params, x_t, t, eps, point_weights, mask)
    extra = -num_points % block
    pad = lambda a: jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), mode="edge")  # noqa: E731
    blocks = [pad(a).reshape((-1, block) + a.shape[1:]) for a in (x_t, t, eps)]
    blocks.append(jnp.pad(point_weights, (0, extra)).reshape(-1, block))
    zero = (jnp.zeros((), x_t.dtype), jax.tree_util.tree_map(jnp.zeros_like, params))

    def add_block(total, xs):
        loss, grads = _block_loss_and_grad(params, *xs, mask)
        return (total[0] + loss, jax.tree_util.tree_map(jnp.add, total[1], grads)), None

    return jax.lax.scan(add_block, zero, blocks)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def weighted_eps_loss(params: dict, x_t, t, eps, point_weights, mask, block: int = 0):
    """sum_p point_weights_p |eps_hat(x_t_p, t_p) - eps_p|^2 (the training loss), fused.

    x_t, eps: [P, d]; t, point_weights: [P]; mask: [M] float (1 = component on, 0 = padding);
    block: points per block of loss_and_grad (0 = all at once; same value and gradient).
    Same value as summing `apply` residuals, with a hand-written gradient (w.r.t. params only),
    computed together with the loss: with g_r = 2 c_p r_p, g_mbar = -(sigma alpha / v) g_r and
    B = w * (g_mbar mu^T - <g_mbar, mbar>) (the softmax backward),
        dL/dmu   = w^T g_mbar + (B alpha / v)^T x_t - (sum_p B_pm alpha_p^2 / v_p) mu_m
        dL/dv_p  = -<g_r, eps_hat>_p / v_p - sum_m B_pm logit_pm / v_p,  dv/dlog s^2 = alpha^2 s^2
        (dv/ds = 2 alpha^2 s for the `std` parametrisation).
    Five [P, d] x [d, M]-sized matrix products per step and no [P, M, d] tensor; autodiff of
    the same expression runs several times slower on CPU.
    """
    return loss_and_grad(params, x_t, t, eps, point_weights, mask, block)[0]


def _loss_fwd(params, x_t, t, eps, point_weights, mask, block):
    loss, grads = loss_and_grad(params, x_t, t, eps, point_weights, mask, block)
    return loss, (grads, (x_t, t, eps, point_weights, mask))


def _loss_bwd(block, cached, g):
    grads, inputs = cached
    zeros = jax.tree_util.tree_map(jnp.zeros_like, inputs)
    return (jax.tree_util.tree_map(lambda x: (g * x).astype(x.dtype), grads),) + zeros


weighted_eps_loss.defvjp(_loss_fwd, _loss_bwd)
