"""Inference helpers shared by the CLI, the Gradio app and the evaluation scripts."""

import torch
import torch.nn.functional as F
from PIL import Image

EVAL_MODES = ("whole", "slide")


def segment_image(processor, model, image: Image.Image):
    """Runs a segmenter on one PIL image; returns (train-id map at the image size, the model outputs)."""
    inputs = processor(image.convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    segmentation = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
    return segmentation.numpy(), outputs


def pad_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pads (…, H, W) at the bottom and right to multiples of `multiple`."""
    height, width = pixels.shape[-2:]
    return F.pad(pixels, (0, (-width) % multiple, 0, (-height) % multiple))


def check_eval_mode(
    mode: str, crop_size: tuple[int, int] | None = None, stride: tuple[int, int] | None = None
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """
    Checks the arguments of [`segment_logits`] and returns `(crop_size, stride)` as pairs of ints; `stride` defaults to
    `crop_size` (windows that touch without overlapping).
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    if mode == "whole":
        if crop_size is not None or stride is not None:
            raise ValueError("crop_size and stride are for mode='slide'; mode='whole' runs on the whole image")
        return None, None
    if crop_size is None:
        raise ValueError("mode='slide' needs crop_size=(height, width), the window size")
    pairs = {}
    for name, value in (("crop_size", crop_size), ("stride", crop_size if stride is None else stride)):
        is_pair = isinstance(value, (tuple, list)) and len(value) == 2
        if not is_pair or not all(isinstance(side, int) and not isinstance(side, bool) for side in value):
            raise ValueError(f"{name} must be two integers (height, width), got {value!r}")
        if min(value) < 1:
            raise ValueError(f"{name} must be positive, got {tuple(value)}")
        pairs[name] = tuple(value)
    crop_size, stride = pairs["crop_size"], pairs["stride"]
    if stride[0] > crop_size[0] or stride[1] > crop_size[1]:
        raise ValueError(f"stride {stride} exceeds crop_size {crop_size}: the windows would leave gaps")
    return crop_size, stride


def sliding_windows(
    size: tuple[int, int], crop_size: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """
    The windows `(top, left, bottom, right)` of `crop_size` every `stride` that cover an image of `size`, the last row
    and column aligned to the bottom and right borders (mmsegmentation's `slide_inference`). Windows are clipped to
    images smaller than `crop_size`.
    """
    (height, width), (crop_h, crop_w), (stride_h, stride_w) = size, crop_size, stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    columns = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for row in range(rows):
        for column in range(columns):
            bottom, right = min(row * stride_h + crop_h, height), min(column * stride_w + crop_w, width)
            windows.append((max(bottom - crop_h, 0), max(right - crop_w, 0), bottom, right))
    return windows


def logits_at_size(model, pixel_values: torch.Tensor, transferability_map: torch.Tensor | None) -> torch.Tensor:
    """A segmenter's fp32 logits, upsampled bilinearly to the input size if it returns them smaller (e.g. SegFormer)."""
    maps = {} if transferability_map is None else {"transferability_map": transferability_map}
    logits = model(pixel_values=pixel_values, **maps).logits.float()
    if logits.shape[-2:] != pixel_values.shape[-2:]:
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def segment_logits(
    model,
    pixel_values: torch.Tensor,
    mode: str = "whole",
    crop_size: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    transferability_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Class logits (batch_size, num_labels, height, width), fp32, at the size of `pixel_values`, without gradients.

    - `mode="whole"`: one forward pass over the whole image at its own size. [`TMTForSemanticSegmentation`] pads it to
      its size multiple, resamples the position grid to it and crops the logits back.
    - `mode="slide"`: the logits of windows of `crop_size` every `stride` (default: `crop_size`), the last ones
      aligned to the image's borders, summed and divided by the number of windows that cover each pixel, as
      mmsegmentation's `slide_inference`. A model with an ACTE computes its map in each window.

    `transferability_map` (batch_size, h, w), optional, is resized (bilinearly) to the image and, when sliding, cropped
    with each window. `model` is any segmenter called as `model(pixel_values=...)` whose output has `logits`.
    """
    crop_size, stride = check_eval_mode(mode, crop_size, stride)
    height, width = pixel_values.shape[-2:]
    if transferability_map is not None:
        if transferability_map.ndim == 4 and transferability_map.shape[1] == 1:
            transferability_map = transferability_map[:, 0]
        if transferability_map.ndim != 3:
            shape = tuple(transferability_map.shape)
            raise ValueError(f"transferability_map must have shape (batch_size, height, width), got {shape}")
        if transferability_map.shape[-2:] != (height, width):
            transferability_map = F.interpolate(
                transferability_map[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
            )[:, 0]
    if mode == "whole":
        return logits_at_size(model, pixel_values, transferability_map)

    summed, counts = None, pixel_values.new_zeros(1, 1, height, width, dtype=torch.float32)
    for top, left, bottom, right in sliding_windows((height, width), crop_size, stride):
        window_map = None if transferability_map is None else transferability_map[:, top:bottom, left:right]
        logits = logits_at_size(model, pixel_values[..., top:bottom, left:right], window_map)
        if summed is None:
            summed = logits.new_zeros(*logits.shape[:2], height, width)
        summed[..., top:bottom, left:right] += logits
        counts[..., top:bottom, left:right] += 1
    return summed / counts
