"""The paper's 64 configurations of the GMM laboratory, one run per data dimension d.

    python launch/sweep.py --config=configs/gmm_crossover.py:sweep \
        --sweep=configs/sweeps/gmm_crossover_paper_grid.py --parallel=2 --workdir=runs/paper_grid

Each run trains every (K, N, seed) of one d (K in {3, 6, 9, 12}, N in {50, 100, 150, 200}, 2
seeds: 32 data sets) with the curve's protocol and adaptive capacity search.
jaxmem.experiments.gmm_crossover.paper_grid:analyze then pools the four runs' crossover.csv into
one table per configuration (M_pt, the delta window, the 0.5 crossing over seeds), fits M_pt
against N per (d, K) and over all, tests whether the per-(d, K) slopes differ by more than their
standard errors, fits the slopes of the window start, the crossing and the window end, and fits
a loss weighting lambda(t) on the 26-point time grid that predicts M_pt from the measured
baseline losses, trained on half the configurations and scored on the others.
"""

DIMS = (30, 40, 50, 60)

ANALYSIS = "jaxmem.experiments.gmm_crossover.paper_grid:analyze"


def get_sweep():
    return [{"data.dims": [(d,) for d in DIMS]}]
