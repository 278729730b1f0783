"""Inference Endpoints handler for a TMT repo (the `EndpointHandler(path)` / `__call__(data)` convention).

Copy this file to the model repo as `handler.py`. Request: `{"inputs": <image bytes or base64 string>,
"parameters": {"return_focus_map": true}}`. Response: the image-segmentation pipeline's list of
`{"label", "score", "mask"}` with each mask a base64 PNG, plus `{"focus_map": <base64 PNG>}` when asked for; a
malformed request gets `{"error": "..."}` naming what was expected.
"""

import base64
import binascii
import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from transformers import pipeline


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.segmenter = pipeline("image-segmentation", model=path, trust_remote_code=True)

    def decode(self, data) -> Image.Image:
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('the request must be a JSON object with an "inputs" key holding the image')
        payload = data["inputs"]
        if isinstance(payload, Image.Image):
            return payload.convert("RGB")
        if isinstance(payload, str):
            try:
                payload = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ValueError('"inputs" must be image bytes or a base64-encoded image') from error
        if not isinstance(payload, (bytes, bytearray)):
            raise ValueError(
                f'"inputs" must be image bytes or a base64-encoded image string, got {type(payload).__name__}'
            )
        if not payload:
            raise ValueError('"inputs" is empty: expected image bytes or a base64-encoded image')
        try:
            image = Image.open(io.BytesIO(payload))
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f'"inputs" is not a readable image (PNG, JPEG, ...): {error}') from error
        if image.width == 0 or image.height == 0:
            raise ValueError("the image is empty (0 pixels)")
        return image.convert("RGB")

    def __call__(self, data: dict):
        try:
            image = self.decode(data)
            parameters = data.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise ValueError(
                    f'"parameters" must be a JSON object such as {{"return_focus_map": true}}, got '
                    f"{type(parameters).__name__}"
                )
        except ValueError as error:
            return {"error": str(error)}
        results = [
            {"label": r["label"], "score": r["score"], "mask": png_base64(r["mask"])} for r in self.segmenter(image)
        ]
        if parameters.get("return_focus_map"):
            inputs = self.segmenter.image_processor(image, return_tensors="pt")
            with torch.no_grad():
                focus = self.segmenter.model(**inputs).focus_map
            if focus is not None:
                focus = F.interpolate(focus[:, None], size=(image.height, image.width), mode="bilinear")[0, 0]
                grey = Image.fromarray((focus.clamp(0, 1).numpy() * 255).astype(np.uint8), mode="L")
                results.append({"focus_map": png_base64(grey)})
        return results
