"""The GMM memorisation laboratory: crossover M* versus N (launch/gmm_crossover.py).

Presets (--config=configs/gmm_crossover.py:<preset>):
  smoke  seconds on a CPU; the end-to-end test
  demo   `make demo`: ~1 minute on 2 CPU cores, d=30, K=3, N in {20,40,60}, the linear trend
         of M* in N with the cheap protocol (CHEAP_TRAINING)
  paper  "On the Edge of Memorization": d in {30,40,50,60} x K in {3,6,9,12} x N in
         {50,100,150,200}, M/N in 0.1..1.0, 50,000 steps, the authors' optimizer chain on s,
         100 noise draws per point sharing one t, 50 samples, 25-step DDIM returning x at
         t = 0.001 (640 models; for an accelerator)
  scale  N up to 10^4, d up to 3072, a finer M grid, several seeds, minibatches (GPU/TPU)
  curve  the headline curve on 2 CPU cores: d=50, K=12, N in {50,...,400}, 3 seeds, adaptive
         search to 0.02 N, the cheap protocol (CHEAP_TRAINING: 3,000 steps, lr 1e-2, Adam b2 0.9,
         equal to the paper's 50,000-step schedule at the anchor); ~26 min on one core
  sweep  the paper's 64 (d, K, N) configurations with the curve's protocol, 2 seeds, 200 samples
         per model (configs/sweeps/gmm_crossover_paper_grid.py: one run per d, pooled)
  anchor_full / anchor_cheap  the paper's schedule and optimizer / the cheap protocol at d=50, K=12, N=200,
         M/N in 0.5..1.0 (the equivalence table)
  validation_paper / validation_cheap  the authors' protocol / the cheap protocol at M/N in
         0.5..1.0, 2 seeds, 200 samples (configs/sweeps/gmm_crossover_validation.py: four (d, K, N))
  minibatch_check / large_n   minibatch training at N = 200 (vs full batch) and N = 2,000
  replication       the curve's protocol with a fraction of the points stored 10 times, N in
                    {50, ..., 200}, 2 seeds (configs/sweeps/gmm_crossover_replication.py sweeps p)
  replication_rates a fixed M/N grid at N = 200, p = 0.1, r = 10, 200 samples per model: where
                    memorised samples land by multiplicity (configs/sweeps/
                    gmm_crossover_replication_rates.py sweeps p)
  subspace          an isotropic GMM in a random C-dimensional subspace of d = 50 (tau^2 = 0.01),
                    N = 200, 3 seeds (configs/sweeps/gmm_crossover_rank.py sweeps C)

Fields (score_sde style groups):
  data      model ('isotropic' GMM, 'subspace' (an isotropic GMM in a random C-dimensional
            subspace plus off-subspace noise off_variance = tau^2 per dimension) or 'lowrank'
            digit templates), dims (d; multiples of 64 for 'lowrank', d = 64 Cmax), num_components
            (K), train_sizes (N: distinct points), num_val, variance (s0^2), rank (C: 'subspace'
            1..d; 'lowrank' 1..d/64, 0 = d/64; 'isotropic' 0), replication ('none'; 'fraction':
            round(replicated_fraction N) random points each stored `copies` times; 'zipf': the
            point of random rank i stored max(1, round(copies i^-zipf_exponent)) times)
  model     capacity_fractions (M/N), init ('partial': M training points with s^2 =
            init_variance; 'replicated_first': the same with the most replicated points first;
            'random': N(0, I) means, the ablation), init_variance, num_seeds,
            refine_points (0 = off; r > 0: after the first grid of a d, train r more integer M
            values strictly inside each data set's delta window [window_start, window_end],
            evenly spaced among the untrained ones, as one more grid in the folder refine_r<r>/
            next to the grid's result: resumable, skipped when finished; M_pt, the window, the table
            and the figures then use all M values, and models.csv marks these models in its
            `refinement` column), search ('grid': capacity_fractions; 'adaptive': rounds around
            the measured-loss prediction, jaxmem.experiments.gmm_crossover.search) with search_points (per set
            and round), search_span, search_tolerance (fraction of N), search_rounds (after the
            first), search_weighting (the prediction's weighting, one of eval.weightings),
            window_rounds (0 = off; w > 0: after the search or refinement, up to w rounds that
            bracket both ends of each set's delta window, the first crossings of eval.delta and
            1 - eval.delta, to window_tolerance x N, training M = N where no trained M reached
            1 - delta: folders window<k>/; an adaptive search stops once it brackets 0.5 and
            leaves a window end NaN when it never trained high enough)
  training  steps, noise_draws (per point and step), peak_lr, final_lr, warmup_fraction, adam_b2
            (Adam's second-moment decay: 0.999 is the paper's; the cheap protocol's 0.9 lets the
            models leave the memorising start in ~1,500 steps instead of ~35,000),
            optimizer ('jaxmem': Adam on log s^2; 'paper': the authors' chain
            clip_by_global_norm(1e9), adam(schedule, 0.9, adam_b2, 1e-8), ema(0.99, debias) on
            the standard deviation s, jaxmem.train.gmm_grid),
            weighting of the loss ('eps', 'x0', 'custom' with custom_weights), chunk_steps
            (steps per compiled chunk and checkpoint), time grid (num_times, t_min, t_max),
            point_block (noisy points per rematerialised block, 0 = all: bounds memory),
            grid_per_train_size (one grid per (d, N) instead of per d: no padding to the largest N),
            estimator ('iid', 'iid_shared_t' (one t per point and step for its draws: the
            authors'), 'stratified', 'antithetic', 'stratified_antithetic'; see
            jaxmem.train.gmm_grid), batch_size (0 = full batch; B > 0: minibatches of B points)
  sampling  num_samples per model, num_steps of the DDIM sampler, final_denoise (True: return the
            clean estimate at t_min; False: x at t_min, the authors')
  eval      noise_draws for the per-t losses, delta (transition window), weightings of the
            predicted crossovers, crossover_points (M values of the partial-memorisation curve),
            model_batch (models evaluated at once, 0 = all), window_fallback ('nan': a window end
            the ratio never reaches is NaN; 'capacities': the first / last M trained, the authors')
"""

