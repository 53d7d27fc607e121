"""The figures users look at; one module per experiment family, saved via jaxmem.io.save_figure."""

import matplotlib

matplotlib.use("Agg")
