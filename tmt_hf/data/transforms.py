"""Paired image/label transforms for segmentation training and evaluation, vectorised in torch.

Images become normalised float tensors (3, H, W) and labels long tensors (H, W); label 255 stays ignored, and padding
adds ignored label pixels. With `seed` set and a `sample_index` column, each sample's augmentation is a function of
(seed, epoch, index) alone, so a resumed run replays it exactly whatever the data loader prefetched.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..image_processing_tmt import to_rgb8

IGNORE_INDEX = 255


def to_tensors(image: Image.Image, label: Image.Image | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    pixels = torch.from_numpy(np.asarray(to_rgb8(image), dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
    if label is None:
        return pixels, None
    return pixels, torch.from_numpy(np.asarray(label).astype(np.int64))


def resize_image(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A float (3, H, W) image resized bilinearly with antialiasing (the identity at its own size)."""
    return F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An integer (H, W) label map resized by nearest neighbour (the identity at its own size)."""
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()


def resize_pair(pixels, labels, size: tuple[int, int]):
    return resize_image(pixels, size), None if labels is None else resize_labels(labels, size)


def resize_pad_map(focus: torch.Tensor, size, height: int, width: int) -> torch.Tensor:
    """A float (H, W) map resized bilinearly to `size`, then padded with 0 to at least `height` x `width`."""
    if tuple(focus.shape) != tuple(size):
        focus = F.interpolate(focus[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    return F.pad(focus, (0, max(width - focus.shape[1], 0), 0, max(height - focus.shape[0], 0)))


def pad_pair(pixels, labels, height: int, width: int):
    pad_h, pad_w = max(height - pixels.shape[1], 0), max(width - pixels.shape[2], 0)
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h))
        if labels is not None:
            labels = F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return pixels, labels


def random_global_appearance(pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """
    Random image-wide brightness, colour cast, Gaussian blur and sensor noise on a (3, H, W) image in [0, 1]. Trained
    on both domains with this, a domain discriminator cannot rely on global appearance and must find local shifts.
    """
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    pixels = pixels * (0.35 + 0.85 * rand(1)) * (0.8 + 0.4 * rand(3, 1, 1))
    sigma = 1.5 * float(rand(1))
    if sigma > 0.3:
        radius = max(1, round(2.5 * sigma))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        taps = taps / taps.sum()
        padded = F.pad(pixels[None], (radius, radius, radius, radius), mode="replicate")
        padded = F.conv2d(padded, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        pixels = F.conv2d(padded, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
    noise = 0.06 * float(rand(1))
    pixels = pixels + noise * torch.randn(pixels.shape, generator=generator)
    return pixels.clamp(0, 1)


class SegmentationTransform:
    """
    Turns a batch of `{"image": [PIL], "label": [PIL]}` into `{"pixel_values": [tensor], "labels": [tensor]}` for
    `datasets.Dataset.set_transform`. An optional `focus` column (a precomputed focus map per image, grayscale 0-255)
    comes out as `focus`, float (H, W) in [0, 1], resized, padded (with 0), cropped and flipped with the image.

    Training (`train=True`): random scale in `scale_range` of `size`, pad to `crop_size`, random crop, random
    horizontal flip, and with `appearance_jitter` a random global appearance (see `random_global_appearance`). Evaluation: resize to `size` (if given) and pad to a multiple of `size_divisor`.
    Normalisation uses `image_mean`/`image_std` (the image processor's).
    """

    def __init__(
        self,
        train: bool,
        size: tuple[int, int] | None = None,
        crop_size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        size_divisor: int = 16,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        seed: int | None = None,
        appearance_jitter: bool = False,
    ):
        if train and crop_size is None:
            raise ValueError("A training transform needs crop_size=(height, width)")
        self.train, self.size, self.crop_size = train, size, crop_size
        self.scale_range, self.flip, self.size_divisor = scale_range, flip, size_divisor
        self.mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.seed, self.epoch = seed, 0
        self.appearance_jitter = appearance_jitter

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def apply(
        self,
        image: Image.Image,
        label: Image.Image | None = None,
        generator: torch.Generator | None = None,
        focus: Image.Image | None = None,
    ):
        """One sample; `focus` (an optional precomputed map, grayscale 0-255) follows the image's geometry."""
        pixels, labels = to_tensors(image, label)
        if focus is not None:
            focus = torch.from_numpy(np.asarray(focus, dtype=np.float32) / 255)
        if self.train:
            pixels, labels, focus = self.random_scale_crop_flip(pixels, labels, generator, focus)
            if self.appearance_jitter:
                pixels = random_global_appearance(pixels, generator)
        else:
            if self.size is not None:
                pixels, labels = resize_pair(pixels, labels, self.size)
            d = self.size_divisor
            height, width = -(-pixels.shape[1] // d) * d, -(-pixels.shape[2] // d) * d
            if focus is not None:
                focus = resize_pad_map(focus, pixels.shape[1:], height, width)
            pixels, labels = pad_pair(pixels, labels, height, width)
        return (pixels - self.mean) / self.std, labels, focus

    def random_scale_crop_flip(self, pixels, labels, generator=None, focus=None):
        base_h, base_w = self.size or pixels.shape[1:]
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(1, generator=generator))
        pixels, labels = resize_pair(pixels, labels, (max(1, round(base_h * scale)), max(1, round(base_w * scale))))
        crop_h, crop_w = self.crop_size
        if focus is not None:
            focus = resize_pad_map(focus, pixels.shape[1:], crop_h, crop_w)
        pixels, labels = pad_pair(pixels, labels, crop_h, crop_w)
        top = int(torch.randint(0, pixels.shape[1] - crop_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, pixels.shape[2] - crop_w + 1, (1,), generator=generator))
        pixels = pixels[:, top : top + crop_h, left : left + crop_w]
        labels = labels[top : top + crop_h, left : left + crop_w] if labels is not None else None
        focus = focus[top : top + crop_h, left : left + crop_w] if focus is not None else None
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            pixels = pixels.flip(-1)
            labels = labels.flip(-1) if labels is not None else None
            focus = focus.flip(-1) if focus is not None else None
        return pixels, labels, focus

    def sample_generator(self, index: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + int(index))

    def __call__(self, batch: dict) -> dict:
        count = len(batch["image"])
        labels = batch.get("label") or [None] * count
        indices = batch.get("sample_index") or [None] * count
        focus = batch.get("focus") or [None] * count
        samples = [
            self.apply(image, label, self.sample_generator(index) if index is not None else None, focus_map)
            for image, label, index, focus_map in zip(batch["image"], labels, indices, focus)
        ]
        out = {"pixel_values": [p for p, _, _ in samples]}
        if batch.get("label") is not None:  # a missing label (e.g. an unlabelled target image) is all-ignored
            out["labels"] = [
                lab if lab is not None else torch.full(p.shape[1:], IGNORE_INDEX, dtype=torch.long)
                for p, lab, _ in samples
            ]
        if batch.get("focus") is not None:
            out["focus"] = [f for _, _, f in samples]
        for key in ("domain_labels", "sample_index"):
            if key in batch:
                out[key] = batch[key]
        return out


def collate(examples: list[dict]) -> dict:
    """
    Stacks `pixel_values`, `labels` and `focus` (and the integer fields `domain_labels` and `sample_index`, by which
    evaluation scores groups of rows) into batch tensors.
    """
    batch = {"pixel_values": torch.stack([e["pixel_values"] for e in examples])}
    for key in ("labels", "focus"):
        if key in examples[0]:
            batch[key] = torch.stack([e[key] for e in examples])
    for key in ("domain_labels", "sample_index"):
        if key in examples[0]:
            batch[key] = torch.tensor([e[key] for e in examples])
    return batch
