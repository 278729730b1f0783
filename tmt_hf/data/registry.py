"""
Domain datasets through `datasets`: the driving benchmarks read from their downloads (`readers`), the embedded
generated benchmark, and any Hub id or local path, all returned with columns `image` (PIL RGB) and `label` (PIL mode L,
ids of the chosen label space), and for a download each frame's `group` (and ACDC's `condition`).

Rows hold file paths (or a Hub dataset's undecoded images): `load_domain` reads every label once to check it, and
keeps images and unmapped labels as paths, decoded on access. Labels that need a table are stored mapped. For the files
of a download or local folder this is done once: the checked rows, mapped labels as PNG, go to an Arrow file in the
`datasets` cache that later loads of the same files memory-map (`checked_cache_file`).
"""

import glob
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import datasets
import numpy as np
from PIL import Image

from ..configuration_tmt import CITYSCAPES_CLASSES
from ..image_processing_tmt import to_rgb8
from . import readers
from .cache import cache_key
from .label_spaces import (
    CAMVID_TO_TRAIN_ID,
    CITYSCAPES_ID_TO_TRAIN_ID,
    IGNORE_INDEX,
    MAPILLARY_TO_TRAIN_ID,
    UNPLACED,
    LabelSpace,
    get_label_space,
    lookup_table,
    space_mapping,
)
from .readers import ACDC_CONDITIONS, Frames, LabelEncoding, Layout, MissingSplit
from .synthetic import DOMAINS, GENERATOR_VERSION, SPLIT_SEED_OFFSETS, generate_scene, scene_seed

logger = datasets.logging.get_logger(__name__)

CAMVID_CLASSES = tuple(sorted(int(t) for t in CAMVID_TO_TRAIN_ID if t != IGNORE_INDEX))
# CamVid's four sequences: 0001TP was filmed at dusk, the other three in daylight.
CAMVID_SEQUENCES = {"day": ("0006R0", "0016E5", "Seq05VD"), "dusk": ("0001TP",)}
ALL_CLASSES = tuple(range(len(CITYSCAPES_CLASSES)))
LABEL_MODES = ("L", "P", "I", "I;16")
PER_FRAME_COLUMNS = ("group", "condition")  # kept from a download's rows
CHECKED_CACHE_FOLDER = "tmt-hf-checked"
CHECKED_CACHE_VERSION = 1  # part of every key: a change to how rows are checked or stored builds new cache files


@dataclass(frozen=True)
class Benchmark:
    """
    A registered domain: how its download is read from `data_dir` (`layout`), and for a Hub or local copy a default
    Hub id, its columns and its table from raw label ids to ids of its native `label_space`; `classes` are the ids it
    labels there (mIoU is averaged over these).
    """

    name: str
    hub_id: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    label_mapping: np.ndarray | None = field(default=None, repr=False)  # None: a copy's labels already are native ids
    note: str = ""
    classes: tuple[int, ...] = ALL_CLASSES
    layout: Layout | None = field(default=None, repr=False)
    label_space: str = "cityscapes"


