"""The resized cache: the same tensors through the transforms, built once and reused, extra columns kept."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tmt_hf.data import SegmentationTransform, generate_scene, resized_cache

REPO = Path(__file__).resolve().parents[1]
SIZE = (48, 80)
HALF = (24, 40)
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def write_frames(root: Path, count: int = 3, size=SIZE) -> datasets.Dataset:
    """Generated frames as PNG files (`image`, `label`, `shift_mask`), a `group`, a smaller embedded `focus` map, and
    `sample_index`."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    columns = {"image": [], "label": [], "shift_mask": [], "group": [], "focus": [], "sample_index": []}
    for index in range(count):
        scene = generate_scene(index, "night", *size)
        for column, array in (
            ("image", scene["image"]),
            ("label", scene["label"]),
            ("shift_mask", scene["shift_mask"]),
        ):
            path = root / f"{index}_{column}.png"
            Image.fromarray(array.astype(np.uint8) * (255 if column == "shift_mask" else 1)).save(path)
            columns[column].append(str(path))
        focus = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (12, 20), dtype=np.uint8)).save(focus, format="PNG")
        columns["focus"].append({"bytes": focus.getvalue(), "path": None})
        columns["group"].append(f"seq{index % 2}")
        columns["sample_index"].append(index)
    features = datasets.Features(
        {
            **{c: datasets.Image() for c in ("image", "label", "shift_mask", "focus")},
            "group": datasets.Value("string"),
            "sample_index": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


@pytest.fixture
def frames(tmp_path):
    return write_frames(tmp_path / "frames")


def transform_of(train: bool, size, scale_range=(0.75, 1.5), appearance_jitter=True):
    if not train:
        return SegmentationTransform(train=False, size=size, image_mean=MEAN, image_std=STD)
    return SegmentationTransform(
        train=True,
        size=size,
        crop_size=(32, 48),
        scale_range=scale_range,
        seed=3,
        appearance_jitter=appearance_jitter,
        image_mean=MEAN,
        image_std=STD,
    )


def samples(dataset, transform, epoch=0):
    transform.set_epoch(epoch)
    rows = dataset.with_transform(transform)
    return [rows[i] for i in range(len(rows))]


@pytest.mark.parametrize("train", [True, False])
def test_cached_at_the_frames_size_yields_the_same_tensors(frames, tmp_path, train):
    cached = resized_cache(frames, SIZE, cache_dir=tmp_path / "cache")
    transform = transform_of(train, SIZE)
    for epoch in (0, 1):
        for expected, got in zip(samples(frames, transform, epoch), samples(cached, transform, epoch), strict=True):
            assert expected.keys() == got.keys() == {"pixel_values", "labels", "focus", "sample_index"}
            for key in ("pixel_values", "labels", "focus"):
                assert torch.equal(expected[key], got[key]), key
    for expected, got in zip(frames.select_columns(["image", "label"]), cached.select_columns(["image", "label"])):
        assert np.array_equal(np.asarray(expected["image"]), np.asarray(got["image"]))
        assert np.array_equal(np.asarray(expected["label"]), np.asarray(got["label"]))


@pytest.mark.parametrize("train", [True, False])
def test_cached_smaller_differs_only_by_rounding_at_the_transforms_own_resize(frames, tmp_path, train):
    """Cached at the size the transform resizes to (training: scale 1, no jitter), labels, maps and crops are the
    same and pixels differ by the 8-bit rounding of the resized image at most."""
    cached = resized_cache(frames, HALF, cache_dir=tmp_path / "cache")
    transform = transform_of(train, HALF, scale_range=(1.0, 1.0), appearance_jitter=False)
    bound = 0.5 / 255 / min(STD) + 1e-6
    for expected, got in zip(samples(frames, transform), samples(cached, transform), strict=True):
        assert torch.equal(expected["labels"], got["labels"]) and torch.equal(expected["focus"], got["focus"])
        assert expected["pixel_values"].shape == got["pixel_values"].shape
        assert (expected["pixel_values"] - got["pixel_values"]).abs().max() <= bound


def test_rows_are_embedded_pngs_at_the_size_with_the_source_label_ids(frames, tmp_path):
    cached = resized_cache(frames, HALF, cache_dir=tmp_path).with_format(None)
    undecoded = cached.cast_column("image", datasets.Image(decode=False))
    assert all(value["path"] is None and value["bytes"].startswith(b"\x89PNG") for value in undecoded["image"])
    for source, row in zip(frames, cached):
        assert row["image"].mode == "RGB" and row["image"].size == (HALF[1], HALF[0])
        assert row["label"].mode == "L" and row["shift_mask"].size == (HALF[1], HALF[0])
        assert set(np.unique(row["label"])) <= set(np.unique(source["label"]))
        assert set(np.unique(row["shift_mask"])) <= {0, 255}


def test_second_call_reuses_the_file_without_decoding(frames, tmp_path, monkeypatch):
    first = resized_cache(frames, HALF, cache_dir=tmp_path)
    [built] = tmp_path.glob("*.arrow")
    built_at = built.stat().st_mtime_ns
    decode = datasets.Image.decode_example
    decoded = []
    monkeypatch.setattr(
        datasets.Image, "decode_example", lambda self, *a, **k: decoded.append(1) or decode(self, *a, **k)
    )
    again = resized_cache(frames, HALF, cache_dir=tmp_path)
    assert decoded == [] and again.cache_files == first.cache_files == [{"filename": str(built)}]
    assert list(tmp_path.glob("*.arrow")) == [built] and built.stat().st_mtime_ns == built_at

    # A changed source file, or another size, is another cache file.
    label_path = frames.cast_column("label", datasets.Image(decode=False))[0]["label"]["path"]
    Image.fromarray(np.full(SIZE, 7, dtype=np.uint8)).save(label_path)
    os.utime(label_path, ns=(built_at, built_at + 10**9))
    changed = resized_cache(frames, HALF, cache_dir=tmp_path)
    assert decoded and changed.cache_files != first.cache_files
    assert np.all(np.asarray(changed[0]["label"]) == 7)
    resized_cache(frames, SIZE, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == 3 and not list(tmp_path.glob("*.tmp"))


def test_cache_lives_in_the_datasets_cache_by_default(frames, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")
    cached = resized_cache(frames, HALF)
    [entry] = cached.cache_files
    assert Path(entry["filename"]).parent == tmp_path / "hf" / "tmt-hf-resized"
    assert Path(entry["filename"]).name.startswith("24x40-")


def test_keeps_every_other_column_as_it_is(frames, tmp_path):
    cached = resized_cache(frames.select([2, 0]), HALF, cache_dir=tmp_path)
    assert cached.column_names == frames.column_names
    assert cached.features["focus"] == frames.features["focus"]
    for column in ("group", "sample_index"):
        assert cached[column] == [frames[2][column], frames[0][column]]
    undecoded = frames.cast_column("focus", datasets.Image(decode=False))
    kept = cached.cast_column("focus", datasets.Image(decode=False))
    assert kept["focus"] == [undecoded[2]["focus"], undecoded[0]["focus"]]
    only_images = resized_cache(frames.select_columns(["image"]), HALF, cache_dir=tmp_path)
    assert only_images.column_names == ["image"]


def test_file_path_strings_uncompressed_and_several_processes_give_the_same_pixels(frames, tmp_path):
    reference = resized_cache(frames, HALF, cache_dir=tmp_path / "png")
    paths = frames.select_columns(["image", "label"]).cast_column("image", datasets.Image(decode=False))
    paths = datasets.Dataset.from_dict({"image": [v["path"] for v in paths["image"]], "label": paths["label"]})
    variants = {
        "paths": resized_cache(paths.cast_column("label", datasets.Image()), HALF, cache_dir=tmp_path / "paths"),
        "tiff": resized_cache(frames, HALF, cache_dir=tmp_path / "tiff", compress=False),
        "processes": resized_cache(frames, HALF, cache_dir=tmp_path / "processes", num_proc=2),
    }
    assert variants["tiff"][0]["image"].format == "TIFF"
    for name, variant in variants.items():
        for expected, got in zip(reference, variant, strict=True):
            for column in ("image", "label"):
                assert np.array_equal(np.asarray(expected[column]), np.asarray(got[column])), (name, column)


@pytest.mark.parametrize("size", [(0, 40), (24,), (24, 40, 3), "ab", (2.5, 40), None])
def test_bad_sizes_are_refused(frames, tmp_path, size):
    with pytest.raises(ValueError, match="size must be"):
        resized_cache(frames, size, cache_dir=tmp_path)


def test_bad_datasets_are_refused(frames, tmp_path):
    with pytest.raises(ValueError, match="no 'image' column"):
        resized_cache(frames.remove_columns("image"), HALF, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="must hold images"):
        resized_cache(datasets.Dataset.from_dict({"image": [1, 2]}), HALF, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        resized_cache(frames.select([]), HALF, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="map-style"):
        resized_cache(frames.to_iterable_dataset(), HALF, cache_dir=tmp_path)


def test_loader_benchmark_reports_every_configuration(tmp_path):
    output = tmp_path / "loader.json"
    script = REPO / "examples" / "research" / "benchmark_loader.py"
    flags = "--size 64 128 --crop_size 32 64 --frames 4 --batch_size 2 --repeats 1 --workers 0 1".split()
    result = subprocess.run(
        [sys.executable, str(script), *flags, "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert json.loads(result.stdout) == report
    rates = report["images_per_second"]
    assert set(rates["native"]) == {"uncached", "png", "tiff"} and set(rates["half"]) == {"uncached", "png"}
    assert all(
        rate > 0 for sources in rates.values() for by_workers in sources.values() for rate in by_workers.values()
    )
    assert all(set(by_workers) == {"0", "1"} for sources in rates.values() for by_workers in sources.values())
    assert set(report["cache"]) == {"native/png", "native/tiff", "half/png"}
    assert report["settings"]["half"]["image_size"] == [32, 64] and report["frames"]["size"] == [64, 128]
