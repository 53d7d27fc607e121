"""Where memorised samples land: a fixed M/N grid on replicated data, p in {0.1, 0.3}, r = 10.

    python launch/sweep.py --config=configs/gmm_crossover.py:replication_rates \
        --sweep=configs/sweeps/gmm_crossover_replication_rates.py --workdir=runs/crossover_replication_rates

Each run is the `replication_rates` preset (N = 200, 2 seeds, M/N in 0.1..1.0, 200 samples per
model, the cheap protocol) at one fraction p of the points stored 10 times.
jaxmem.experiments.gmm_crossover.structure:analyze writes multiplicity.csv / .png: per model, the
memorisation rate per point stored 10 times and per point stored once, relative to the model's
rate over all points (1 = no preference).
"""

from jaxmem.experiments.gmm_crossover import structure

FRACTIONS = (0.1, 0.3)

ANALYSIS = structure.ANALYSIS
ANALYSIS_OPTIONS = {"field": "data.replicated_fraction"}


def get_sweep():
    return [{"data.replicated_fraction": list(FRACTIONS)}]