# Licences forbid most of these benchmarks from being re-hosted, so Hub mirrors come and go: a download is read from
# `data_dir`, and only Cityscapes and BDD100K fall back to a Hub mirror without one (override with `hub_id=`).
BENCHMARKS = {
    # Chris1/cityscapes: the most used Cityscapes mirror on the Hub; its `semantic_segmentation` holds label ids.
    "cityscapes": Benchmark(
        "cityscapes",
        "Chris1/cityscapes",
        label_column="semantic_segmentation",
        label_mapping=CITYSCAPES_ID_TO_TRAIN_ID,
        note="Cityscapes",
        layout=readers.CITYSCAPES,
    ),
    # adhisetiawan/bdd10k-bitmasks: the 10K segmentation release; its masks are train ids with 255 = unknown.
    "bdd100k": Benchmark("bdd100k", "adhisetiawan/bdd10k-bitmasks", note="BDD100K 10K", layout=readers.BDD100K),
    "mapillary": Benchmark(
        "mapillary", label_mapping=MAPILLARY_TO_TRAIN_ID, note="Mapillary Vistas v1.2", layout=readers.MAPILLARY
    ),
    "gta5": Benchmark(
        "gta5", label_mapping=CITYSCAPES_ID_TO_TRAIN_ID, note="GTA5 (Playing for Data)", layout=readers.GTA5
    ),
    "kitti": Benchmark(
        "kitti", label_mapping=CITYSCAPES_ID_TO_TRAIN_ID, note="KITTI semantics 2015", layout=readers.KITTI
    ),
    # IDD-Lite (Indian streets): its download or the local-folder layout, in IDD's 7 level-1 classes.
    "idd-lite": Benchmark(
        "idd-lite", note="IDD-Lite", classes=tuple(range(7)), layout=readers.IDD_LITE, label_space="idd_level1"
    ),
}
# ACDC: all four adverse conditions, or one.
for _name, _conditions in (("acdc", ACDC_CONDITIONS), *((f"acdc/{c}", (c,)) for c in ACDC_CONDITIONS)):
    BENCHMARKS[_name] = Benchmark(
        _name,
        label_mapping=CITYSCAPES_ID_TO_TRAIN_ID,
        note=f"ACDC {'/'.join(_conditions)}",
        layout=readers.acdc(_conditions),
    )
# CamVid in SegNet's layout, all sequences or split by the light they were filmed in.
for _name, _sequences in (
    ("camvid", None),
    ("camvid/day", CAMVID_SEQUENCES["day"]),
    ("camvid/dusk", CAMVID_SEQUENCES["dusk"]),
):
    BENCHMARKS[_name] = Benchmark(
        _name,
        label_mapping=CAMVID_TO_TRAIN_ID,
        note="CamVid, SegNet layout",
        classes=CAMVID_CLASSES,
        layout=readers.segnet(_sequences),
    )
for _domain in DOMAINS:
    BENCHMARKS[f"synthetic/{_domain}"] = Benchmark(f"synthetic/{_domain}", note="generated offline")

# Default split sizes of the generated benchmark.
SYNTHETIC_SPLIT_SIZES = {"train": 400, "validation": 100, "test": 100}
# Common short names of the evaluation split.
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "eval": "validation"}

SLICE = re.compile(r"^(?P<split>[\w.-]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")
# A folder, {registry name: folder}, or a list of a folder and `NAME=DIR` entries (see `data_dir_for`).
DataDir = str | os.PathLike | Mapping[str, str] | Sequence[str] | None
DATA_DIR_ENTRY = re.compile(r"^(?P<name>[A-Za-z][\w.-]*(?:/[\w.-]+)?)=(?P<folder>.+)$")


def parse_split(split: str) -> tuple[str, slice | None]:
    """`"train[20:40]"` -> ("train", slice(20, 40)); a plain name -> (name, None). Rows are counted in dataset order."""
    match = SLICE.match(split)
    if match is None:
        if "[" in split:
            raise ValueError(f"Split {split!r}: expected a name, or a name and a row range such as 'train[:20]'")
        return split, None
    bound = lambda text: int(text) if text else None  # noqa: E731
    return match["split"], slice(bound(match["start"]), bound(match["stop"]))


def data_dir_entries(data_dir: DataDir) -> dict[str | None, str]:
    """
    `data_dir` as {registry name or family: folder}, with key `None` for a folder that serves every benchmark: from a
    folder, a mapping, or a list of folders and `NAME=DIR` entries.
    """
    if isinstance(data_dir, Mapping):
        pairs = list(data_dir.items())
    else:
        pairs = []
        for value in [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir):
            value = os.fspath(value)
            match = DATA_DIR_ENTRY.match(value)
            pairs.append((match["name"], match["folder"]) if match and not os.path.exists(value) else (None, value))
    known = set(BENCHMARKS) | {name.split("/")[0] for name in BENCHMARKS}
    unknown = sorted(str(name) for name, _ in pairs if name is not None and name.lower() not in known)
    if unknown:
        raise ValueError(
            f"data_dir names {unknown}, not registry names; expected NAME=DIR with NAME one of {sorted(known)}"
        )
    if sum(name is None for name, _ in pairs) > 1:
        raise ValueError(f"data_dir: give one folder for every benchmark, or NAME=DIR entries; got {pairs}")
    return {name.lower() if name else None: os.fspath(folder) for name, folder in pairs}


