"""The experiments: one module or package per published result, each a protocol over the library.

  gmm_crossover    "On the Edge of Memorization" (paper B): M* versus N in the GMM laboratory
                   (configs/crossover.py, launch/crossover.py)
  noise_regimes    "Two Calm Ends and the Wild Middle" (paper A): concentration, coverage, MSE,
                   the small / medium / large regimes (configs/geometry.py, launch/geometry.py)
  edm_training     an EDM U-Net trained, sampled and tested for memorization (configs/edm.py,
                   launch/edm.py)
  denoiser_swaps   papers A and C: swap table, per-level rates, mitigation, trajectories
                   (configs/swap.py, launch/swap.py)
  unet_crossover   paper B's open question for U-Nets: capacity* versus N over a sweep
                   (configs/sweeps/unet_crossover_*.py, the sweep's ANALYSIS)

Each exposes validate_config(config) and run(config, workdir) -> summary; the launchers only
parse flags and call them (jaxmem.cli.run_main).
"""
