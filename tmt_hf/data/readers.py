"""
Readers of the benchmarks as users download them. A reader lists one split's image and label files by path (nothing
is decoded or copied), pairs them frame by frame, names each frame's group (city, recording, sequence: validation is
carved by group) and says how its label files encode classes. `registry.load_domain` finds the download under
`data_dir` with the reader's `Layout`, then checks and maps the labels; adding a dataset is one reader here and one
entry in `registry.BENCHMARKS`.
"""

import glob
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import datasets
import numpy as np

from ..configuration_tmt import CITYSCAPES_CLASSES
from .label_spaces import (
    CAMVID_NAMES,
    CAMVID_TO_TRAIN_ID,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_LABEL_NAMES,
    IDD_LEVEL1_CLASSES,
    IGNORE_INDEX,
    MAPILLARY_NAME_TO_TRAIN_ID,
    lookup_table,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "validation", "test")
SHOWN = 3  # file names quoted per problem


class MissingSplit(ValueError):
    """A download has no folder for the requested split."""


@dataclass(frozen=True, eq=False)
class LabelEncoding:
    """
    What a dataset's label files hold: the raw ids they may hold (`raw_ids`; any other is an error, `None`: unchecked),
    their names, and the table from raw ids to ids of the dataset's native label space (`None`: they already are).
    """

    description: str
    raw_ids: tuple[int, ...] | None = None
    mapping: np.ndarray | None = field(default=None, repr=False)
    names: tuple[str, ...] = field(default=(), repr=False)


CITYSCAPES_LABEL_IDS = LabelEncoding(
    "Cityscapes label ids 0-33 (`*_labelIds.png`)", tuple(range(34)), CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_LABEL_NAMES
)
CITYSCAPES_TRAIN_IDS = LabelEncoding(
    "Cityscapes train ids 0-18 and 255 (`*_labelTrainIds.png`)", (*range(19), IGNORE_INDEX), None, CITYSCAPES_CLASSES
)
CAMVID_IDS = LabelEncoding(
    "CamVid's 11 SegNet classes 0-10 and void 11", tuple(range(12)), CAMVID_TO_TRAIN_ID, CAMVID_NAMES
)
IDD_LEVEL1_IDS = LabelEncoding("IDD level-1 ids 0-6 and void 255", (*range(7), IGNORE_INDEX), None, IDD_LEVEL1_CLASSES)
BDD100K_TRAIN_IDS = LabelEncoding(
    "BDD100K train ids 0-18 and 255", (*range(19), IGNORE_INDEX), None, CITYSCAPES_CLASSES
)
GTA5_LABEL_IDS = LabelEncoding(
    "GTA5 palette indices, Cityscapes label ids 0-33",
    tuple(range(34)),
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_LABEL_NAMES,
)
KITTI_LABEL_IDS = LabelEncoding(
    "KITTI semantic/, Cityscapes label ids 0-33", tuple(range(34)), CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_LABEL_NAMES
)


@dataclass
class Frames:
    """
    One split of a download: the paired frames' paths in (group, frame) order with their group and any other per-frame
    `columns`, the label files' `encoding`, and the files that found no partner.
    """

    title: str  # the dataset and its folder, for messages
    images: list[str]
    groups: list[str]
    labels: list[str] | None = None  # None: images only
    encoding: LabelEncoding | None = None
    columns: dict[str, list[str]] = field(default_factory=dict)
    missing_labels: list[str] = field(default_factory=list)  # the label files that images lack
    unpaired_labels: list[str] = field(default_factory=list)  # labels without an image
    other_kind: list[str] = field(default_factory=list)  # frames labelled only in a second kind of label file
    image_folder: str = ""  # where images are looked for, for messages

    def problems(self) -> list[str]:
        """Each way the files fail to pair up, as a message naming the files."""
        problems = []
        if self.missing_labels:
            problems.append(
                f"{self.title}: no label for {len(self.missing_labels)} frame(s), e.g. {self.missing_labels[:SHOWN]}"
            )
        if self.unpaired_labels:
            problems.append(
                f"{self.title}: no image in {self.image_folder} for {len(self.unpaired_labels)} label(s), e.g. "
                f"{self.unpaired_labels[:SHOWN]}"
            )
        if self.other_kind:
            problems.append(
                f"{self.title}: two kinds of label files mixed in one split: {len(self.other_kind)} frame(s) have "
                f"another kind but no {self.encoding.description} file as the others do, e.g. "
                f"{self.other_kind[:SHOWN]}; give every frame the same kind"
            )
        return problems

    def to_dataset(self) -> datasets.Dataset:
        """Columns `image` (and `label`) with file paths, `group`, and the other per-frame columns."""
        columns = {"image": self.images} | ({"label": self.labels} if self.labels is not None else {})
        return datasets.Dataset.from_dict(columns | {"group": self.groups} | self.columns)