def data_dir_for(name: str, data_dir: DataDir) -> str | None:
    """
    The folder to read benchmark `name` from. `data_dir` is a folder (the download itself, or a folder holding the
    downloads under their usual names, e.g. `cityscapes/` and `acdc/`), a mapping from registry names to folders, or a
    list of such a folder and `NAME=DIR` entries (`["cityscapes=/data/cs", "acdc=/data/acdc"]`). A name takes its
    own entry, then its family's (`acdc` for `acdc/night`), then the plain folder.
    """
    if data_dir is None:
        return None
    entries = data_dir_entries(data_dir)
    return next((entries[key] for key in (name.lower(), name.lower().split("/")[0], None) if key in entries), None)


def labelled_classes(name_or_path: str, label_space: str | None = None) -> tuple[int, ...] | None:
    """
    The ids a registered benchmark labels in `label_space` (default: its own; mIoU is averaged over them); `None` for
    a Hub id or local path.
    """
    benchmark = BENCHMARKS.get(name_or_path.lower())
    if benchmark is None:
        return None
    mapped = space_mapping(benchmark.label_space, label_space or benchmark.label_space)[list(benchmark.classes)]
    return tuple(sorted({int(c) for c in mapped if c not in (UNPLACED, IGNORE_INDEX)}))


def group_rows(dataset: datasets.Dataset, column: str = "group") -> dict[str, list[int]]:
    """
    The row indices of each value of a per-frame column, in order of first appearance: e.g. of each `condition` of an
    `acdc` evaluation split, to report mIoU per condition.
    """
    if column not in dataset.column_names:
        raise ValueError(f"The dataset has no {column!r} column; columns: {dataset.column_names}")
    rows = {}
    for index, value in enumerate(dataset[column]):
        rows.setdefault(value, []).append(index)
    return rows


def group_boundary(dataset: datasets.Dataset, min_rows: int, column: str = "group") -> int:
    """
    The row where the last whole groups holding at least `min_rows` rows begin: with it as N, `train[:N]` and
    `train[N:]` split a dataset without an official validation split by group (a download's rows come in group order).
    """
    rows = group_rows(dataset, column)
    starts = sorted(indices[0] for indices in rows.values())
    if any(indices != list(range(indices[0], indices[0] + len(indices))) for indices in rows.values()):
        raise ValueError(f"The dataset's rows are not in {column!r} order: its groups cannot be split by a row range")
    boundary = next((start for start in reversed(starts) if len(dataset) - start >= min_rows), None)
    if boundary is None or boundary == 0:
        raise ValueError(f"{min_rows} rows of whole groups would leave no training rows of the {len(dataset)}")
    return boundary


def synthetic_rows(domain: str, split: str, num_samples: int, height: int, width: int, generator_version: int):
    """The scenes of a split; `generator_version` only keys the `datasets` cache (a changed generator regenerates)."""
    for index in range(num_samples):
        scene = generate_scene(scene_seed(domain, split, index), domain, height, width)
        yield {
            "image": Image.fromarray(scene["image"]),
            "label": Image.fromarray(scene["label"], mode="L"),
            "shift_mask": Image.fromarray(scene["shift_mask"].astype(np.uint8) * 255, mode="L"),
        }


