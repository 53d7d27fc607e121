"""Import a network of NVlabs's EDM release (DDPM++: edm-cifar10-32x32-uncond-vp / -cond-vp) as a
jaxmem model (jaxmem.denoisers.edm_import).

    python launch/import_edm.py --source=edm-cifar10-32x32-uncond-vp.npz --workdir=runs/edm50k_nvlabs

--source is the .npz of the pickle's `ema` network's state_dict (never the pickle itself; the
three-line export to run in NVlabs's environment is in the README and in the error a pickle
gets). The network's config is inferred from the arrays, or taken from --model (a configs/edm_training.py
preset: its model group; a tensor whose shape differs is named). Every tensor must map onto one
parameter and every parameter be filled, or nothing is written. The workdir then serves every
experiment that takes a trained model, e.g.

    python launch/denoiser_swaps.py --config=configs/denoiser_swaps.py:cifar10 --config.workdirs.generalizing=runs/edm50k_nvlabs

Rerunning the same import on its workdir does nothing; another import into it is refused.
"""

import os
import time

from absl import flags, logging

from jaxmem import cli, io, lock
from jaxmem import workdir as ownership
from jaxmem.config import load_config
from jaxmem.validation import require
from jaxmem.denoisers import edm_import, unet

_SOURCE = flags.DEFINE_string("source", None, ".npz of an EDM network's state_dict (NVlabs's parameter names).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/import_edm", "Folder that receives the imported model.")
_MODEL = flags.DEFINE_string("model", None, "configs/edm_training.py:<preset> whose model group is the network's config "
                             "(default: inferred from the arrays).")
_IMAGES_SEEN = flags.DEFINE_integer("images_seen", 0, "Images the network saw in training, for the tables "
                                    "(EDM's CIFAR-10 models: 200000000); 0 = unknown.")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    cli.quiet_libraries()
    workdir = os.path.abspath(_WORKDIR.value)
    start = time.perf_counter()
    with cli.user_errors(FileNotFoundError):  # a missing --model config file
        require(_SOURCE.value is not None, "--source", None, "the .npz file of the network's arrays")
        require(_IMAGES_SEEN.value >= 0, "--images_seen", _IMAGES_SEEN.value, "an integer >= 0 (0 = unknown)")
        arrays = edm_import.read_arrays(_SOURCE.value)
        model = load_config(_MODEL.value).model if _MODEL.value else edm_import.infer_model(arrays)
        unet.validate_model_config(model)
        params = edm_import.to_jaxmem(arrays, model)
        ownership.check(workdir, edm_import.IMPORT_OWNER)
    sha256 = edm_import.file_sha256(_SOURCE.value)
    with (cli.user_errors(io.WriteError, code=cli.WRITE_ERROR_EXIT_CODE), cli.user_errors(lock.WorkdirBusy),
          lock.held(workdir)):
        ownership.claim(workdir, edm_import.IMPORT_OWNER)
        written = edm_import.write_workdir(workdir, model, params, _SOURCE.value, sha256, _IMAGES_SEEN.value)
    logging.info("model: %s", dict(model))
    print(f"{'imported' if written else 'already imported'} {_SOURCE.value} (sha256 {sha256[:12]}..., "
          f"{unet.count_params(params):,} parameters) into {workdir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    cli.run_app(main)