@dataclass(frozen=True)
class Layout:
    """How a download is found under `data_dir` and read: `read(root, split, with_labels)` -> `Frames`."""

    title: str
    read: Callable[[str, str, bool], Frames]
    markers: tuple[str, ...]  # any of these paths marks the download's root
    expected: str  # what the root holds, for messages
    folder_names: tuple[str, ...] = ()  # the download's usual folder names: `data_dir` may be the folder above it
    splits: tuple[str, ...] = SPLITS
    labelled_splits: tuple[str, ...] = ("train", "validation")

    def find_root(self, data_dir: str) -> str:
        """The download's root: `data_dir`, or its sub-folder of a usual name; an error that says where to point."""
        where = f"{self.title} in {data_dir!r}: expected {self.expected}"
        if not os.path.isdir(data_dir):
            raise ValueError(f"{where}; there is no such folder")
        for root in (data_dir, *(os.path.join(data_dir, name) for name in self.folder_names)):
            if self.marks(root):
                return root
        parent = os.path.abspath(data_dir)
        for levels in (1, 2):
            parent = os.path.dirname(parent)
            if self.marks(parent):
                raise ValueError(f"{where}; --data_dir is {levels} level(s) too deep: pass {parent!r}")
        for child in sorted(glob.glob(os.path.join(data_dir, "*", ""))):
            for root in (child, *(os.path.join(child, name) for name in self.folder_names)):
                if self.marks(root):
                    raise ValueError(f"{where}; --data_dir is too shallow: pass {os.path.normpath(root)!r}")
        raise ValueError(f"{where}; found {sorted(os.listdir(data_dir))}")

    def marks(self, folder: str) -> bool:
        return any(os.path.isdir(os.path.join(folder, marker)) for marker in self.markers)


def split_folder(split: str, names: dict[str, str] | None = None) -> str:
    """The folder of a split: `val` for `validation` unless `names` say otherwise."""
    return (names or {"validation": "val"}).get(split, split)


def require_folder(title: str, folder: str) -> str:
    """`folder`, or a `MissingSplit` error naming it and what its parent holds."""
    if not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        found = sorted(os.listdir(parent)) if os.path.isdir(parent) else "no such folder either"
        raise MissingSplit(f"{title}: expected the folder {folder!r}; its parent holds {found}")
    return folder


