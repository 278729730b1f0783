"""The Inference Endpoint handler and the tmt-hf CLI on a tiny model."""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_acte_config, tiny_tmt_config
from PIL import Image

from tmt_hf import ACTEModel, TMTForSemanticSegmentation, TMTImageProcessor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    processor = TMTImageProcessor(size={"height": 64, "width": 128})
    acte = ACTEModel(tiny_acte_config(num_semantic_classes=19)).eval()
    acte.save_pretrained(root / "acte")
    processor.save_pretrained(root / "acte")
    TMTForSemanticSegmentation(tiny_tmt_config(num_labels=19, tma_init=1.0)).attach_acte(acte).save_pretrained(
        root / "tmt"
    )
    processor.save_pretrained(root / "tmt")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8))
    image.save(root / "street.png")
    return root


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_handler_returns_masks_and_clear_errors(model_dirs):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from handler import EndpointHandler
    finally:
        sys.path.remove(str(REPO / "examples"))

    handler = EndpointHandler(str(model_dirs / "tmt"))
    raw = (model_dirs / "street.png").read_bytes()
    for payload in (raw, base64.b64encode(raw).decode()):
        results = handler({"inputs": payload, "parameters": {"return_focus_map": True}})
        masks = [r for r in results if "mask" in r]
        assert masks and all(Image.open(io.BytesIO(base64.b64decode(r["mask"]))).size == (100, 60) for r in masks)
        focus = Image.open(io.BytesIO(base64.b64decode(results[-1]["focus_map"])))
        assert focus.size == (100, 60) and focus.mode == "L"
    assert "image" in handler({"inputs": b"definitely not an image"})["error"]
    assert '"inputs" key' in handler({"image": raw})["error"]
    assert "empty" in handler({"inputs": b""})["error"]
    assert "base64" in handler({"inputs": "***not base64***"})["error"]


def cli(*args):
    result = subprocess.run(
        [sys.executable, "-m", "tmt_hf.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_cli_predict_maps_estimate(model_dirs, tmp_path):
    second = tmp_path / "second.jpg"
    Image.open(model_dirs / "street.png").save(second)
    cli(
        "predict",
        str(model_dirs / "street.png"),
        str(second),
        "--model",
        str(model_dirs / "tmt"),
        "--out",
        str(tmp_path / "pred"),
    )
    for stem in ("street", "second"):
        assert Image.open(tmp_path / "pred" / f"{stem}_segmentation.png").size == (100, 60)
        assert Image.open(tmp_path / "pred" / f"{stem}_focus.png").size == (100, 60)

    cli(
        "maps",
        str(model_dirs / "street.png"),
        "--model",
        str(model_dirs / "tmt"),
        "--out",
        str(tmp_path / "maps.png"),
        "--with_segmentation",
    )
    assert Image.open(tmp_path / "maps.png").width > 500

    out = cli("estimate", "--acte", str(model_dirs / "acte"), *"--data synthetic/night --num_samples 4 --json".split())
    report = json.loads(out[out.index("{") :])["classes"]
    assert "road" in report and "sky" in report
    for row in report.values():
        assert 0 <= row["mean_transferability"] <= 1 and 0 <= row["low_transferability_fraction"] <= 1
        assert 0 <= row["mean_absolute_transferability"] <= 1
