"""PNG figures of ACTE's output: adaptive regions next to equal-sized patches (the paper's Fig. 1d), the
transferability map over the image (its Fig. 4), the focus map, and colourised segmentations."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data.label_spaces import CITYSCAPES_PALETTE, LABEL_SPACES, label_space_of
from .modeling_acte import ACTEModel


def palette_of(id2label: dict | None = None) -> np.ndarray:
    """
    The colours of a model's classes: its registered label space's palette (`label_spaces`), Cityscapes' by default,
    and for classes of no registered space a fixed colour per class id.
    """
    space = LABEL_SPACES["cityscapes"] if id2label is None else label_space_of(id2label)
    if space is not None:
        return np.array(space.palette, dtype=np.uint8)
    return np.random.default_rng(0).integers(0, 256, (len(id2label), 3)).astype(np.uint8)


def colorize(segmentation, palette=CITYSCAPES_PALETTE) -> Image.Image:
    """Class-id map (H, W) -> RGB image in `palette` (default: Cityscapes'; see `palette_of`); 255 (ignored) is black."""
    ids = np.asarray(segmentation).astype(np.int64)
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return Image.fromarray(colours[np.clip(ids, 0, 255)])


def region_boundaries(regions) -> np.ndarray:
    """Boolean (H, W) mask of pixels whose right or lower neighbour lies in another region."""
    regions = np.asarray(regions)
    edges = np.zeros(regions.shape, dtype=bool)
    edges[:, :-1] |= regions[:, 1:] != regions[:, :-1]
    edges[:-1, :] |= regions[1:, :] != regions[:-1, :]
    return edges


def heat_overlay(image: Image.Image, heat, alpha: float = 0.55, colormap: str = "inferno") -> Image.Image:
    """Blends a [0, 1] map (any resolution) over the image with a matplotlib colormap."""
    from matplotlib import colormaps

    heat = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    heat = F.interpolate(heat, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0].numpy()
    colours = colormaps[colormap](np.clip(heat, 0, 1))[..., :3]
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) / 255 + alpha * colours
    return Image.fromarray((blended * 255).astype(np.uint8))


def draw_boundaries(image: Image.Image, regions, colour=(255, 255, 0)) -> Image.Image:
    """Region boundaries (regions at any resolution, upsampled by nearest) drawn over the image."""
    regions = torch.as_tensor(np.asarray(regions), dtype=torch.float32)[None, None]
    regions = F.interpolate(regions, size=(image.height, image.width), mode="nearest")[0, 0].numpy()
    pixels = np.asarray(image.convert("RGB")).copy()
    pixels[region_boundaries(regions)] = colour
    return Image.fromarray(pixels)


@torch.no_grad()
def acte_maps(acte: ACTEModel, pixel_values: torch.Tensor) -> dict:
    """ACTE's hard regions, an equal-sized grid of the same region count, transferability and focus maps of one image."""
    out = acte(pixel_values=pixel_values[:1])
    cell = acte.config.cell_size
    height, width = out.transferability.shape[-2:]
    grid = (np.arange(height)[:, None] // cell) * (width // cell) + np.arange(width)[None, :] // cell
    return {
        "regions": ACTEModel.hard_regions(out.region_assignments, cell)[0].cpu().numpy(),
        "grid": grid,
        "transferability": out.transferability[0].cpu().numpy(),
        "focus_map": out.focus_map[0].cpu().numpy(),
    }


def save_acte_figure(image: Image.Image, maps: dict, path: str, segmentation=None, palette=CITYSCAPES_PALETTE) -> str:
    """One PNG: equal-sized patches | ACTE adaptive regions | transferability | focus map (| segmentation in `palette`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("equal-sized patches", draw_boundaries(image, maps["grid"])),
        ("ACTE adaptive regions", draw_boundaries(image, maps["regions"])),
        ("transferability (bright = transfers well)", heat_overlay(image, maps["transferability"], colormap="viridis")),
        ("focus map m (TMA attends here)", heat_overlay(image, maps["focus_map"])),
    ]
    if segmentation is not None:
        panels.append(("segmentation", colorize(segmentation, palette)))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2 * image.height / image.width + 0.6))
    for axis, (title, panel) in zip(np.atleast_1d(axes), panels):
        axis.imshow(panel)
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = [
    "CITYSCAPES_PALETTE",
    "acte_maps",
    "colorize",
    "draw_boundaries",
    "heat_overlay",
    "palette_of",
    "save_acte_figure",
]
