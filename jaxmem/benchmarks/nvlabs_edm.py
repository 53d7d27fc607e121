"""The bench's reference peer: NVlabs's own EDM code, from a checkout the user points at.

`launch/bench.py --only=edm --edm_reference=PATH` (PATH: a checkout of github.com/NVlabs/edm,
fetched by the user for their own runs; nothing of it is copied into jaxmem) times the
reference network and step beside jaxmem's on the same weights and images:

  network  training.networks.EDMPrecond around SongUNet (the DDPM++ U-Net), built with
           `constructor_kwargs` of jaxmem's model config and loaded with jaxmem's initial weights
           through jaxmem.denoisers.edm_import.to_nvlabs (so both sides compute the same function)
  step     training.loss.EDMLoss on the batch, the loss summed and divided by the batch size,
           backward, non-finite gradients zeroed, torch.optim.Adam with the config's optim group,
           and the EMA update of the parameters: the work of one iteration of NVlabs's training
           loop (training/training_loop.py) on one process, without its data loading and stats
  forward  EDMPrecond(x, sigma) in eval mode without gradients

The checkout needs only torch and numpy besides itself (its dnnlib and torch_utils packages).
"""

from __future__ import annotations

import copy
import importlib
import os
import sys

import ml_collections
import numpy as np

from jaxmem.validation import ConfigError
from jaxmem.denoisers import edm_import

REQUIRED_FILES = ("training/networks.py", "training/loss.py", "torch_utils/persistence.py", "dnnlib/__init__.py")


def constructor_kwargs(model: ml_collections.ConfigDict) -> dict:
    """EDMPrecond's constructor arguments for jaxmem's model config group (the DDPM++ U-Net)."""
    return dict(img_resolution=int(model.image_size), img_channels=int(model.in_channels),
                label_dim=int(model.label_dim), use_fp16=False, sigma_data=float(model.sigma_data),
                model_type="SongUNet", model_channels=int(model.channels), channel_mult=list(model.channel_mult),
                channel_mult_emb=int(model.embed_dim) // int(model.channels),
                channel_mult_noise=int(model.noise_features) // int(model.channels),
                num_blocks=int(model.num_blocks), attn_resolutions=list(model.attn_resolutions),
                dropout=float(model.dropout), augment_dim=int(model.get("augment_dim", 0)),
                embedding_type="positional", encoder_type="standard", decoder_type="standard",
                resample_filter=[1, 1])


def load_reference(checkout: str):
    """(training.networks, training.loss) imported from an NVlabs/edm checkout; ConfigError naming
    --edm_reference when the folder is not one."""
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(checkout, f))]
    if missing:
        raise ConfigError(f"--edm_reference = {checkout!r} is not a checkout of NVlabs/edm (missing "
                          f"{', '.join(missing)}); allowed: the root of a clone of github.com/NVlabs/edm")
    root = os.path.abspath(checkout)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("training.networks"), importlib.import_module("training.loss")


def build(checkout: str, config: ml_collections.ConfigDict, params, images: np.ndarray, steps_per_call: int,
          ema_beta: float = 0.999) -> dict:
    """{step, forward, version, threads}: zero-argument callables running `steps_per_call` reference
    training steps and one forward pass on `images` [B, H, W, C] (NHWC, as jaxmem's bench makes
    them), with jaxmem's parameter tree `params` loaded into the reference network."""
    import torch
    from torch.profiler import record_function

    networks, loss_module = load_reference(checkout)
    net = networks.EDMPrecond(**constructor_kwargs(config.model))
    state = {name: torch.from_numpy(np.array(value, np.float32, copy=True))
             for name, value in edm_import.to_nvlabs(params, config.model).items()}
    net.load_state_dict(state, strict=True)
    net.train().requires_grad_(True)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    loss_fn = loss_module.EDMLoss()
    optim = config.optim
    optimizer = torch.optim.Adam(net.parameters(), lr=optim.peak_lr, betas=(optim.adam_b1, optim.adam_b2),
                                 eps=optim.adam_eps)
    inputs = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    sigma = torch.ones(len(inputs))

    def run_steps():
        for _ in range(steps_per_call):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net=net, images=inputs)
            loss.sum().mul(1.0 / len(inputs)).backward()
            with record_function("jaxmem.grad_checks"):  # names for jaxmem.benchmarks.profile
                for p in net.parameters():
                    if p.grad is not None:
                        torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
            optimizer.step()
            with torch.no_grad(), record_function("jaxmem.ema"):
                for p_ema, p in zip(ema.parameters(), net.parameters()):
                    p_ema.copy_(p.detach().lerp(p_ema, ema_beta))
        return loss.detach()

    def forward():
        net.eval()
        with torch.no_grad():
            out = net(inputs, sigma)
        net.train()
        return out

    return {"step": run_steps, "forward": forward, "version": torch.__version__, "threads": torch.get_num_threads()}
