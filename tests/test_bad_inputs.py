"""Bad inputs get a clear error naming what was expected, or are handled correctly; nothing is silently wrong."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_acte_config, tiny_tmt_config
from PIL import Image

from tmt_hf import ACTEModel, TMTForSemanticSegmentation, TMTImageProcessor
from tmt_hf.data import load_domain

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return TMTForSemanticSegmentation(tiny_tmt_config(tma_init=1.0)).attach_acte(ACTEModel(tiny_acte_config())).eval()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int64])
def test_non_float_pixels_are_refused(model, dtype):
    pixels = torch.randint(0, 2, (1, 3, 32, 48)).to(dtype)
    for net in (model, model.acte):
        with pytest.raises(TypeError, match="floating-point images.*image processor"):
            net(pixels)


def test_nan_and_empty_pixels(model):
    pixels = torch.randn(1, 3, 32, 48)
    pixels[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="pixel_values contains NaN"):  # not blamed on the ACTE map
        model(pixels)
    with pytest.raises(ValueError, match="pixel_values is empty"):
        model(torch.zeros(0, 3, 32, 48))


def test_labels_are_checked(model):
    pixels = torch.randn(2, 3, 32, 48)
    labels = torch.randint(0, 5, (2, 32, 48))
    reference = model(pixels, labels=labels).loss
    # NumPy labels and integral floats are class indices; the loss is the same.
    assert torch.allclose(model(pixels, labels=labels.numpy()).loss, reference)
    assert torch.allclose(model(pixels, labels=labels.float()).loss, reference)
    with pytest.raises(ValueError, match="non-integer values"):
        model(pixels, labels=labels.float() + 0.7)
    for bad in (30, 5, -1):
        with pytest.raises(ValueError, match=rf"class indices in \[0, 5\) or 255.*\[{bad}\]"):
            model(pixels, labels=torch.full((2, 32, 48), bad))
    with pytest.raises(TypeError, match="integer class indices"):
        model(pixels, labels=labels > 2)
    ignored = torch.full((2, 32, 48), 255)
    assert model(pixels, labels=ignored).loss.item() == 0.0


def test_acte_takes_float64_and_numpy_labels():
    acte = ACTEModel(tiny_acte_config()).eval()
    pixels = torch.randn(1, 3, 32, 48)
    assert torch.allclose(acte(pixels.double()).focus_map, acte(pixels).focus_map)
    labels = np.random.default_rng(0).integers(0, 5, (1, 32, 48))
    assert acte(pixels, labels=labels).semantic_loss > 0
    with pytest.raises(ValueError, match="class indices"):
        acte(pixels, labels=labels + 10)


def test_image_processor_converts_modes_and_bit_depths():
    processor = TMTImageProcessor(size={"height": 32, "width": 48})
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    reference = processor(Image.fromarray(rgb), return_tensors="pt").pixel_values
    grey = Image.fromarray(rgb[..., 0])
    for image in (grey, Image.fromarray(rgb).convert("RGBA"), grey.convert("P")):
        assert processor(image, return_tensors="pt").pixel_values.shape == (1, 3, 32, 48)
    # A 16-bit image is scaled to 8 bits, not clipped into one flat colour.
    deep = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    assert deep.mode.startswith("I")
    scaled = processor(deep, return_tensors="pt").pixel_values
    assert torch.allclose(scaled, processor(grey, return_tensors="pt").pixel_values) and scaled.std() > 0.1
    # Floating-point images already in [0, 1] are not rescaled a second time.
    unit = rgb.astype(np.float32) / 255
    assert torch.allclose(processor(unit, return_tensors="pt").pixel_values, reference, atol=1e-5)
    as_tensor = torch.from_numpy(unit).permute(2, 0, 1)
    assert torch.allclose(processor(as_tensor, return_tensors="pt").pixel_values, reference, atol=1e-5)
    assert torch.allclose(processor(rgb.astype(np.float32), return_tensors="pt").pixel_values, reference, atol=1e-5)


def write_pairs(root, labels, image_mode="RGB"):
    for folder in ("images", "labels"):
        (root / "train" / folder).mkdir(parents=True, exist_ok=True)
    for index, label in enumerate(labels):
        image = np.random.default_rng(index).integers(0, 256, (*label.shape, 3), dtype=np.uint8)
        Image.fromarray(image).convert(image_mode).save(root / "train" / "images" / f"{index}.png")
        Image.fromarray(label).save(root / "train" / "labels" / f"{index}.png")


def test_load_domain_keeps_16_bit_labels_and_refuses_out_of_range_ids(tmp_path):
    ids = np.random.default_rng(0).integers(0, 19, (16, 24)).astype(np.uint16)
    ids[0, :4] = 255
    write_pairs(tmp_path / "deep", [ids])
    assert Image.open(tmp_path / "deep" / "train" / "labels" / "0.png").mode.startswith("I")
    row = load_domain(str(tmp_path / "deep"))[0]
    assert np.array_equal(np.asarray(row["label"]), ids.astype(np.uint8))
    bad = ids.copy()
    bad[5, 5] = 30
    write_pairs(tmp_path / "bad", [ids, bad])
    with pytest.raises(ValueError, match=r"row 1 \(file .*1\.png\).*train ids in \[0, 19\).*\[30\]"):
        load_domain(str(tmp_path / "bad"))


def test_load_domain_empty_and_split_errors(tmp_path):
    (tmp_path / "empty" / "train" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "labels").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image/label pairs"):
        load_domain(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="num_samples must be a positive"):
        load_domain("synthetic/clear", num_samples=0)
    with pytest.raises(ValueError, match="splits .*'validation'.*not 'dev'"):
        load_domain("synthetic/clear", "dev", num_samples=1)
    val = load_domain("synthetic/night", "val", num_samples=1, synthetic_size=(32, 64))
    validation = load_domain("synthetic/night", "validation", num_samples=1, synthetic_size=(32, 64))
    assert np.array_equal(np.asarray(val[0]["image"]), np.asarray(validation[0]["image"]))


def test_handler_rejects_bad_parameters_and_input_types(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from handler import EndpointHandler
    finally:
        sys.path.remove(str(REPO / "examples"))
    handler = EndpointHandler.__new__(EndpointHandler)  # decoding and validation only: no model needed
    handler.segmenter = lambda image: []
    image = Image.new("RGB", (8, 8))
    assert "must be a JSON object" in handler({"inputs": image, "parameters": ["return_focus_map"]})["error"]
    assert "got int" in handler({"inputs": 12})["error"]
    assert "got list" in handler({"inputs": [1, 2]})["error"]
    assert handler({"inputs": image, "parameters": None}) == []


def run_train(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / "train.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_train_help_shows_defaults_and_refuses_a_stray_method(tmp_path):
    help_text = " ".join(run_train("--help").stdout.split("options:", 1)[1].split())
    for flag, default in (
        ("--image_size", "[128, 256]"),
        ("--source_steps", "600"),
        ("--model_name_or_path", "tiny"),
        ("--transfer_steps", "300"),
        ("--method", "None"),
    ):
        after = help_text.split(f" {flag} ", 1)[1]
        assert f"(default: {default})" in after.split(" --", 1)[0], flag
    result = run_train("--stage", "acte", "--method", "finetune", "--output_dir", str(tmp_path))
    assert result.returncode != 0 and "--stage acte does not use it" in result.stderr


def test_single_process_cpu_run_uses_every_core(monkeypatch):
    from tmt_hf import training

    before = torch.get_num_threads()
    accelerator = SimpleNamespace(device=torch.device("cpu"), num_processes=1, print=lambda *a: None)
    monkeypatch.setattr(training.psutil, "cpu_count", lambda logical=True: 2)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0, 1})
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what `accelerate launch` sets for its child
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
        training.use_every_core(accelerator)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # `accelerate launch --num_cpu_threads_per_process 3` wins
        training.use_every_core(accelerator)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")  # a plain `python train.py` keeps the user's OMP setting
        training.use_every_core(accelerator)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
