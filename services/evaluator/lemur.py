"""LEMUR compatibility: the ``prm`` a candidate receives and LEMUR's image transforms.

* Every name a candidate declares in ``supported_hyperparameters()`` gets a value: the
  protocol's, else :data:`DEFAULTS`, else :data:`FALLBACK` (the middle of LEMUR's [0, 1] range).
* LEMUR trains through torchvision transforms; its default, ``norm_256_flip`` (the ``nn-dataset``
  package's ``ab/nn/transform/norm_256_flip.py``), is Resize(256), CenterCrop(256),
  RandomHorizontalFlip, ToTensor, Normalize(CIFAR-10's training mean and std).
  :class:`Transform` does the same on tensors, on the device the data lives on, seeded from the
  protocol, without torchvision. The normalisation comes first here (the sandbox's tensors are
  already normalised by the training split's per-channel mean and std, which for CIFAR-10 are
  LEMUR's constants to 4 digits: (0.4914, 0.4822, 0.4465) and (0.2470, 0.2435, 0.2616), from
  nn-dataset's ``ab/nn/loader/cifar_10.py``); resizing, cropping and
  flipping are linear with weights summing to one, so the order does not change the result
  beyond the rounding PIL does to 8 bits after its resize. Test images get the resize and crop,
  not the flip (LEMUR flips them at random too; scoring here stays deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# Values for names LEMUR's networks declare that a protocol does not set (all in [0, 1]).
DEFAULTS: dict[str, float] = {
    "lr": 0.01,
    "momentum": 0.9,
    "dropout": 0.2,
    "weight_decay": 0.0,
    "beta1": 0.9,
    "beta2": 0.999,
    "norm_eps": 1e-5,
    "norm_std": 0.02,
    "pretrained": 0.0,
}
FALLBACK = 0.5
SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults, as LEMUR uses them
RATIO = (3 / 4, 4 / 3)


def declared_names(value: object) -> list[str]:
    """The names ``supported_hyperparameters()`` returned; ValueError when it is not a
    collection of identifier strings."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError("supported_hyperparameters() must return a set of names")
    names = list(value)
    if len(names) > 256 or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise ValueError("supported_hyperparameters() must return at most 256 identifier names")
    return sorted(set(names))


def resolve_prm(declared: Iterable[str], protocol_prm: dict[str, float]) -> dict[str, float]:
    """The protocol's prm plus a value for every declared name it lacks."""
    prm = dict(protocol_prm)
    for name in declared:
        if name not in prm:
            prm[name] = DEFAULTS.get(name, FALLBACK)
    return prm


@dataclass(frozen=True)
class Transform:
    """``size`` (0 = keep): torchvision's Resize(size) then CenterCrop(size), or with ``crop``
    a RandomResizedCrop(size) on training batches; ``flip``: RandomHorizontalFlip on training
    batches."""

    size: int = 0
    crop: bool = False
    flip: bool = False

    @property
    def active(self) -> bool:
        return bool(self.size or self.crop or self.flip)

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        return (self.size, self.size) if self.size else hw

    def test(self, x: torch.Tensor) -> torch.Tensor:
        return self._resize_centre_crop(x)

    def train(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        hw = self.out_hw((h, w))
        if self.crop:
            x = torch.cat([self._crop(x[i : i + 1], hw, g) for i in range(len(x))])
        else:
            x = self._resize_centre_crop(x)
        if self.flip:
            mask = (torch.rand(len(x), generator=g) < 0.5).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(mask, x.flip(-1), x)
        return x

    def _resize_centre_crop(self, x: torch.Tensor) -> torch.Tensor:
        """Resize(size): the shorter side to ``size``, the longer in proportion (truncated, as
        torchvision does); then CenterCrop(size) with torchvision's rounding."""
        if not self.size:
            return x
        h, w = x.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(self.size * long / short)
        nh, nw = (self.size, new_long) if h <= w else (new_long, self.size)
        x = self._resize(x, (nh, nw))
        top, left = round((nh - self.size) / 2.0), round((nw - self.size) / 2.0)
        return x[..., top : top + self.size, left : left + self.size]

    @staticmethod
    def _resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Bilinear, antialiased when shrinking (as PIL's resize, which torchvision uses)."""
        if tuple(x.shape[-2:]) == hw:
            return x
        return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)

    def _crop(self, x: torch.Tensor, hw: tuple[int, int], g: torch.Generator) -> torch.Tensor:
        """torchvision's RandomResizedCrop.get_params, then a bilinear resize."""
        h, w = x.shape[-2:]
        area = h * w
        for _ in range(10):
            r = torch.rand(2, generator=g).tolist()
            target = area * (SCALE[0] + r[0] * (SCALE[1] - SCALE[0]))
            log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
            aspect = math.exp(log_lo + r[1] * (log_hi - log_lo))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                return self._resize(x[..., top : top + ch, left : left + cw], hw)
        return self._resize(x, hw)  # torchvision falls back to a centre crop; whole image here
