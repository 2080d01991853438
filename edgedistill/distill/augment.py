"""Training augmentations on a batch (N, C, H, W), drawn from the training loop's generator so a seed gives the
same views. In distillation the teacher runs online on the very batch the student sees (the cache is bypassed),
so teacher and student are always shown the same augmented images."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from edgedistill.distill.trainer import Augment


def shift(max_shift: int) -> Augment:
    """Random translation of each image by up to `max_shift` pixels, zero-filled."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = F.pad(x, (max_shift,) * 4)
        offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
        return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])

    return augment


def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mirrored = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(mirrored[:, None, None, None], x.flip(-1), x)


def turn(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image turned by 0, 90, 180 or 270 degrees and mirrored top-bottom with probability 1/2: the eight
    symmetries of a square, for images that have no up (solar cells, microscopy, aerial views). Square only."""
    quarter = torch.randint(0, 4, (len(x),), generator=generator)
    mirrored = torch.rand(len(x), generator=generator) < 0.5
    out = torch.where(mirrored[:, None, None, None], x.flip(-2), x)
    return torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(out, quarter.tolist())])


def resized_crop(min_area: float, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Augment:
    """Random resized crop (Szegedy et al. 2015, as torchvision's RandomResizedCrop): a box of `min_area`..1 of
    the image's area and aspect ratio in `ratio` (log-uniform), resized back to the image's size, bilinear."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        area = min_area + (1 - min_area) * torch.rand(n, generator=generator)
        log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=generator)
        aspect = torch.exp(log_ratio)
        crop_w = (torch.sqrt(area * aspect) * w).round().clamp(1, w).long()
        crop_h = (torch.sqrt(area / aspect) * h).round().clamp(1, h).long()
        u, v = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
        out = torch.empty_like(x)
        for i in range(n):
            top = int(v[i] * (h - crop_h[i] + 1))
            left = int(u[i] * (w - crop_w[i] + 1))
            box = x[i:i + 1, :, top:top + crop_h[i], left:left + crop_w[i]]
            out[i] = F.interpolate(box, size=(h, w), mode="bilinear", align_corners=False)[0]
        return out

    return augment


def mixup(alpha: float) -> Augment:
    """Mixup (Zhang et al. 2018, arXiv:1710.09412): each image blended with another of the batch, weight
    lambda ~ Beta(alpha, alpha) for the batch. Beta draws come from numpy, seeded from the loop's generator."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
        partner = torch.randperm(len(x), generator=generator)
        return lam * x + (1 - lam) * x[partner]

    return augment


class ViewBank:
    """K seeded augmented views of every training image (distill.teacher_views), so the teacher's outputs on
    them are computed once and cached, and a long schedule costs the student's time, not the teacher's. View k of
    image i is drawn from its own generator, seeded by (seed, i, k): the same pixels whenever it is made, in any
    batch. Each training step picks one view per image from the loop's generator; the student sees exactly the
    view whose teacher outputs were cached (Beyer et al. 2022's consistent teaching, within K views). Per-image
    steps only: mixup mixes images of a batch and has no per-image view."""

    def __init__(self, augment: Augment, views: int, seed: int, count: int):
        self.augment, self.views, self.seed, self.count = augment, views, seed, count

    def render(self, x: torch.Tensor, idx: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """View `view[j]` of image `idx[j]`, for each row x[j]."""
        out = torch.empty_like(x)
        for j, (i, k) in enumerate(zip(idx.tolist(), view.tolist())):
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + i) * 64 + k)
            out[j] = self.augment(x[j:j + 1], generator)[0]
        return out

    def views_of(self, x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator):
        """One view per image, drawn from the training loop's generator: (the views, their rows in the bank)."""
        view = torch.randint(0, self.views, (len(idx),), generator=generator)
        return self.render(x, idx, view), view * self.count + idx


def build(cfg, mix: float = 0.0) -> Augment | None:
    """The augmentation a pipeline's `augment` section (or the consistent term) asks for: crop, flip, shift,
    then mixup when `mix` > 0; None when it asks for nothing."""
    if cfg is None:
        return None
    steps = []
    if cfg.crop_area < 1:
        steps.append(resized_crop(cfg.crop_area))
    if cfg.flip:
        steps.append(flip)
    if cfg.turn:
        steps.append(turn)
    if cfg.shift:
        steps.append(shift(cfg.shift))
    if mix > 0:
        steps.append(mixup(mix))
    if not steps:
        return None

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, generator)
        return x

    return augment