def load_synthetic(domain: str, split: str, num_samples: int | None, streaming: bool, size: tuple[int, int]):
    """The generated benchmark: a `datasets.Dataset` with `image`, `label` and `shift_mask` columns."""
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image(), "shift_mask": datasets.Image()})
    kwargs = {
        "domain": domain,
        "split": split,
        "num_samples": num_samples or SYNTHETIC_SPLIT_SIZES[split],
        "height": size[0],
        "width": size[1],
        "generator_version": GENERATOR_VERSION,
    }
    if streaming:
        return datasets.IterableDataset.from_generator(synthetic_rows, features=features, gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(synthetic_rows, features=features, gen_kwargs=kwargs)


def open_image(value, dataset_name: str, column: str, index: int) -> Image.Image:
    """Decodes an undecoded `datasets.Image` value ({"bytes", "path"}), naming the file when it cannot be read."""
    if isinstance(value, Image.Image):
        return value
    path = value.get("path") if isinstance(value, dict) else value
    data = value.get("bytes") if isinstance(value, dict) else None
    try:
        image = Image.open(io.BytesIO(data) if data else path)
        image.load()
        return image
    except Exception as error:
        raise ValueError(
            f"Cannot read the {column!r} image {path or f'of row {index}'} in dataset {dataset_name!r}: {error}"
        ) from error


def image_header(value, dataset_name: str, column: str, index: int) -> tuple[tuple[int, int], str]:
    """The size and mode of an undecoded `datasets.Image` value, from its header only; naming the file if unreadable."""
    path = value.get("path") if isinstance(value, dict) else value
    data = value.get("bytes") if isinstance(value, dict) else None
    try:
        with Image.open(io.BytesIO(data) if data else path) as image:
            return image.size, image.mode
    except Exception as error:
        raise ValueError(
            f"Cannot read the {column!r} image {path or f'of row {index}'} in dataset {dataset_name!r}: {error}"
        ) from error


def describe(value) -> str:
    """The file behind an undecoded `datasets.Image` value, for error messages."""
    path = value.get("path") if isinstance(value, dict) else value
    return f"file {path}" if isinstance(path, str) and path else "embedded image"


def present_ids(ids: np.ndarray) -> np.ndarray:
    """The distinct ids of a label array, sorted."""
    if ids.dtype == np.uint8:
        return np.flatnonzero(np.bincount(ids.ravel(), minlength=256))
    return np.unique(ids)


def encode_label(ids: np.ndarray) -> dict:
    """A mapped label as PNG bytes for a `datasets.Image` column."""
    buffer = io.BytesIO()
    Image.fromarray(ids.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


@dataclass
class LabelRules:
    """
    How one dataset's label files are checked and mapped: the raw ids they may hold, the table into native ids, the
    native space and the space they are returned in. Every error names the row and the file.
    """

    dataset: str
    encoding: LabelEncoding | None  # its raw ids are checked; None: unchecked
    mapping: np.ndarray | None  # raw ids -> native ids; None: they already are
    native: LabelSpace
    space: str
    columns: tuple[str, str] = ("image", "label")

    def __post_init__(self):
        self.to_space = space_mapping(self.native.name, self.space)

    def where(self, index: int, value) -> str:
        return f"Dataset {self.dataset!r}, row {index} ({describe(value)})"

    def read(self, value, index: int, image_value, image_size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
        """The label's ids; an error for a colour-coded label or one whose size differs from its image's."""
        label = open_image(value, self.dataset, self.columns[1], index)
        if label.mode not in LABEL_MODES:
            raise ValueError(
                f"{self.where(index, value)}: label images must be single-channel ids (mode L, P or I), got mode "
                f"{label.mode}; a colour-coded label must be converted to ids first"
            )
        if label.size != image_size:
            raise ValueError(
                f"{self.where(index, value)}: label size {label.size} differs from image size {image_size} (image "
                f"{describe(image_value)}; columns {self.columns[0]!r}, {self.columns[1]!r})"
            )
        return label, np.asarray(label)

    def check(self, present: np.ndarray, where: str) -> None:
        """An error for raw ids outside the dataset's set, or ids that have no native id or no class in the space."""
        if self.encoding is not None and self.encoding.raw_ids is not None:
            bad = np.setdiff1d(present, self.encoding.raw_ids)
            if bad.size:
                raise ValueError(
                    f"{where}: label id(s) {bad[:10].tolist()} are not in {self.dataset}'s label set "
                    f"({self.encoding.description})"
                )
        native = present
        if self.mapping is not None and present.size:
            if present.min() < 0 or present.max() >= len(self.mapping):
                raise ValueError(
                    f"{where}: raw label ids must lie in [0, {len(self.mapping)}) for the label mapping, got values "
                    f"in [{present.min()}, {present.max()}]"
                )
            native = self.mapping[present]
        count, id_name = len(self.native.classes), self.native.id_name
        bad = np.unique(native[(native != IGNORE_INDEX) & ((native < 0) | (native >= count))])
        if bad.size:
            raise ValueError(
                f"{where}: label ids must be {id_name} in [0, {count}) or {IGNORE_INDEX} (ignored), got "
                f"{bad[:10].tolist()}. Pass label_mapping= to map raw ids to {id_name}."
            )
        unplaced = np.unique(native[self.to_space[native] == UNPLACED])
        if unplaced.size:
            raise ValueError(
                f"{where}: {id_name} {unplaced[:10].tolist()} have no class in the {self.space!r} label space"
            )

    def unchanged(self, present: np.ndarray) -> bool:
        """Whether the ids come out as they are."""
        return self.mapping is None and np.array_equal(self.to_space[present], present)

    def apply(self, ids: np.ndarray) -> np.ndarray:
        return self.to_space[self.mapping[ids] if self.mapping is not None else ids].astype(np.uint8)

    def identity(self) -> tuple:
        """What the checks and the mapping depend on, for a cache key."""
        raw_ids = self.encoding.raw_ids if self.encoding is not None else None
        mapping = self.mapping.tolist() if self.mapping is not None else None
        return raw_ids, mapping, self.native.name, self.space, self.to_space.tolist(), self.columns


def native_space(name: str) -> str:
    """The label space of a dataset's labels: its registry entry's, or Cityscapes train ids."""
    benchmark = BENCHMARKS.get(name.lower())
    return benchmark.label_space if benchmark is not None else "cityscapes"


def label_rules(
    name: str,
    frames: Frames | None,
    image_column: str | None = None,
    label_column: str | None = None,
    label_mapping: np.ndarray | dict | None = None,
    native_labels: str | None = None,
    label_space: str | None = None,
) -> LabelRules:
    """
    The columns, table and checks of a dataset's labels: a download's own encoding (raw ids checked), else the given
    `label_mapping` or the registry entry's table for a Hub or local copy.
    """
    benchmark = BENCHMARKS.get(name.lower())
    if frames is not None:
        image_column, label_column = "image", "label"
    else:
        image_column = image_column or (benchmark.image_column if benchmark else "image")
        label_column = label_column or (benchmark.label_column if benchmark else "label")
    if isinstance(label_mapping, dict):
        label_mapping = lookup_table(label_mapping)
    encoding = frames.encoding if frames is not None and label_mapping is None else None
    if label_mapping is None:
        label_mapping = encoding.mapping if encoding is not None else benchmark.label_mapping if benchmark else None
    native = get_label_space(native_labels or native_space(name))
    return LabelRules(name, encoding, label_mapping, native, label_space or native.name, (image_column, label_column))


def read_download(benchmark: Benchmark, data_dir: str, split: str, with_labels: bool) -> Frames:
    """One split of a registered benchmark's download under `data_dir`."""
    layout = benchmark.layout
    if split not in layout.splits:
        carve = "; carve one from `train` by group (README, Data)" if split == "validation" else ""
        raise MissingSplit(f"{layout.title} has the splits {list(layout.splits)}, not {split!r}{carve}")
    if with_labels and split not in layout.labelled_splits:
        raise ValueError(
            f"{layout.title}: the {split!r} split has no labels; pass with_labels=False to read its images only"
        )
    return layout.read(layout.find_root(data_dir), split, with_labels)


def load_local(path: str, split: str, streaming: bool, with_labels: bool) -> tuple[datasets.Dataset, Frames | None]:
    """A local dataset: a `save_to_disk` folder, parquet file(s), or a folder of images (and labels)."""
    if os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name)) for name in ("dataset_info.json", "dataset_dict.json")
    ):
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise MissingSplit(f"Local dataset {path!r} has splits {list(loaded)}, not {split!r}")
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded, None
    parquet = (
        [path]
        if path.endswith(".parquet")
        else sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    )
    if parquet:
        split_files = [p for p in parquet if os.path.basename(p).startswith(split) or f"/{split}/" in p]
        files = {split: split_files or parquet}
        return datasets.load_dataset("parquet", data_files=files, split=split, streaming=streaming), None
    frames = readers.read_folder(path, split, with_labels)
    return frames.to_dataset(), frames


