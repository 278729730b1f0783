"""The `transferability-estimation` pipeline: ACTE's maps for an image, at the image's size.

ACTE is an estimator, not a segmenter, so the `image-segmentation` pipeline does not apply to it; this task does:

    >>> from transformers import pipeline
    >>> estimate = pipeline("transferability-estimation", model="org/acte-city2bdd")  # with tmt_hf imported
    >>> maps = estimate("street.jpg")
    >>> maps["transferability"], maps["focus_map"]  # PIL grayscale images, 255 = 1.0
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Pipeline
from transformers.image_utils import load_image


class TransferabilityEstimationPipeline(Pipeline):
    """
    Runs an [`ACTEModel`] on one image (path, URL or PIL image) and returns `{"transferability", "focus_map"}` as
    grayscale PIL images of the input's size (255 = 1.0), and `mean_transferability`, the image's mean.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise ValueError(f"transferability-estimation takes no parameters, got {sorted(kwargs)}")
        return {}, {}, {}

    def preprocess(self, image):
        image = load_image(image)
        pixels = self.image_processor(image, return_tensors="pt")["pixel_values"]
        height, width = pixels.shape[-2:]
        multiple = self.model.config.size_multiple
        pixels = F.pad(pixels, (0, (-width) % multiple, 0, (-height) % multiple))
        return {"pixel_values": pixels, "processed_size": (height, width), "image_size": (image.height, image.width)}

    def _forward(self, inputs):
        with torch.no_grad():
            out = self.model(pixel_values=inputs["pixel_values"].to(self.model.dtype))
        return {**inputs, "transferability": out.transferability, "focus_map": out.focus_map}

    def postprocess(self, outputs):
        padded = outputs["pixel_values"].shape[-2:]
        height, width = outputs["processed_size"]
        result = {}
        for key in ("transferability", "focus_map"):
            values = F.interpolate(outputs[key][:, None].float(), size=padded, mode="bilinear")[:, :, :height, :width]
            values = F.interpolate(values, size=outputs["image_size"], mode="bilinear")[0, 0].clamp(0, 1)
            result[key] = Image.fromarray(np.round(values.numpy() * 255).astype(np.uint8))
            if key == "transferability":
                result["mean_transferability"] = float(values.mean())
        return result


__all__ = ["TransferabilityEstimationPipeline"]