import ml_collections

from jaxmem import noise
from jaxmem.config import select_preset

FRACTIONS_10 = tuple(round(0.1 * i, 2) for i in range(1, 11))


def _base() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(
        model="isotropic", dims=(50,), num_components=(12,), train_sizes=(200,), num_val=200,
        variance=1.0, rank=0, off_variance=0.0, replication="none", replicated_fraction=0.0, copies=1,
        zipf_exponent=1.0))
    config.model = ml_collections.ConfigDict(dict(
        capacity_fractions=FRACTIONS_10, init="partial", init_variance=1e-6, num_seeds=1,
        refine_points=0, search="grid", search_points=4, search_span=0.25, search_tolerance=0.02,
        search_rounds=4, search_weighting="x0", window_rounds=0, window_tolerance=0.05))
    config.training = ml_collections.ConfigDict(dict(
        steps=50_000, noise_draws=100, peak_lr=1e-3, final_lr=1e-6, warmup_fraction=0.1,
        weighting="eps", custom_weights=(), chunk_steps=2_000, num_times=noise.VP_NUM_TIMES,
        t_min=noise.VP_T_MIN, t_max=noise.VP_T_MAX, point_block=0, grid_per_train_size=False,
        estimator="stratified", batch_size=0, adam_b2=0.999, optimizer="jaxmem"))
    config.sampling = ml_collections.ConfigDict(dict(num_samples=50, num_steps=25, final_denoise=True))
    config.eval = ml_collections.ConfigDict(dict(
        noise_draws=20, delta=0.1, weightings=("x0", "eps"), crossover_points=50, model_batch=0,
        window_fallback="nan"))
    return config


def smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.data.update(dims=(6,), num_components=(2,), train_sizes=(8, 12), num_val=16)
    config.model.capacity_fractions = (0.25, 0.5, 1.0)
    config.training.update(steps=20, noise_draws=4, chunk_steps=10)
    config.sampling.update(num_samples=8, num_steps=5)
    config.eval.update(noise_draws=2, crossover_points=6)
    return config


def demo() -> ml_collections.ConfigDict:
    config = _base()
    config.data.update(dims=(30,), num_components=(3,), train_sizes=(20, 40, 60), num_val=100)
    config.training.update(**CHEAP_TRAINING)  # the protocol validated against the paper's schedule
    return config