def read_split(
    name: str,
    split: str,
    *,
    hub_id: str | None = None,
    data_dir: DataDir = None,
    streaming: bool = False,
    with_labels: bool = True,
) -> tuple[datasets.Dataset | datasets.IterableDataset, Frames | None]:
    """
    The rows of one split, before their images and labels are checked: a download's file paths (with its `Frames`,
    whose `problems()` list unpaired files), a local dataset, or a Hub dataset.
    """
    benchmark = BENCHMARKS.get(name.lower())
    if benchmark is None and not os.path.exists(name) and "/" not in name:
        raise ValueError(
            f"Unknown benchmark {name!r}: expected one of {sorted(BENCHMARKS)}, a Hub dataset id (owner/name) "
            "or a local path"
        )
    if benchmark is not None and benchmark.layout is not None and hub_id is None:
        folder = data_dir_for(benchmark.name, data_dir)
        if folder is not None or benchmark.hub_id is None:
            if folder is None:
                raise ValueError(
                    f"Benchmark {name!r} ({benchmark.note}) is read from its download and has no default Hub id: pass "
                    f"data_dir= (the folder holding {benchmark.layout.expected}, or NAME=DIR entries) or hub_id="
                )
            frames = read_download(benchmark, folder, SPLIT_ALIASES.get(split, split), with_labels)
            return frames.to_dataset(), frames
    if os.path.exists(name):
        return load_local(name, split, streaming, with_labels)
    repo_id = hub_id or (benchmark.hub_id if benchmark else name)
    if repo_id is None:
        raise ValueError(
            f"Benchmark {name!r} ({benchmark.note}) has no default Hub id: pass hub_id='owner/name' or a local path"
        )
    return datasets.load_dataset(repo_id, split=split, streaming=streaming), None


