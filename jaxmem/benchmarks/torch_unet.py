"""The bench's PyTorch baseline: jaxmem's DDPM++ U-Net (jaxmem.denoisers.unet.SongUNet) and EDM
training step written again in PyTorch, NCHW, written here from the same architecture
description (the module docstring of unet.py), so that `launch/bench.py --only=edm` times the same
network and the same step under both frameworks in one run.

Identical function, not just identical shapes: modules carry the flax names (`enc_32x32_conv`,
`dec_16x16_block2`, `conv0`, `norm1`, `attn`, ...), `load_flax_params` ports a flax parameter tree
weight for weight (HWIO -> OIHW, [in, out] -> [out, in]), and tests/test_unet_speed_parts.py checks
the two forwards agree. Unconditional networks only (label_dim = 0), which is what the bench times.

The step: EDM loss (ln s ~ N(-1.2, 1.2^2), lambda(s) = 1 / c_out(s)^2, summed over pixels,
averaged over the batch), backward, a finiteness check of the loss, Adam and an EMA update
(torch._foreach_lerp_) -- the work of jaxmem.train.loop's step. torch is an optional dependency
(the `bench` and `test` extras); this module imports it at load time.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxmem.denoisers.edm import P_MEAN, P_STD, SIGMA_DATA
from jaxmem.denoisers.unet import SKIP_SCALE, norm_groups


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels, eps=1e-6)


def resize(x: torch.Tensor, resample: str) -> torch.Tensor:
    """'none', 'down' (2x2 average pooling) or 'up' (nearest x2) on NCHW."""
    if resample == "down":
        return F.avg_pool2d(x, 2)
    if resample == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class SelfAttention(nn.Module):
    """unet.SelfAttention on NCHW: qkv channels laid out (head, channel, q/k/v)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, self.heads, c // self.heads, 3, h * w)
        q, k, v = qkv.unbind(3)  # [B, heads, c/heads, HW]
        logits = torch.einsum("bhcq,bhck->bhqk", q, k) / math.sqrt(c // self.heads)
        attended = torch.einsum("bhqk,bhck->bhcq", logits.softmax(dim=-1), v).reshape(b, c, h, w)
        return (self.proj(attended) + x) * SKIP_SCALE


class ResidualBlock(nn.Module):
    """unet.ResidualBlock on NCHW; x [B, Cin, H, W], emb [B, E]."""

    def __init__(self, in_channels: int, width: int, embed_dim: int, resample: str, attention: bool,
                 dropout: float, heads: int):
        super().__init__()
        self.resample = resample
        self.norm0, self.conv0 = group_norm(in_channels), nn.Conv2d(in_channels, width, 3, padding=1)
        self.affine = nn.Linear(embed_dim, width)
        self.norm1, self.conv1 = group_norm(width), nn.Conv2d(width, width, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_channels, width, 1) if in_channels != width or resample != "none" else None
        self.attn = SelfAttention(width, heads) if attention else None

    def forward(self, x, emb):
        h = self.conv0(resize(F.silu(self.norm0(x)), self.resample))
        h = h + self.affine(emb)[:, :, None, None]
        h = self.conv1(self.dropout(F.silu(self.norm1(h))))
        skip = resize(x, self.resample)
        if self.skip is not None:
            skip = self.skip(skip)
        out = (h + skip) * SKIP_SCALE
        return self.attn(out) if self.attn is not None else out


class SongUNet(nn.Module):
    """unet.SongUNet (label_dim 0) on NCHW: forward(x [B, C, H, W], c_noise [B]) -> [B, C, H, W]."""

    def __init__(self, image_size: int, in_channels: int, channels: int, channel_mult, num_blocks: int,
                 attn_resolutions, attn_heads: int, dropout: float, noise_features: int, embed_dim: int):
        super().__init__()
        self.noise_features = noise_features
        self.map_layer0 = nn.Linear(noise_features, embed_dim)
        self.map_layer1 = nn.Linear(embed_dim, embed_dim)
        block = lambda cin, cout, **kw: ResidualBlock(cin, cout, embed_dim, dropout=dropout, heads=attn_heads,  # noqa: E731
                                                      **{"resample": "none", "attention": False, **kw})
        self.blocks = nn.ModuleDict()
        self.blocks[f"enc_{image_size}x{image_size}_conv"] = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths, width = [channels], channels
        for level, mult in enumerate(channel_mult):
            res = image_size >> level
            if level > 0:
                self.blocks[f"enc_{res}x{res}_down"] = block(width, width, resample="down")
                widths.append(width)
            for index in range(num_blocks):
                self.blocks[f"enc_{res}x{res}_block{index}"] = block(
                    width, channels * mult, attention=res in attn_resolutions)
                width = channels * mult
                widths.append(width)
        for level in reversed(range(len(channel_mult))):
            res = image_size >> level
            if level == len(channel_mult) - 1:
                self.blocks[f"dec_{res}x{res}_in0"] = block(width, width, attention=True)
                self.blocks[f"dec_{res}x{res}_in1"] = block(width, width)
            else:
                self.blocks[f"dec_{res}x{res}_up"] = block(width, width, resample="up")
            for index in range(num_blocks + 1):
                last = index == num_blocks
                self.blocks[f"dec_{res}x{res}_block{index}"] = block(
                    width + widths.pop(), channels * channel_mult[level], attention=last and res in attn_resolutions)
                width = channels * channel_mult[level]
        self.out_norm = group_norm(width)
        self.out_conv = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x, c_noise):
        half = self.noise_features // 2
        freqs = (1e-4) ** (torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        angles = c_noise[:, None] * freqs[None, :]
        emb = torch.cat([angles.sin(), angles.cos()], dim=1)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for name, module in self.blocks.items():
            if name.startswith("enc"):
                x = module(x) if name.endswith("_conv") else module(x, emb)
                skips.append(x)
            else:
                if "_block" in name:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def network_from_config(model) -> SongUNet:
    """The torch twin of unet.network_from_config(model) (model.label_dim must be 0)."""
    if model.label_dim:
        raise ValueError(f"model.label_dim = {model.label_dim}: the torch baseline is unconditional (0)")
    return SongUNet(model.image_size, model.in_channels, model.channels, tuple(model.channel_mult),
                    model.num_blocks, tuple(model.attn_resolutions), model.attn_heads, model.dropout,
                    model.noise_features, model.embed_dim)


def load_flax_params(network: SongUNet, flat_params: dict) -> None:
    """Copies a flax SongUNet's parameters ({'a/b/kernel': array}, flax.traverse_util.flatten_dict
    with sep='/') into `network`; every torch parameter must be matched."""
    state = {}
    for key, value in flat_params.items():
        *path, leaf = key.split("/")
        value = np.asarray(value)
        if leaf == "kernel":
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        prefix = "" if path[0] in ("map_layer0", "map_layer1", "out_norm", "out_conv") else "blocks."
        state[prefix + ".".join(path) + "." + {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)] = \
            torch.from_numpy(np.array(value, dtype=np.float32))
    missing = set(network.state_dict()) - set(state)
    if missing:
        raise ValueError(f"flax parameters do not cover the torch network: missing {sorted(missing)[:5]}")
    network.load_state_dict(state)


def make_train_step(network: SongUNet, optim, ema_decay: float = 0.999):
    """step(images [B, C, H, W]) -> loss: one EDM training step (loss, backward, Adam with the
    config.optim group's peak_lr, adam_b1, adam_b2, adam_eps; EMA)."""
    optimizer = torch.optim.Adam(network.parameters(), lr=optim.peak_lr, betas=(optim.adam_b1, optim.adam_b2),
                                 eps=optim.adam_eps)
    params = list(network.parameters())
    ema = [p.detach().clone() for p in params]

    def step(images):
        sigma = torch.exp(P_MEAN + P_STD * torch.randn(images.shape[0]))
        s = sigma[:, None, None, None]
        noisy = images + s * torch.randn_like(images)
        scale = torch.sqrt(s**2 + SIGMA_DATA**2)
        raw = network(noisy / scale, torch.log(sigma) / 4)
        denoised = SIGMA_DATA**2 / scale**2 * noisy + s * SIGMA_DATA / scale * raw
        weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
        loss = (weight * (denoised - images).square().sum(dim=(1, 2, 3))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if torch.isfinite(loss):
            optimizer.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - ema_decay)
        return loss.detach()

    return step
