"""The GMM laboratory over training-set size N: one run (one grid of M/N) per N.

    python launch/sweep.py --config=configs/gmm_crossover.py:demo --sweep=configs/sweeps/gmm_crossover_n.py \
        --workdir=runs/crossover_n

Each run's summary.json holds its M_pt (rows.0.M_pt) and predicted crossovers; results.csv
puts them side by side and results.png draws the M* versus N curve.
"""

TRAIN_SIZES = (20, 40, 60, 80, 100)

PLOT = {"x": "rows.0.N", "y": ["rows.0.M_pt", "rows.0.Mstar_formula_x0", "rows.0.Mstar_measured_x0"]}


def get_sweep():
    return [{"data.train_sizes": [(n,) for n in TRAIN_SIZES]}]