def files_by_key(folder: str, pattern: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    """Files under `folder` matching `pattern`, by their path relative to `folder` less a matching suffix."""
    files = {}
    for path in glob.glob(os.path.join(folder, pattern)):
        relative = os.path.relpath(path, folder)
        suffix = next((s for s in suffixes if relative.lower().endswith(s)), None)
        if suffix is not None:
            files[relative[: -len(suffix)]] = path
    return files


def pair(
    title: str,
    images: dict[str, str],
    labels: dict[LabelEncoding, dict[str, str]] | None,
    image_folder: str,
    label_for: Callable[[str], str],
    group: Callable[[str], str] = str,
    columns: dict[str, Callable[[str], str]] | None = None,
) -> Frames:
    """
    Frames from image and label files keyed by frame. `labels` holds one or more kinds of label files in order of
    preference (e.g. train ids before label ids): the first kind present is used, and a frame that has only another kind
    is reported. `label_for(key)` is the label file a frame needs (for messages); `group` and `columns` derive per-frame
    values from the key.
    """
    if not images:
        raise ValueError(f"{title}: no images in {image_folder}")
    if labels is None:
        encoding, files, others = None, None, {}
    else:
        encoding, files = next(((e, f) for e, f in labels.items() if f), next(iter(labels.items())))
        others = {key: path for e, f in labels.items() if e is not encoding for key, path in f.items()}
    keys = sorted(key for key in images if files is None or key in files)
    frames = Frames(
        title,
        images=[images[key] for key in keys],
        groups=[group(key) for key in keys],
        labels=[files[key] for key in keys] if files is not None else None,
        encoding=encoding,
        columns={name: [value(key) for key in keys] for name, value in (columns or {}).items()},
        image_folder=image_folder,
    )
    if files is not None:
        frames.missing_labels = [label_for(key) for key in sorted(images) if key not in files and key not in others]
        frames.other_kind = [path for key, path in sorted(others.items()) if key in images and key not in files]
        frames.unpaired_labels = [path for key, path in sorted((others | files).items()) if key not in images]
    return frames


def read_cityscapes(root: str, split: str, with_labels: bool) -> Frames:
    """
    Cityscapes: `leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png` with `gtFine/<split>/<city>/...`:
    `*_gtFine_labelTrainIds.png` as they are where they exist, else `*_gtFine_labelIds.png` mapped to train ids (the
    `_color`, `_instanceIds` and `_polygons` files are ignored). Group: the city.
    """
    title, folder = f"Cityscapes in {root!r}", split_folder(split)
    image_dir, label_dir = os.path.join(root, "leftImg8bit", folder), os.path.join(root, "gtFine", folder)
    images = files_by_key(require_folder(title, image_dir), "*/*_leftImg8bit.png", ("_leftimg8bit.png",))
    labels = None
    if with_labels:
        require_folder(title, label_dir)
        labels = {
            encoding: files_by_key(label_dir, f"*/*{suffix}", (suffix.lower(),))
            for encoding, suffix in (
                (CITYSCAPES_TRAIN_IDS, "_gtFine_labelTrainIds.png"),
                (CITYSCAPES_LABEL_IDS, "_gtFine_labelIds.png"),
            )
        }
    return pair(
        title,
        images,
        labels,
        image_folder=image_dir,
        label_for=lambda key: os.path.join(label_dir, f"{key}_gtFine_labelIds.png"),
        group=lambda key: key.split(os.sep)[0],
    )


def read_acdc(root: str, split: str, with_labels: bool, conditions: tuple[str, ...]) -> Frames:
    """
    ACDC: `rgb_anon/<condition>/<split>/<recording>/<name>_rgb_anon.png` with `gt/<condition>/<split>/<recording>/`
    `<name>_gt_labelTrainIds.png`, or `<name>_gt_labelIds.png` where that is all there is. Group:
    `<condition>/<recording>`; column `condition`.
    """
    title, folder = f"ACDC in {root!r}", split_folder(split)
    images, labels = {}, None
    for condition in conditions:
        image_dir = require_folder(title, os.path.join(root, "rgb_anon", condition, folder))
        found = files_by_key(image_dir, "*/*_rgb_anon.png", ("_rgb_anon.png",))
        images |= {os.path.join(condition, key): path for key, path in found.items()}
    if with_labels:
        labels = {CITYSCAPES_TRAIN_IDS: {}, CITYSCAPES_LABEL_IDS: {}}
        for condition in conditions:
            label_dir = require_folder(title, os.path.join(root, "gt", condition, folder))
            for encoding, suffix in (
                (CITYSCAPES_TRAIN_IDS, "_gt_labelTrainIds.png"),
                (CITYSCAPES_LABEL_IDS, "_gt_labelIds.png"),
            ):
                found = files_by_key(label_dir, f"*/*{suffix}", (suffix.lower(),))
                labels[encoding] |= {os.path.join(condition, key): path for key, path in found.items()}

    def label_for(key: str) -> str:
        condition, frame = key.split(os.sep, 1)
        return os.path.join(root, "gt", condition, folder, f"{frame}_gt_labelIds.png")

    return pair(
        title,
        images,
        labels,
        image_folder=os.path.join(root, "rgb_anon", f"{{{','.join(conditions)}}}", folder),
        label_for=label_for,
        group=lambda key: "/".join(key.split(os.sep)[:2]),
        columns={"condition": lambda key: key.split(os.sep)[0]},
    )


def read_bdd100k(root: str, split: str, with_labels: bool) -> Frames:
    """
    BDD100K's 10K segmentation release: `images/10k/<split>/<name>.jpg` with `labels/sem_seg/masks/<split>/<name>.png`
    (train ids, 255 = unknown; the colormaps are ignored). Group: the frame (each comes from another video).
    """
    title, folder = f"BDD100K in {root!r}", split_folder(split)
    image_dir, label_dir = (
        os.path.join(root, "images", "10k", folder),
        os.path.join(root, "labels", "sem_seg", "masks", folder),
    )
    images = files_by_key(require_folder(title, image_dir), "*.jpg", (".jpg",))
    labels = (
        {BDD100K_TRAIN_IDS: files_by_key(require_folder(title, label_dir), "*.png", (".png",))} if with_labels else None
    )
    return pair(title, images, labels, image_dir, label_for=lambda key: os.path.join(label_dir, f"{key}.png"))


MAPILLARY_FOLDERS = {"train": "training", "validation": "validation", "test": "testing"}
MAPILLARY_CONFIGS = ("config_v1.2.json", "config.json")


def mapillary_encoding(root: str) -> LabelEncoding:
    """
    The label ids of a Mapillary Vistas download: indices into the `labels` of its `config_v1.2.json` (or, in the v1.2
    download, `config.json`), mapped to Cityscapes train ids by label name.
    """
    path = next((os.path.join(root, n) for n in MAPILLARY_CONFIGS if os.path.isfile(os.path.join(root, n))), None)
    if path is None:
        raise ValueError(
            f"Mapillary Vistas in {root!r}: expected the download's {' or '.join(MAPILLARY_CONFIGS)} there"
        )
    try:
        with open(path) as file:
            names = tuple(label["name"] for label in json.load(file)["labels"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Mapillary Vistas config {path}: expected a `labels` list of objects with a `name`"
        ) from error
    missing = sorted(set(MAPILLARY_NAME_TO_TRAIN_ID) - set(names))
    if missing:
        raise ValueError(f"Mapillary Vistas config {path}: no label named {missing[:SHOWN]}; expected a v1.2 config")
    table = {
        index: MAPILLARY_NAME_TO_TRAIN_ID[name]
        for index, name in enumerate(names)
        if name in MAPILLARY_NAME_TO_TRAIN_ID
    }
    description = f"Mapillary Vistas v1.2 ids 0-{len(names) - 1} of {path}"
    return LabelEncoding(description, tuple(range(len(names))), lookup_table(table), names)


def read_mapillary(root: str, split: str, with_labels: bool) -> Frames:
    """
    Mapillary Vistas v1.2: `{training,validation}/images/<key>.jpg` with `.../v1.2/labels/<key>.png` (the v2.0 download)
    or `.../labels/<key>.png` (the v1.2 download): palette indices into the download's config. Group: the frame (each
    is another place).
    """
    title, folder = f"Mapillary Vistas in {root!r}", split_folder(split, MAPILLARY_FOLDERS)
    image_dir, label_dir = os.path.join(root, folder, "images"), os.path.join(root, folder, "v1.2", "labels")
    if not os.path.isdir(label_dir):
        label_dir = os.path.join(root, folder, "labels")
    images = files_by_key(require_folder(title, image_dir), "*.jpg", (".jpg",))
    labels = None
    if with_labels:
        labels = {mapillary_encoding(root): files_by_key(require_folder(title, label_dir), "*.png", (".png",))}
    return pair(title, images, labels, image_dir, label_for=lambda key: os.path.join(label_dir, f"{key}.png"))


def read_gta5(root: str, split: str, with_labels: bool) -> Frames:
    """
    GTA5 (Playing for Data): `images/<nnnnn>.png` with palettised `labels/<nnnnn>.png` whose palette index is the
    Cityscapes label id. A split file `<split>.txt` (`val.txt` for validation) in the root lists a split's file names,
    one a line; without split files every frame is `train`. Group: the frame.
    """
    title = f"GTA5 in {root!r}"
    image_dir, label_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    images = files_by_key(require_folder(title, image_dir), "*.png", (".png",))
    split_files = {name: os.path.join(root, f"{split_folder(name)}.txt") for name in SPLITS}
    listed = None
    if os.path.isfile(split_files[split]):
        with open(split_files[split]) as file:
            listed = {os.path.splitext(line.strip())[0] for line in file if line.strip()}
        missing = sorted(listed - set(images))
        if missing:
            raise ValueError(f"{title}: {split_files[split]} lists frames that are not in images/: {missing[:SHOWN]}")
        images = {key: path for key, path in images.items() if key in listed}
    elif split != "train" or any(os.path.isfile(path) for path in split_files.values()):
        raise MissingSplit(
            f"{title}: no split file {split_files[split]!r}; without split files every frame is `train` (carve a "
            "validation split from it by row range)"
        )
    labels = None
    if with_labels:
        files = files_by_key(require_folder(title, label_dir), "*.png", (".png",))
        labels = {GTA5_LABEL_IDS: {k: p for k, p in files.items() if listed is None or k in listed}}
    return pair(title, images, labels, image_dir, label_for=lambda key: os.path.join(label_dir, f"{key}.png"))


KITTI_FOLDERS = {"train": "training", "test": "testing"}


def read_kitti(root: str, split: str, with_labels: bool) -> Frames:
    """
    KITTI semantics 2015: `training/image_2/<nnnnnn>_10.png` with `training/semantic/<nnnnnn>_10.png` (Cityscapes label
    ids; `semantic_rgb/` is ignored), and `testing/image_2/` unlabelled. Its 200 labelled frames have no official
    validation split. Group: the frame (each is another scene).
    """
    title = f"KITTI semantics in {root!r}"
    folder = KITTI_FOLDERS[split]
    image_dir, label_dir = os.path.join(root, folder, "image_2"), os.path.join(root, folder, "semantic")
    images = files_by_key(require_folder(title, image_dir), "*_10.png", (".png",))
    labels = (
        {KITTI_LABEL_IDS: files_by_key(require_folder(title, label_dir), "*_10.png", (".png",))}
        if with_labels
        else None
    )
    return pair(title, images, labels, image_dir, label_for=lambda key: os.path.join(label_dir, f"{key}.png"))


def read_segnet(root: str, split: str, with_labels: bool, sequences: tuple[str, ...] | None) -> Frames:
    """
    CamVid's SegNet layout: `<split>/<frame>.png` with `<split>annot/<frame>.png` (`val` for `validation`), keeping the
    frames whose names start with one of `sequences` (all if `None`). Group: the sequence (the name's first part).
    """
    title, folder = f"CamVid in {root!r}", split_folder(split)
    image_dir, label_dir = os.path.join(root, folder), os.path.join(root, folder + "annot")
    images = files_by_key(require_folder(title, image_dir), "*", IMAGE_EXTENSIONS)
    if sequences is not None:
        images = {key: path for key, path in images.items() if key.startswith(sequences)}
        if not images:
            raise ValueError(f"{title}, split {split!r}: no frames of the sequences {sequences}")
    labels = None
    if with_labels:
        files = files_by_key(require_folder(title, label_dir), "*.png", (".png",))
        labels = {CAMVID_IDS: {k: p for k, p in files.items() if sequences is None or k.startswith(sequences)}}
    return pair(
        title,
        images,
        labels,
        image_dir,
        label_for=lambda key: os.path.join(label_dir, f"{key}.png"),
        group=lambda key: key.split("_")[0],
    )


def read_idd_lite(root: str, split: str, with_labels: bool) -> Frames:
    """
    IDD-Lite: the download, `leftImg8bit/<split>/<seq>/<id>_image.jpg` with `gtFine/<split>/<seq>/<id>_label.png`
    (`val` for `validation`), or the local-folder layout `<split>/images/<seq>_<id>.jpg` with
    `<split>/labels/<seq>_<id>.png`. Labels are IDD level-1 ids. Frames in (sequence, frame) order; group: the sequence.
    """
    title = f"IDD-Lite in {root!r}"
    if not os.path.isdir(os.path.join(root, "leftImg8bit")):
        return read_folder(root, split, with_labels, encoding=IDD_LEVEL1_IDS, title=title)
    folder = split_folder(split)
    image_dir, label_dir = os.path.join(root, "leftImg8bit", folder), os.path.join(root, "gtFine", folder)
    images = files_by_key(
        require_folder(title, image_dir), "*/*_image.*", tuple(f"_image{e}" for e in IMAGE_EXTENSIONS)
    )
    labels = None
    if with_labels:
        labels = {IDD_LEVEL1_IDS: files_by_key(require_folder(title, label_dir), "*/*_label.png", ("_label.png",))}
    return pair(
        title,
        images,
        labels,
        image_dir,
        label_for=lambda key: os.path.join(label_dir, f"{key}_label.png"),
        group=lambda key: key.split(os.sep)[0],
    )


def read_folder(
    root: str, split: str, with_labels: bool, encoding: LabelEncoding | None = None, title: str | None = None
) -> Frames:
    """
    A local folder: `<split>/images/*` paired by file name with `<split>/labels/*` (or `images/` and `labels/` in the
    folder itself); without labels, `<split>/images/`, `images/` or the folder's own image files. Group: the file name
    up to its last `_` (`<seq>_<frame>`).
    """
    title = title or f"Local dataset {root!r}"
    base = os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root
    image_dir, label_dir = os.path.join(base, "images"), os.path.join(base, "labels")
    paired = os.path.isdir(image_dir) and os.path.isdir(label_dir)
    if not os.path.isdir(image_dir) and not with_labels:
        image_dir = base
    images = files_by_key(image_dir, "*", IMAGE_EXTENSIONS) if os.path.isdir(image_dir) else {}
    if (with_labels and not paired) or (image_dir == base and not images):
        raise MissingSplit(
            f"{title}: expected `{split}/images/` and `{split}/labels/` folders (image/mask pairs matched by file "
            "name; images alone with with_labels=False), a parquet file or folder, or a `save_to_disk` folder; found "
            f"{sorted(os.listdir(root))}"
        )
    if not images:
        raise ValueError(f"{title}: no image/label pairs ({', '.join(IMAGE_EXTENSIONS)}) in {base!r}")
    labels = {encoding: files_by_key(label_dir, "*", IMAGE_EXTENSIONS)} if with_labels else None
    return pair(
        title,
        images,
        labels,
        image_dir,
        label_for=lambda key: os.path.join(label_dir, f"{key}.png"),
        group=lambda key: key.rsplit("_", 1)[0],
    )


CITYSCAPES = Layout(
    "Cityscapes",
    read_cityscapes,
    markers=("leftImg8bit",),
    expected="`leftImg8bit/` and `gtFine/` (leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip)",
    folder_names=("cityscapes",),
)
ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


def acdc(conditions: tuple[str, ...]) -> Layout:
    return Layout(
        "ACDC",
        partial(read_acdc, conditions=conditions),
        markers=("rgb_anon",),
        expected="`rgb_anon/` and `gt/` (rgb_anon_trainvaltest.zip and gt_trainval.zip)",
        folder_names=("acdc", "ACDC"),
    )


BDD100K = Layout(
    "BDD100K",
    read_bdd100k,
    markers=("images/10k",),
    expected="`images/10k/` and `labels/sem_seg/masks/` (bdd100k_images_10k.zip, bdd100k_sem_seg_labels_trainval.zip)",
    folder_names=("bdd100k",),
)
MAPILLARY = Layout(
    "Mapillary Vistas",
    read_mapillary,
    markers=("training/images", "validation/images"),
    expected="`training/`, `validation/` and `config_v1.2.json` (the Mapillary Vistas download)",
    folder_names=("mapillary", "mapillary-vistas", "mapillary_vistas"),
)
GTA5 = Layout(
    "GTA5",
    read_gta5,
    markers=("images", "labels"),
    expected="`images/` and `labels/` (the Playing for Data download, its parts unpacked into one folder)",
    folder_names=("gta5", "GTA5"),
)
KITTI = Layout(
    "KITTI semantics",
    read_kitti,
    markers=("training/semantic", "training/image_2"),
    expected="`training/image_2/` and `training/semantic/` (data_semantics.zip)",
    folder_names=("data_semantics", "kitti", os.path.join("kitti", "data_semantics")),
    splits=("train", "test"),
    labelled_splits=("train",),
)


def segnet(sequences: tuple[str, ...] | None) -> Layout:
    return Layout(
        "CamVid (SegNet layout)",
        partial(read_segnet, sequences=sequences),
        markers=("trainannot", "valannot", "testannot"),
        expected="`train/` and `trainannot/`, `val/` and `valannot/`, `test/` and `testannot/` (SegNet's CamVid/)",
        folder_names=("CamVid", "camvid"),
        labelled_splits=SPLITS,
    )


IDD_LITE = Layout(
    "IDD-Lite",
    read_idd_lite,
    markers=("leftImg8bit", *(os.path.join(split, "images") for split in SPLITS)),
    expected="`idd20k_lite/leftImg8bit/` and `idd20k_lite/gtFine/` (the official download) or `<split>/images/` and "
    "`<split>/labels/` folders",
    folder_names=("idd20k_lite",),
)