def load_domain(
    name_or_path: str,
    split: str = "train",
    *,
    hub_id: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    label_mapping: np.ndarray | dict | None = None,
    num_samples: int | None = None,
    streaming: bool = False,
    synthetic_size: tuple[int, int] = (256, 512),
    on_bad_sample: str = "raise",
    data_dir: DataDir = None,
    label_space: str | None = None,
    native_labels: str | None = None,
    with_labels: bool = True,
) -> datasets.Dataset | datasets.IterableDataset:
    """
    Loads one domain as a dataset with columns `image` (PIL RGB) and `label` (PIL mode L, ids of `label_space`, 255
    ignored); a download's rows also carry `group` (city, recording or sequence; ACDC: `condition` too), generated
    domains `shift_mask`.

    Args:
        name_or_path: a registry name (`cityscapes`, `acdc`, `acdc/{fog,night,rain,snow}`, `bdd100k`, `mapillary`,
            `gta5`, `kitti`, `camvid`, `camvid/day`, `camvid/dusk`, `idd-lite`, `synthetic/<domain>`), any Hub dataset
            id, or a local path: a folder of `<split>/images` + `<split>/labels` pairs, a parquet file or folder, or a
            `save_to_disk` folder.
        split: `train`, `validation` or `test` (Hub and parquet datasets may name others), optionally with a row range,
            e.g. `train[:20]` or `train[40:]` (rows in dataset order), to carve a split out of another.
        hub_id: reads a registered benchmark from this Hub id (or local copy) instead of its download.
        image_column, label_column: override the registry's (or `image`/`label`) column names.
        label_mapping: raw label id -> native id, as a 256-entry array or a dict (unlisted ids become 255).
        num_samples: keep only the first N rows (generated domains: generate N scenes).
        streaming: return an `IterableDataset`.
        synthetic_size: (height, width) of generated scenes.
        on_bad_sample: `"raise"` stops at the first unreadable or inconsistent row, naming it; `"skip"` drops such rows
            with a warning naming each, and logs how many were skipped.
        data_dir: where a benchmark's download is: its folder, a folder holding downloads under their usual names
            (`cityscapes/`, `acdc/`, ...), a mapping from registry names to folders, or a list of `NAME=DIR` entries
            (see `data_dir_for`). Cityscapes and BDD100K without one are read from their Hub mirror.
        label_space: the space the labels are returned in (`cityscapes` or `idd_level1`, see `label_spaces`); default:
            the dataset's native space.
        native_labels: the space the dataset's labels (after `label_mapping`) are in: default the registry entry's,
            and `cityscapes` (train ids) for a Hub id or local path. A label that `label_space` cannot place is an
            error naming the file.
        with_labels: `False` reads images only (an unlabelled target, or a split without labels): no `label` column.
    """
    if on_bad_sample not in ("raise", "skip"):
        raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be a positive number of rows (or None for all), got {num_samples}")
    name = name_or_path
    split, rows = parse_split(split)
    if rows is not None:
        if streaming:
            raise ValueError(f"A row range ({split}[...]) needs a map-style dataset, not streaming=True")
        dataset = load_domain(
            name,
            split,
            hub_id=hub_id,
            image_column=image_column,
            label_column=label_column,
            label_mapping=label_mapping,
            synthetic_size=synthetic_size,
            on_bad_sample=on_bad_sample,
            data_dir=data_dir,
            label_space=label_space,
            native_labels=native_labels,
            with_labels=with_labels,
        )
        selected = range(len(dataset))[rows]
        if len(selected) == 0:
            raise ValueError(
                f"Dataset {name!r}: the row range {rows.start}:{rows.stop} of split {split!r} ({len(dataset)} rows) "
                "is empty"
            )
        dataset = dataset.select(selected)
        return dataset.select(range(min(num_samples, len(dataset)))) if num_samples else dataset
    if name.startswith("synthetic/"):
        return load_generated(
            name, split, num_samples, streaming, synthetic_size, label_space, native_labels, with_labels
        )

    native = get_label_space(native_labels or native_space(name))
    space_mapping(native.name, label_space or native.name)  # fails here, before any file is read, if there is no table
    dataset, frames = read_split(
        name, split, hub_id=hub_id, data_dir=data_dir, streaming=streaming, with_labels=with_labels
    )
    if frames is not None and streaming:
        dataset = dataset.to_iterable_dataset()
    problems = frames.problems() if frames is not None else []
    if problems:
        raise ValueError("\n".join(problems))
    rules = label_rules(name, frames, image_column, label_column, label_mapping, native.name, label_space)
    image_column, label_column = rules.columns

    columns = list(dataset.column_names or dataset.features or [])
    missing = [c for c in (image_column, label_column if with_labels else None) if c and c not in columns]
    if missing:
        raise ValueError(
            f"Dataset {name!r} has no column(s) {missing}; columns found: {columns}. "
            "Pass image_column=/label_column= to name them."
        )
    if not streaming and len(dataset) == 0:
        raise ValueError(f"Dataset {name!r}, split {split!r}, has no rows")
    if num_samples is not None:
        dataset = dataset.take(num_samples) if streaming else dataset.select(range(min(num_samples, len(dataset))))
    kept = [c for c in PER_FRAME_COLUMNS if c in columns]
    read = [image_column, *([label_column] if with_labels else [])]
    dataset = dataset.select_columns([*read, *kept])
    for column in read:
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    rules = rules if with_labels else None
    from_files = frames is not None and not streaming
    cache_file = checked_cache_file(dataset, name, rules, on_bad_sample) if from_files else None
    return check_rows(dataset, name, rules, image_column, label_column, kept, on_bad_sample, streaming, cache_file)


