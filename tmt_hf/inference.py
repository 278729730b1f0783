"""Single-image inference helpers shared by the CLI and the Gradio app."""

import torch
import torch.nn.functional as F
from PIL import Image


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
