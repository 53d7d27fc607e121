"""The crossover against intrinsic dimension: M_pt at N = 200 for a GMM in a C-dimensional subspace.

    python launch/sweep.py --config=configs/gmm_crossover.py:subspace \
        --sweep=configs/sweeps/gmm_crossover_rank.py --workdir=runs/crossover_rank

Each run is the `subspace` preset (d = 50, K = 12, N = 200, 3 seeds, off-subspace variance
tau^2 = 0.01, the curve's cheap protocol) at one rank C. C = 50 is the isotropic GMM in a random
basis. jaxmem.experiments.gmm_crossover.structure:analyze draws M_pt / N against C beside the
closed form (which does not depend on C when tau = 0) and the measured-loss prediction.
"""

from jaxmem.experiments.gmm_crossover import structure

RANKS = (2, 5, 10, 25, 50)

ANALYSIS = structure.ANALYSIS
ANALYSIS_OPTIONS = {"field": "data.rank"}


def get_sweep():
    return [{"data.rank": list(RANKS)}]
