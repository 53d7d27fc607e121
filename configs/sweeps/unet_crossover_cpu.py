"""The crossover for networks at CPU scale: 9 small digits U-Nets, about 25 minutes on 2 cores.

    python launch/sweep.py --config=configs/edm.py:crossover_digits \
        --sweep=configs/sweeps/unet_crossover_cpu.py --config.training.total_images=192000 \
        --config.sampling.num_samples=256 --workdir=runs/unet_crossover_cpu

N in {16, 64, 256} digits x channels in {8, 16, 32} (embed_dim = 4 x channels), 192 k images
per run (1,500 steps of 128): a coarse, laptop-sized look at the same question as
unet_crossover_digits.py (which trains 1 M images per run on a GPU), with the same analysis
and report.
"""

from jaxmem import capacity_crossover

TRAIN_SIZES = (16, 64, 256)
WIDTHS = (8, 16, 32)

ANALYSIS = capacity_crossover.ANALYSIS
ANALYSIS_OPTIONS = {"data_dim": 64}  # pixels x channels; the GMM panel reads capacity_crossover.GMM_TABLES


def get_sweep():
    return capacity_crossover.sweep_axes(TRAIN_SIZES, WIDTHS)
