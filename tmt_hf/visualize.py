"""PNG figures of ACTE's output: adaptive regions next to equal-sized patches (the paper's Fig. 1d), the
transferability map over the image (its Fig. 4), the focus map, and colourised segmentations."""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .modeling_acte import ACTEModel

# The Cityscapes colour palette of the 19 train ids; 255 (ignored) is black.
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)  # fmt: skip


def colorize(segmentation) -> Image.Image:
    """Train-id map (H, W) -> RGB image in the Cityscapes palette."""
    ids = np.asarray(segmentation).astype(np.int64)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    return Image.fromarray(palette[np.clip(ids, 0, 255)])


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


def save_acte_figure(image: Image.Image, maps: dict, path: str, segmentation=None) -> str:
    """One PNG: equal-sized patches | ACTE adaptive regions | transferability | focus map (| segmentation)."""
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
        panels.append(("segmentation", colorize(segmentation)))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2 * image.height / image.width + 0.6))
    for axis, (title, panel) in zip(np.atleast_1d(axes), panels):
        axis.imshow(panel)
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["CITYSCAPES_PALETTE", "acte_maps", "colorize", "draw_boundaries", "heat_overlay", "save_acte_figure"]