# The authors' training (their GMM code): the standard deviation s trained with
# optax.chain(clip_by_global_norm(1e9), adam(schedule, 0.9, 0.999, 1e-8), ema(0.99, debias=True)) on
# the base schedule (linear 0 -> 1e-3 over the first 10% of 50,000 steps, then linear to 1e-6),
# full batch, 100 i.i.d. draws per point and step that share one t.
PAPER_TRAINING = dict(optimizer="paper", noise_draws=100, estimator="iid_shared_t")


def paper() -> ml_collections.ConfigDict:
    """The authors' protocol: their optimizer chain on s (PAPER_TRAINING), 100 draws per point and
    step sharing one t, DDIM returning x at t = 0.001, windows falling back to the first / last M."""
    config = _base()
    config.data.update(dims=(30, 40, 50, 60), num_components=(3, 6, 9, 12),
                       train_sizes=(50, 100, 150, 200))
    config.training.grid_per_train_size = True  # 16 grids of 40 models: half the padded work
    config.training.update(**PAPER_TRAINING)
    config.sampling.final_denoise = False
    config.eval.window_fallback = "capacities"
    return config


def scale() -> ml_collections.ConfigDict:
    """N up to 10^4 at d up to 3072 on minibatches of 1,000 points (memory: one set's [B R, M]
    block per member). Training cost, 10 B R d M FLOP per member-step with members padded to the
    largest M: 2.1e18 FLOP in all (1.1e18 without the padding), 1.5e18 of it at d = 3072, N =
    10^4: about 9-12 h on one H100 in float32 (50-67 TFLOP/s), less on a slice (the set axis is
    sharded over devices)."""
    config = _base()
    config.data.update(dims=(64, 3072), num_components=(10,), train_sizes=(1_000, 3_000, 10_000),
                       num_val=1_000)
    config.model.update(capacity_fractions=tuple(round(0.05 * i, 2) for i in range(1, 21)),
                        num_seeds=3)
    config.training.update(steps=20_000, noise_draws=4, chunk_steps=1_000, point_block=8_192,
                           grid_per_train_size=True, batch_size=1_000)
    config.eval.update(noise_draws=4, crossover_points=100, model_batch=4)
    return config


# The cheap protocol: validated against the paper's schedule at the anchor (anchor_full vs
# anchor_cheap, results/gmm_crossover/anchor.md) and used by `curve`. Adam's b2 = 0.9
# instead of 0.999 is what makes it cheap: with the default's 1,000-step memory of the large
# gradients of the memorising start, the models leave that start only after ~35,000 steps at any
# lr (the escape rate per step does not grow with the lr); with b2 = 0.9 they leave it in
# ~1,500 steps at lr 1e-2 and end where the paper's 50,000 steps end.
CHEAP_TRAINING = dict(steps=3_000, peak_lr=1e-2, noise_draws=4, estimator="stratified", chunk_steps=1_000,
                      adam_b2=0.9, optimizer="jaxmem")
ANCHOR_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the paper's grid where its ratio is above 0


def anchor_full() -> ml_collections.ConfigDict:
    """The paper's schedule and optimizer at the anchor (d = 50, K = 12, N = 200): 50,000 steps at
    peak lr 1e-3, the authors' chain on s (training.optimizer='paper'), i.i.d. draws (8 per point
    and step instead of the paper's 100, to fit a CPU; --config.training.noise_draws=100
    --config.training.estimator=iid_shared_t for the authors' draws)."""
    config = _base()
    config.model.capacity_fractions = ANCHOR_FRACTIONS
    config.training.update(noise_draws=8, chunk_steps=2_500, estimator="iid", optimizer="paper")
    return config


def anchor_cheap() -> ml_collections.ConfigDict:
    """The cheap protocol (CHEAP_TRAINING) at the anchor, for the equivalence table."""
    config = anchor_full()
    config.training.update(**CHEAP_TRAINING)
    return config


def validation_paper() -> ml_collections.ConfigDict:
    """The authors' optimizer, schedule and draws sharing one t per point (8 draws instead of 100
    by default: the cost scales with N x M x draws) at M/N in 0.5..1.0, 2 seeds, 200 samples per
    model; configs/sweeps/gmm_crossover_validation.py sets the (d, K, N) points."""
    config = anchor_full()
    config.model.num_seeds = 2
    config.training.update(estimator="iid_shared_t", grid_per_train_size=True)
    config.sampling.num_samples = 200
    config.eval.noise_draws = 10
    return config


