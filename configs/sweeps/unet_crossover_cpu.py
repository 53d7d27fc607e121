"""The crossover for networks at CPU scale: 9 small digits U-Nets, about 25 minutes on 2 cores.

    python launch/sweep.py --config=configs/edm_training.py:crossover_digits \
        --sweep=configs/sweeps/unet_crossover_cpu.py --config.sampling.num_samples=256 \
        --config.eval.quality=False --workdir=runs/unet_crossover_cpu

N in {16, 64, 256} digits x channels in {8, 16, 32} (embed_dim = 4 x channels), EPOCHS = 1,500
passes over the N images per run (24 k, 96 k, 384 k images): a coarse, laptop-sized look at the
same question as unet_crossover_digits.py (2,000 epochs, N up to 512, on a GPU), with the same
analysis and report. Without a floor on the images (the GPU sweeps' MIN_IMAGES) the N = 16 runs
stop after 188 optimizer steps; measured here (2-core CPU, 21 min): N = 16 never reaches a 0.5
memorization rate (0.33 at 686 k parameters), the onset is at 157 k parameters for N = 64 and
316 k for N = 256. Sample quality is off here (on a CPU the FID Inception would add ~15 min:
~50 s per run's samples and 1,000 held-out reference images per N); the GPU sweeps keep it on.
"""

from jaxmem.experiments import unet_crossover

TRAIN_SIZES = (16, 64, 256)
WIDTHS = (8, 16, 32)
EPOCHS = 1_500

ANALYSIS = unet_crossover.ANALYSIS
ANALYSIS_OPTIONS = {"data_dim": 64}  # pixels x channels; the GMM panel reads unet_crossover.GMM_TABLES


def get_sweep():
    return unet_crossover.sweep_axes(TRAIN_SIZES, WIDTHS, epochs=EPOCHS)
