"""Image processor for TMT: the Segformer image processor with ViT normalisation and a driving-scene size."""

from transformers.image_utils import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD
from transformers.models.segformer.image_processing_pil_segformer import SegformerImageProcessorPil


class TMTImageProcessor(SegformerImageProcessorPil):
    r"""
    Resizes, rescales and normalises images (and, optionally, segmentation maps) for [`TMTForSemanticSegmentation`].
    It is the Segformer image processor, so `post_process_semantic_segmentation` and the `image-segmentation`
    pipeline work unchanged. Defaults: ViT normalisation (mean = std = 0.5), a 512x1024 driving-scene resize, and
    labels kept as they are (`do_reduce_labels=False`, 255 = ignore).
    """

    image_mean = IMAGENET_STANDARD_MEAN
    image_std = IMAGENET_STANDARD_STD
    size = {"height": 512, "width": 1024}


__all__ = ["TMTImageProcessor"]
