r"""Score any .npz of samples against any image source: FID, KID, precision/recall
(jaxmem.experiments.sample_quality). Needs the FID Inception weights once:
python launch/convert_inception.py.

    python launch/sample_quality.py --config=configs/sample_quality.py --config.samples.path=runs/edm/samples.npz \
        --config.data.dataset=digits --workdir=runs/quality
"""

from jaxmem.cli import run_main
from jaxmem.experiments import sample_quality

if __name__ == "__main__":
    run_main(sample_quality.run, default_workdir="runs/quality", validate=sample_quality.validate_config)
