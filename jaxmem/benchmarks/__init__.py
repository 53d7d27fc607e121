"""Benchmark entries for launch/bench.py.

Each module here other than SUPPORT_MODULES is an entry: it defines `NAME: str` (the module's
name) and `run(size: str) -> list[dict]`, size one of SIZES (edm also takes edm_reference); every row names the method, its
median time and its ratio to the baseline timed in the same run.
"""

import os

SIZES = ("quick", "cpu", "full")  # tests / a CPU host (`make bench`) / an accelerator (gpu_check)
SUPPORT_MODULES = ("gpu_report", "harness", "nvlabs_edm", "profile", "stages", "torch_unet")


def entry_names() -> list[str]:
    """The entries' names, from the module files (nothing is imported: the GPU check lists them
    before the project's dependencies are installed)."""
    folder = os.path.dirname(__file__)
    return sorted(name[:-3] for name in os.listdir(folder)
                  if name.endswith(".py") and not name.startswith("_") and name[:-3] not in SUPPORT_MODULES)