def validation_cheap() -> ml_collections.ConfigDict:
    """validation_paper trained with the curve's cheap protocol (CHEAP_TRAINING): same data,
    initialisation and evaluation."""
    config = validation_paper()
    config.training.update(**CHEAP_TRAINING)
    return config


def curve() -> ml_collections.ConfigDict:
    """The crossover curve at the paper's (d, K): N in {50, ..., 400}, 3 seeds, adaptive search
    around the measured-loss prediction to 0.02 N, the cheap protocol; <= 60 min on 2 cores."""
    config = _base()
    config.data.train_sizes = (50, 100, 150, 200, 300, 400)
    config.model.update(num_seeds=3, search="adaptive", search_points=3, search_span=0.25,
                        search_tolerance=0.02, search_rounds=4)
    config.training.update(grid_per_train_size=True, **CHEAP_TRAINING)
    config.eval.update(noise_draws=10)
    return config


def sweep() -> ml_collections.ConfigDict:
    """The paper's 64 configurations (d in {30, 40, 50, 60} x K in {3, 6, 9, 12} x N in {50, 100,
    150, 200}) with the curve's cheap protocol and adaptive search, 2 seeds, 200 samples per model
    (the ratio's standard error at 0.5 is 0.035). configs/sweeps/gmm_crossover_paper_grid.py runs it as
    one run per d and pools the 128 data sets."""
    config = curve()
    config.data.update(dims=(30, 40, 50, 60), num_components=(3, 6, 9, 12), train_sizes=(50, 100, 150, 200))
    config.model.num_seeds = 2
    config.sampling.num_samples = 200
    return config


def minibatch_check() -> ml_collections.ConfigDict:
    """anchor_cheap on minibatches of 100 points for as many epochs (6,000 steps): must reach the
    full-batch M_pt at N = 200."""
    config = anchor_cheap()
    config.training.update(batch_size=100, steps=2 * CHEAP_TRAINING["steps"])
    return config


def large_n() -> ml_collections.ConfigDict:
    """The large-N path shrunk to a CPU: N = 2,000 at d = 50 on minibatches of 200 points, two
    capacities around the transition, cheap evaluation (baselines on 10 capacities, 2 draws)."""
    config = anchor_cheap()
    config.data.train_sizes = (2_000,)
    config.model.capacity_fractions = (0.6, 0.8)
    config.training.update(batch_size=200, chunk_steps=500)
    config.eval.update(noise_draws=2, crossover_points=10)
    return config


def replication() -> ml_collections.ConfigDict:
    """The curve's protocol on replicated data: round(p N) random points stored r = 10 times."""
    config = curve()
    config.data.update(train_sizes=(50, 100, 150, 200), replication="fraction", replicated_fraction=0.1,
                       copies=10)
    config.model.update(num_seeds=2, window_rounds=2)  # replicated data: windows wider than the bracket
    return config


def replication_rates() -> ml_collections.ConfigDict:
    """M/N in 0.1..1.0 at N = 200 with 10% of the points stored 10 times, 200 samples per model."""
    config = replication()
    config.data.train_sizes = (200,)
    config.model.update(search="grid", capacity_fractions=FRACTIONS_10, window_rounds=0)
    config.sampling.num_samples = 200
    return config


def subspace() -> ml_collections.ConfigDict:
    """The curve's protocol at N = 200 on a GMM of intrinsic dimension C = 10 in d = 50."""
    config = curve()
    config.data.update(model="subspace", rank=10, off_variance=0.01, train_sizes=(200,))
    return config


PRESETS = {"demo": demo, "smoke": smoke, "paper": paper, "scale": scale, "anchor_full": anchor_full,
           "anchor_cheap": anchor_cheap, "curve": curve, "sweep": sweep,
           "validation_paper": validation_paper, "validation_cheap": validation_cheap, "minibatch_check": minibatch_check, "large_n": large_n,
           "replication": replication, "replication_rates": replication_rates, "subspace": subspace}


def get_config(arg=None) -> ml_collections.ConfigDict:
    return select_preset(arg, PRESETS)
