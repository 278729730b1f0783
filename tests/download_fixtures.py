"""
Tiny copies of each benchmark's download layout, generated at test time: random images and labels drawn from each
dataset's raw ids, written where the official download puts them. Each builder returns {(split, frame): raw label}.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (12, 16)  # height, width
FIXTURES = Path(__file__).parent / "fixtures"
CITYSCAPES_PALETTE = [value for index in range(256) for value in (index, 255 - index, index // 2)]


def published(name: str) -> dict:
    """A published label definition committed under tests/fixtures/."""
    return json.loads((FIXTURES / name).read_text())


def write(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """An image or label file; `palette` makes a palettised (mode P) label of the ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)
    image.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def image(rng: np.random.Generator, size=SIZE) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def ids(rng: np.random.Generator, choices, size=SIZE) -> np.ndarray:
    return rng.choice(np.asarray(choices), size).astype(np.uint8)


def write_cityscapes(root: Path, frames: dict, train_ids: bool = False, seed: int = 0) -> dict:
    """
    `leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png` and `gtFine/...`: `_labelIds` (ids 0-33), with
    `train_ids` also `_labelTrainIds` (its own random train ids), and the `_color`, `_instanceIds` and `_polygons`
    files the download has beside them. `frames`: {split folder: {city: count}}.
    """
    rng, labels = np.random.default_rng(seed), {}
    for split, cities in frames.items():
        for city, count in cities.items():
            for index in range(count):
                frame = f"{city}_000000_{index:06d}"
                write(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", image(rng))
                gt = root / "gtFine" / split / city
                raw = ids(rng, range(34))
                write(gt / f"{frame}_gtFine_labelIds.png", raw)
                write(gt / f"{frame}_gtFine_color.png", image(rng))
                instances = rng.integers(0, 30000, SIZE).astype(np.uint16)
                Image.fromarray(instances).save(gt / f"{frame}_gtFine_instanceIds.png")
                (gt / f"{frame}_gtFine_polygons.json").write_text("{}")
                labels[split, frame] = raw
                if train_ids:
                    labels[split, frame] = ids(rng, [*range(19), 255])
                    write(gt / f"{frame}_gtFine_labelTrainIds.png", labels[split, frame])
    return labels


def write_acdc(root: Path, frames: dict, train_ids: bool = True, seed: int = 0) -> dict:
    """
    `rgb_anon/<condition>/<split>/<recording>/<name>_rgb_anon.png` and `gt/<condition>/<split>/<recording>/` with
    `<name>_gt_labelIds.png` (ids 0-33), with `train_ids` also `_gt_labelTrainIds.png` (their train ids), and the
    `_gt_labelColor.png` and `_gt_invIds.png` beside them. `frames`: {condition: {split folder: {recording: count}}}.
    """
    from tmt_hf.data import CITYSCAPES_ID_TO_TRAIN_ID

    rng, labels = np.random.default_rng(seed), {}
    for condition, splits in frames.items():
        for split, recordings in splits.items():
            for recording, count in recordings.items():
                for index in range(count):
                    name = f"{recording}_frame_{index:06d}"
                    write(root / "rgb_anon" / condition / split / recording / f"{name}_rgb_anon.png", image(rng))
                    if split == "test":
                        continue
                    gt = root / "gt" / condition / split / recording
                    raw = ids(rng, range(34))
                    write(gt / f"{name}_gt_labelIds.png", raw)
                    write(gt / f"{name}_gt_labelColor.png", image(rng))
                    write(gt / f"{name}_gt_invIds.png", ids(rng, [0, 1]))
                    labels[split, f"{condition}/{name}"] = raw
                    if train_ids:
                        write(gt / f"{name}_gt_labelTrainIds.png", CITYSCAPES_ID_TO_TRAIN_ID[raw])
    return labels


def write_bdd100k(root: Path, frames: dict, seed: int = 0) -> dict:
    """
    `bdd100k/images/10k/<split>/<name>.jpg` with `bdd100k/labels/sem_seg/masks/<split>/<name>.png` (train ids and 255)
    and the colormaps beside them. `frames`: {split folder: count}.
    """
    rng, labels = np.random.default_rng(seed), {}
    for split, count in frames.items():
        for index in range(count):
            name = f"{index:08x}-{index:08x}"
            write(root / "bdd100k" / "images" / "10k" / split / f"{name}.jpg", image(rng))
            if split == "test":
                continue
            labels[split, name] = ids(rng, [*range(19), 255])
            write(root / "bdd100k" / "labels" / "sem_seg" / "masks" / split / f"{name}.png", labels[split, name])
            write(root / "bdd100k" / "labels" / "sem_seg" / "colormaps" / split / f"{name}.png", image(rng))
    return labels


def write_mapillary(root: Path, frames: dict, v12_only: bool = False, names: list[str] | None = None, seed=0) -> dict:
    """
    Mapillary Vistas: `config_v1.2.json` (the published v1.2 label list, or `names` in its place), and
    `<split>/images/<key>.jpg` with palettised `<split>/v1.2/labels/<key>.png` (ids 0-65; beside them `v2.0/labels`
    with other ids), or with `v12_only` the v1.2 download's `<split>/labels/<key>.png`. `frames`: {split folder: count}.
    """
    rng, labels = np.random.default_rng(seed), {}
    config = published("mapillary_config_v1.2.json")
    if names is not None:
        config["labels"] = [{"name": name} for name in names]
    root.mkdir(parents=True, exist_ok=True)
    (root / "config_v1.2.json").write_text(json.dumps(config))
    for split, count in frames.items():
        for index in range(count):
            key = f"key{index:04d}{split[0]}"
            write(root / split / "images" / f"{key}.jpg", image(rng))
            labels[split, key] = ids(rng, range(66))
            if v12_only:
                write(root / split / "labels" / f"{key}.png", labels[split, key], CITYSCAPES_PALETTE)
            else:
                write(root / split / "v1.2" / "labels" / f"{key}.png", labels[split, key], CITYSCAPES_PALETTE)
                write(root / split / "v2.0" / "labels" / f"{key}.png", ids(rng, range(124)), CITYSCAPES_PALETTE)
    return labels


def write_gta5(root: Path, count: int, split_files: dict | None = None, seed: int = 0) -> dict:
    """
    GTA5: `images/<nnnnn>.png` with palettised `labels/<nnnnn>.png` (palette indices 0-33, Cityscapes label ids);
    `split_files` {split file name: frame numbers} writes split files such as `val.txt`.
    """
    rng, labels = np.random.default_rng(seed), {}
    for number in range(1, count + 1):
        write(root / "images" / f"{number:05d}.png", image(rng))
        labels["train", f"{number:05d}"] = ids(rng, range(34))
        write(root / "labels" / f"{number:05d}.png", labels["train", f"{number:05d}"], CITYSCAPES_PALETTE)
    for name, numbers in (split_files or {}).items():
        (root / name).write_text("".join(f"{number:05d}.png\n" for number in numbers))
    return labels


def write_kitti(root: Path, count: int, test_count: int = 1, seed: int = 0) -> dict:
    """
    KITTI semantics: `data_semantics/training/image_2/<nnnnnn>_10.png` with `training/semantic/` (Cityscapes label
    ids) and `training/semantic_rgb/`, and unlabelled `testing/image_2/`.
    """
    rng, labels, base = np.random.default_rng(seed), {}, root / "data_semantics"
    for index in range(count):
        frame = f"{index:06d}_10"
        write(base / "training" / "image_2" / f"{frame}.png", image(rng))
        labels["train", frame] = ids(rng, range(34))
        write(base / "training" / "semantic" / f"{frame}.png", labels["train", frame])
        write(base / "training" / "semantic_rgb" / f"{frame}.png", image(rng))
    for index in range(test_count):
        write(base / "testing" / "image_2" / f"{index:06d}_10.png", image(rng))
    return labels
