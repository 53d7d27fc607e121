"""The cheap protocol against the authors' at four (d, K, N) points of the paper's grid.

    python launch/sweep.py --config=configs/gmm_crossover.py:validation_paper \
        --sweep=configs/sweeps/gmm_crossover_validation.py --workdir=runs/validation_paper
    python launch/sweep.py --config=configs/gmm_crossover.py:validation_cheap \
        --sweep=configs/sweeps/gmm_crossover_validation.py --workdir=runs/validation_cheap

Three runs, zipped: (d, K) = (50, 12) at N in {50, 100}, (30, 3) at N = 100, (60, 12) at N = 100,
each at M/N in 0.5..1.0 with 2 seeds. Same seeds, so both sweeps train on the same data from the
same initial means; launch/compare_crossover.py compares each pair of runs.
"""

POINTS = (((50,), (12,), (50, 100)), ((30,), (3,), (100,)), ((60,), (12,), (100,)))


def get_sweep():
    dims, components, sizes = zip(*POINTS)
    return [{"data.dims": list(dims), "data.num_components": list(components), "data.train_sizes": list(sizes)}]