def load_generated(name, split, num_samples, streaming, size, label_space, native_labels, with_labels):
    """A generated domain (`synthetic/<domain>`), its labels mapped into `label_space`."""
    domain = name.split("/", 1)[1]
    if domain not in DOMAINS:
        raise ValueError(f"Unknown generated domain {name!r}; expected one of {[f'synthetic/{d}' for d in DOMAINS]}")
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLIT_SEED_OFFSETS:
        raise ValueError(f"Generated domain {name!r} has splits {sorted(SPLIT_SEED_OFFSETS)}, not {split!r}")
    native = native_labels or "cityscapes"
    to_space = space_mapping(native, label_space or native)
    scenes = load_synthetic(domain, split, num_samples, streaming, size)
    if not with_labels:
        return scenes.remove_columns("label")
    if (label_space or native) == native:
        return scenes
    return scenes.map(lambda scene: {"label": Image.fromarray(to_space[np.asarray(scene["label"])].astype(np.uint8))})


def checked_cache_file(dataset: datasets.Dataset, name: str, rules: LabelRules | None, on_bad_sample: str) -> str:
    """
    The Arrow file that caches the checked rows of a split read from files: in `tmt-hf-checked/` of the `datasets`
    cache (`HF_DATASETS_CACHE`), named by a key of the dataset's name, its label rules (raw ids, tables, spaces,
    columns), `on_bad_sample`, and each row's files (path, modification time, byte size) and per-frame values: a
    changed file or table is a new cache file.
    """
    settings = (CHECKED_CACHE_VERSION, name, rules.identity() if rules is not None else None, on_bad_sample)
    key = cache_key(dataset, dataset.column_names, *settings)
    return os.path.join(datasets.config.HF_DATASETS_CACHE, CHECKED_CACHE_FOLDER, f"{key}.arrow")


