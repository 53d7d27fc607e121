"""The crossover for networks on CIFAR-10, cluster scale: U-Net width x training-set size N.

    python launch/sweep.py --config=configs/edm_training.py:crossover_cifar10 \
        --sweep=configs/sweeps/unet_crossover_cifar10.py --workdir=/shared/sweeps/unet_crossover_cifar10
    # or one run per SLURM array task, then aggregate:
    sbatch --nodes=1 --array=0-19 launch/slurm.sbatch --config=configs/edm_training.py:crossover_cifar10 \
        --sweep=configs/sweeps/unet_crossover_cifar10.py --workdir=/shared/sweeps/unet_crossover_cifar10
    python launch/sweep.py --workdir=/shared/sweeps/unet_crossover_cifar10 --aggregate_only

20 runs: N in {500, 1000, 2000, 5000, 10000} class-balanced CIFAR-10 images x channels in
{32, 64, 96, 128} (embed_dim = 4 x channels; 2.2 M to 35 M parameters), the EDM-1K recipe of
"Two Calm Ends and the Wild Middle" (40 M images, DDPM++ with 2 blocks per level), 1,000 Heun
samples each; the same analysis and report as configs/sweeps/unet_crossover_digits.py.

Cost, an ESTIMATE: forward FLOPs per image 1.6 / 6.1 / 13.6 / 24.1 G for 32 / 64 / 96 / 128
channels, training 3 x that over 40 M images: ~5.4 EFLOP per N, ~27 EFLOP in all, about 75
H100-hours at a sustained 100 TFLOP/s.
"""

from jaxmem.experiments import unet_crossover

TRAIN_SIZES = (500, 1000, 2000, 5000, 10000)
WIDTHS = (32, 64, 96, 128)

ANALYSIS = unet_crossover.ANALYSIS
ANALYSIS_OPTIONS = {"data_dim": 3072}  # pixels x channels; the GMM panel reads unet_crossover.GMM_TABLES


def get_sweep():
    # fixed images (the EDM-1K budget), not fixed epochs: 40,000 epochs at N = 10,000 would be 400 M images
    return unet_crossover.sweep_axes(TRAIN_SIZES, WIDTHS)
