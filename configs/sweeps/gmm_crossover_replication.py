"""The crossover on replicated data: M_pt against N at replication p in {0, 0.1, 0.3}, r = 10.

    python launch/sweep.py --config=configs/gmm_crossover.py:replication \
        --sweep=configs/sweeps/gmm_crossover_replication.py --workdir=runs/crossover_replication

Each run is the `replication` preset (the curve's cheap protocol, N in {50, 100, 150, 200}, 2
seeds, adaptive search to 0.02 N) at one fraction p of the N distinct points stored 10 times.
jaxmem.experiments.gmm_crossover.structure:analyze puts M_pt per (p, N) beside the closed-form
and measured-loss predictions for replicated data (jaxmem.theory, covered_capacity) and draws
structure.png and multiplicity.png.
"""

from jaxmem.experiments.gmm_crossover import structure

FRACTIONS = (0.0, 0.1, 0.3)

ANALYSIS = structure.ANALYSIS
ANALYSIS_OPTIONS = {"field": "data.replicated_fraction"}


def get_sweep():
    return [{"data.replicated_fraction": list(FRACTIONS)}]
