"""The crossover for networks on the 8x8 digits: U-Net width x training-set size N, one GPU.

    python launch/sweep.py --config=configs/edm_training.py:crossover_digits \
        --sweep=configs/sweeps/unet_crossover_digits.py --workdir=runs/unet_crossover_digits

30 runs: N in {16, ..., 512} class-balanced images of scikit-learn's 1,797 digits x U-Net width
channels in {8, 16, 24, 32, 64} (embed_dim = 4 x channels, zipped; 45 k to 2.7 M parameters),
each trained for EPOCHS = 2,000 passes over its N images but at least MIN_IMAGES = 256 k images
(training.total_images = max(2,000 N, 256 k) zipped with N: 256 k to 1 M images at batch 128;
the floor keeps the smallest sets from being stopped after a few hundred steps) and sampled 512
times with 18-step Heun. jaxmem.experiments.unet_crossover:analyze then finds per N the parameter count
at which the memorization rate reaches 0.5 and fits it against N (capacity_crossover.*,
memorization_vs_capacity.png, embedded in report.md). The right panel shows the GMM laboratory's
M* versus N from runs/crossover_n/results.csv (configs/sweeps/gmm_crossover_n.py) or runs/demo/
crossover.csv (`make demo`) when one exists (paths relative to the directory the sweep is
launched from), otherwise its closed-form line.

Time, an ESTIMATE (not measured on a GPU): training costs 3 x the forward FLOPs (jax cost
analysis: 1.7 M per image at 8 channels, 24 M at 32, 95 M at 64); on this repository's 2-core
CPU the 32-channel digits U-Net trains at ~635 images/s. Assuming an H100 sustains 5 TFLOP/s on
these tiny convolutions with a floor of 3 ms per step, a 1 M-image run trains in ~25 s (64
channels: ~60 s) and the 6 runs of a width train 2.6 M images in all; with ~50 s per run for
start-up, compilation and sampling the sweep takes ~30 minutes on one H100, less with
JAX_COMPILATION_CACHE_DIR set (the runs of one width share their compiled programs). Two at a time on one GPU: --parallel=2 with XLA_PYTHON_CLIENT_MEM_FRACTION=0.4.
"""

from jaxmem.experiments import unet_crossover

TRAIN_SIZES = (16, 32, 64, 128, 256, 512)
WIDTHS = (8, 16, 24, 32, 64)
EPOCHS, MIN_IMAGES = 2_000, 256_000

ANALYSIS = unet_crossover.ANALYSIS
ANALYSIS_OPTIONS = {"data_dim": 64}  # pixels x channels; the GMM panel reads unet_crossover.GMM_TABLES


def get_sweep():
    return unet_crossover.sweep_axes(TRAIN_SIZES, WIDTHS, epochs=EPOCHS, min_images=MIN_IMAGES)
