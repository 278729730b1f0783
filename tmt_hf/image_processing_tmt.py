"""Image processor for TMT: the Segformer image processor with ViT normalisation and a driving-scene size."""

import numpy as np
from PIL import Image
from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD
from transformers.models.segformer.image_processing_pil_segformer import SegformerImageProcessorPil

# PIL modes of more than 8 bits per channel: `convert("RGB")` clips them at 255 instead of scaling.
HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def to_rgb8(image: Image.Image) -> Image.Image:
    """
    Any PIL image as 8-bit RGB: grayscale, palette and alpha images are converted by PIL; 16-bit and 32-bit integer
    images are scaled by their bit depth (65535 -> 255), float images (mode F) by 255 if they lie in [0, 1].
    """
    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return image.convert("RGB")
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if values.size and values.max() > 255 else 1.0
    grey = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


class TMTImageProcessor(SegformerImageProcessorPil):
    r"""
    Resizes, rescales and normalises images (and, optionally, segmentation maps) for [`TMTForSemanticSegmentation`].
    It is the Segformer image processor, so `post_process_semantic_segmentation` and the `image-segmentation`
    pipeline work unchanged. Defaults: ViT normalisation (mean = std = 0.5), a 512x1024 driving-scene resize, and
    labels kept as they are (`do_reduce_labels=False`, 255 = ignore).

    Inputs are made safe for a 3-channel model: grayscale, palette and RGBA images become RGB, 16-bit images are
    scaled to 8 bits (not clipped), and floating-point arrays or tensors already in [0, 1] are not rescaled again.
    """

    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    size = {"height": 512, "width": 1024}
    do_convert_rgb = True

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs):
        if do_convert_rgb and isinstance(image, Image.Image):
            image = to_rgb8(image)
        return super().process_image(
            image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, **kwargs
        )

    def rescale(self, image: np.ndarray, scale: float, **kwargs) -> np.ndarray:
        """Rescales by `scale`, except floating-point images that already lie in [0, 1]."""
        if np.issubdtype(image.dtype, np.floating) and image.size and 0.0 <= image.min() and image.max() <= 1.0:
            return image.astype(np.float32)
        return super().rescale(image, scale, **kwargs)


__all__ = ["TMTImageProcessor"]
