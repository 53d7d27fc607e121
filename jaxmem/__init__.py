"""jaxmem: memorization in diffusion models, measured at accelerator scale."""

__version__ = "0.1.0"