def check_rows(dataset, name, rules, image_column, label_column, kept, on_bad_sample, streaming, cache_file=None):
    """
    Each row's image header read and its label decoded and checked; images, and labels that come out unchanged, stay as
    the files they are, mapped labels are stored as PNG. A bad row raises, or with `on_bad_sample="skip"` is dropped.
    With `cache_file`, the checked rows are written to it, or read from it if it exists (`datasets.Dataset.map`'s
    cache), so they are memory-mapped from disk; the skipped rows' warnings are repeated from it.
    """

    def convert(example, index):
        image_value = example[image_column]
        size, mode = image_header(image_value, name, image_column, index)
        image = image_value if mode == "RGB" else to_rgb8(open_image(image_value, name, image_column, index))
        if rules is None:
            return {"image": image}
        label_value = example[label_column]
        label, ids = rules.read(label_value, index, image_value, size)
        present = present_ids(ids)
        rules.check(present, rules.where(index, label_value))
        unchanged = label.mode == "L" and rules.unchanged(present)
        return {"image": image, "label": label_value if unchanged else encode_label(rules.apply(ids))}

    def convert_or_skip(example, index):
        try:
            return {**convert(example, index), "_problem": None}
        except ValueError as error:
            if on_bad_sample == "raise":
                raise
            return {"image": None, "label": None, "_problem": str(error)}

    def readable(problem: str | None) -> bool:
        if problem is not None:
            logger.warning(f"Skipping a bad sample: {problem}")
        return problem is None

    outputs = {"image": datasets.Image()} | ({"label": datasets.Image()} if rules is not None else {})
    features = datasets.Features(
        {**{c: dataset.features[c] for c in kept}, **outputs, "_problem": datasets.Value("string")}
    )
    remove = [image_column, *([label_column] if rules is not None else [])]
    if streaming:
        converted = dataset.map(convert_or_skip, with_indices=True, remove_columns=remove, features=features)
        return converted.filter(readable, input_columns="_problem").remove_columns("_problem")
    converted = dataset.map(
        convert_or_skip,
        with_indices=True,
        remove_columns=remove,
        features=features,
        cache_file_name=cache_file,
        desc=f"Loading {name}",
    )
    good_rows = [index for index, problem in enumerate(converted["_problem"]) if readable(problem)]
    if len(good_rows) < len(converted):
        logger.warning(
            f"Dataset {name!r}: skipped {len(converted) - len(good_rows)} of {len(converted)} unreadable samples"
        )
        converted = converted.select(good_rows)
    return converted.remove_columns("_problem")
