"""Domain datasets through `datasets`: the real driving benchmarks, CamVid read from its SegNet layout, IDD-Lite read
from its download, the embedded generated benchmark, and any Hub id or local path, all returned with columns `image`
(PIL RGB) and `label` (PIL mode L, ids of the chosen label space: Cityscapes train ids by default)."""

import glob
import io
import os
import re
from dataclasses import dataclass, field

import datasets
import numpy as np
from PIL import Image

from ..configuration_tmt import CITYSCAPES_CLASSES
from ..image_processing_tmt import to_rgb8
from .label_spaces import IGNORE_INDEX, UNPLACED, get_label_space, lookup_table, space_mapping
from .synthetic import DOMAINS, GENERATOR_VERSION, SPLIT_SEED_OFFSETS, generate_scene, scene_seed

logger = datasets.logging.get_logger(__name__)


# Cityscapes label ids -> train ids (cityscapesScripts' labels.py). GTA5 and ACDC's *_labelIds.png use the same ids.
CITYSCAPES_ID_TO_TRAIN_ID = lookup_table({
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
})  # fmt: skip

# Mapillary Vistas v1.2 (66 classes, index order of its config.json) -> Cityscapes train ids, the usual mapping of
# Cityscapes-Mapillary domain adaptation work: lane markings, manholes and crosswalks count as road; curbs and
# pedestrian areas as sidewalk; traffic-sign frames and utility poles as pole; only front-facing signs are signs.
MAPILLARY_TO_TRAIN_ID = lookup_table({
    2: 1,    # construction--barrier--curb -> sidewalk
    3: 4,    # construction--barrier--fence -> fence
    4: 4,    # construction--barrier--guard-rail -> fence
    6: 3,    # construction--barrier--wall -> wall
    7: 0,    # construction--flat--bike-lane -> road
    8: 0,    # construction--flat--crosswalk-plain -> road
    9: 1,    # construction--flat--curb-cut -> sidewalk
    11: 1,   # construction--flat--pedestrian-area -> sidewalk
    13: 0,   # construction--flat--road -> road
    14: 0,   # construction--flat--service-lane -> road
    15: 1,   # construction--flat--sidewalk -> sidewalk
    16: 2,   # construction--structure--bridge -> building
    17: 2,   # construction--structure--building -> building
    18: 2,   # construction--structure--tunnel -> building
    19: 11,  # human--person -> person
    20: 12,  # human--rider--bicyclist -> rider
    21: 12,  # human--rider--motorcyclist -> rider
    22: 12,  # human--rider--other-rider -> rider
    23: 0,   # marking--crosswalk-zebra -> road
    24: 0,   # marking--general -> road
    27: 10,  # nature--sky -> sky
    29: 9,   # nature--terrain -> terrain
    30: 8,   # nature--vegetation -> vegetation
    41: 0,   # object--manhole -> road
    45: 5,   # object--support--pole -> pole
    46: 5,   # object--support--traffic-sign-frame -> pole
    47: 5,   # object--support--utility-pole -> pole
    48: 6,   # object--traffic-light -> traffic light
    50: 7,   # object--traffic-sign--front -> traffic sign
    52: 18,  # object--vehicle--bicycle -> bicycle
    54: 15,  # object--vehicle--bus -> bus
    55: 13,  # object--vehicle--car -> car
    57: 17,  # object--vehicle--motorcycle -> motorcycle
    58: 16,  # object--vehicle--on-rails -> train
    61: 14,  # object--vehicle--truck -> truck
})  # fmt: skip


# CamVid's 11 classes in the SegNet release (0 sky, 1 building, 2 pole, 3 road, 4 pavement, 5 tree, 6 sign symbol,
# 7 fence, 8 car, 9 pedestrian, 10 bicyclist; 11 void) -> Cityscapes train ids.
CAMVID_TO_TRAIN_ID = lookup_table({0: 10, 1: 2, 2: 5, 3: 0, 4: 1, 5: 8, 6: 7, 7: 4, 8: 13, 9: 11, 10: 12})
CAMVID_CLASSES = tuple(sorted(int(t) for t in CAMVID_TO_TRAIN_ID if t != IGNORE_INDEX))
# CamVid's four sequences: 0001TP was filmed at dusk, the other three in daylight.
CAMVID_SEQUENCES = {"day": ("0006R0", "0016E5", "Seq05VD"), "dusk": ("0001TP",)}
ALL_CLASSES = tuple(range(len(CITYSCAPES_CLASSES)))
# IDD-Lite's labels are IDD's level-1 ids: 0 drivable ... 6 sky, 255 void (see label_spaces.IDD_LEVEL1_CLASSES).
IDD_LEVEL1_IDS = tuple(range(7))


@dataclass(frozen=True)
class Benchmark:
    """
    A registered domain: where it comes from (a default Hub id, or a `layout` read from `data_dir`), its columns, its
    label mapping from raw ids to ids of its native `label_space`, the ids it labels there (`classes`: mIoU is
    averaged over these) and, where declared, the raw ids its label files may hold (`raw_ids`; any other is an error).
    """

    name: str
    hub_id: str | None
    image_column: str = "image"
    label_column: str = "label"
    label_mapping: np.ndarray | None = field(default=None, repr=False)  # None: labels already are native ids
    note: str = ""
    classes: tuple[int, ...] = ALL_CLASSES
    # "hub"; "segnet": `<split>/*.png` images and `<split>annot/*.png` labels under data_dir; "idd": IDD-Lite's
    # download (`idd20k_lite/leftImg8bit|gtFine/<split>/<seq>/`) or the local-folder layout, under data_dir
    layout: str = "hub"
    sequences: tuple[str, ...] | None = None  # segnet layout: keep the frames of these sequences (file-name prefixes)
    label_space: str = "cityscapes"  # the space of its (mapped) labels, see label_spaces
    raw_ids: tuple[int, ...] | None = None  # the raw label ids its files may hold, void included (None: unchecked)
    raw_ids_note: str = ""  # what those are, for the error


# Default Hub ids. Licences forbid most of these benchmarks from being re-hosted, so community mirrors come and go;
# override with `hub_id=` (or `--source`/`--target` in the scripts) or give a local path.
BENCHMARKS = {
    # Chris1/cityscapes: the most used Cityscapes mirror on the Hub (e.g. by amd/HRNet); its
    # `semantic_segmentation` column holds gtFine label ids.
    "cityscapes": Benchmark(
        "cityscapes", "Chris1/cityscapes", "image", "semantic_segmentation", CITYSCAPES_ID_TO_TRAIN_ID
    ),
    # adhisetiawan/bdd10k-bitmasks: the BDD100K 10K semantic-segmentation split; BDD100K's sem_seg masks are already
    # Cityscapes train ids with 255 = unknown (doc.bdd100k.com, "Label Format").
    "bdd100k": Benchmark("bdd100k", "adhisetiawan/bdd10k-bitmasks", "image", "label", None),
    # No maintained mirror of these three was found on the Hub: pass hub_id= or a local path (imagefolder pairs,
    # parquet or save_to_disk). The label mappings are real: GTA5 and ACDC use Cityscapes label ids.
    "mapillary": Benchmark("mapillary", None, "image", "label", MAPILLARY_TO_TRAIN_ID, "Mapillary Vistas v1.2"),
    "acdc": Benchmark("acdc", None, "image", "label", CITYSCAPES_ID_TO_TRAIN_ID, "ACDC *_gt_labelIds.png"),
    "gta5": Benchmark("gta5", None, "image", "label", CITYSCAPES_ID_TO_TRAIN_ID, "GTA5 (Playing for Data) label ids"),
}
for _domain in DOMAINS:
    BENCHMARKS[f"synthetic/{_domain}"] = Benchmark(f"synthetic/{_domain}", None, note="generated offline")
# CamVid as users download it (SegNet's `CamVid/` folder: train, val, test and their *annot folders, 480x360), all
# sequences or split by the light they were filmed in. Pass data_dir= (`--data_dir` in the scripts).
for _name, _sequences in (("camvid", None), ("camvid/day", CAMVID_SEQUENCES["day"]),
                          ("camvid/dusk", CAMVID_SEQUENCES["dusk"])):  # fmt: skip
    BENCHMARKS[_name] = Benchmark(_name, None, label_mapping=CAMVID_TO_TRAIN_ID, note="CamVid, SegNet layout",
                                  classes=CAMVID_CLASSES, layout="segnet", sequences=_sequences, raw_ids=tuple(range(12)),
                                  raw_ids_note="CamVid's 11 SegNet classes 0-10 and void 11")  # fmt: skip
# IDD-Lite (Indian streets) as users download it (`idd20k_lite/`), or in the local-folder layout; pass data_dir=.
BENCHMARKS["idd-lite"] = Benchmark(
    "idd-lite", None, note="IDD-Lite, idd20k_lite/ or local-folder layout", classes=IDD_LEVEL1_IDS, layout="idd",
    label_space="idd_level1", raw_ids=(*IDD_LEVEL1_IDS, IGNORE_INDEX), raw_ids_note="IDD level-1 ids 0-6 and void 255",
)  # fmt: skip

# Default split sizes of the generated benchmark.
SYNTHETIC_SPLIT_SIZES = {"train": 400, "validation": 100, "test": 100}
# Common short names of the evaluation split, accepted for the generated benchmark.
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "eval": "validation"}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SLICE = re.compile(r"^(?P<split>[\w.-]+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


def parse_split(split: str) -> tuple[str, slice | None]:
    """`"train[20:40]"` -> ("train", slice(20, 40)); a plain name -> (name, None). Rows are counted in dataset order."""
    match = SLICE.match(split)
    if match is None:
        if "[" in split:
            raise ValueError(f"Split {split!r}: expected a name, or a name and a row range such as 'train[:20]'")
        return split, None
    bound = lambda text: int(text) if text else None  # noqa: E731
    return match["split"], slice(bound(match["start"]), bound(match["stop"]))


def labelled_classes(name_or_path: str, label_space: str = "cityscapes") -> tuple[int, ...] | None:
    """
    The ids a registered benchmark labels in `label_space` (mIoU is averaged over them); `None` for a Hub id or local
    path.
    """
    benchmark = BENCHMARKS.get(name_or_path.lower())
    if benchmark is None:
        return None
    mapped = space_mapping(benchmark.label_space, label_space)[list(benchmark.classes)]
    return tuple(sorted({int(c) for c in mapped if c not in (UNPLACED, IGNORE_INDEX)}))


def synthetic_rows(domain: str, split: str, num_samples: int, height: int, width: int, generator_version: int):
    """The scenes of a split; `generator_version` only keys the `datasets` cache, so that a changed generator regenerates."""
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
    kwargs = {"domain": domain, "split": split, "num_samples": num_samples or SYNTHETIC_SPLIT_SIZES[split],
              "height": size[0], "width": size[1], "generator_version": GENERATOR_VERSION}  # fmt: skip
    if streaming:
        return datasets.IterableDataset.from_generator(synthetic_rows, features=features, gen_kwargs=kwargs)
    return datasets.Dataset.from_generator(synthetic_rows, features=features, gen_kwargs=kwargs)


def imagefolder_pairs(root: str, split: str) -> datasets.Dataset:
    """`root/<split>/images/*` paired by file stem with `root/<split>/labels/*` (or `root/images`, `root/labels`)."""
    base = os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root
    image_dir, label_dir = os.path.join(base, "images"), os.path.join(base, "labels")
    if not (os.path.isdir(image_dir) and os.path.isdir(label_dir)):
        raise ValueError(
            f"Local dataset {root!r}: expected `{split}/images/` and `{split}/labels/` folders (image/mask pairs "
            f"matched by file name), a parquet file or folder, or a `save_to_disk` folder; found {sorted(os.listdir(root))}"
        )

    def by_stem(folder):
        files = [p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXTENSIONS)]
        return {os.path.splitext(os.path.basename(p))[0]: p for p in files}

    images, labels = by_stem(image_dir), by_stem(label_dir)
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise ValueError(f"Local dataset {root!r}: images and labels do not pair up by file name: {unpaired[:5]}")
    stems = sorted(images)
    if not stems:
        raise ValueError(f"Local dataset {root!r}: no image/label pairs ({', '.join(IMAGE_EXTENSIONS)}) in {base!r}")
    return datasets.Dataset.from_dict({"image": [images[s] for s in stems], "label": [labels[s] for s in stems]})


def segnet_pairs(data_dir: str, split: str, sequences: tuple[str, ...] | None) -> datasets.Dataset:
    """
    CamVid's SegNet layout: `data_dir/<split>/*.png` paired by file name with `data_dir/<split>annot/*.png` (`val`
    for `validation`), keeping the frames whose names start with one of `sequences` (all if `None`).
    """
    folder = {"validation": "val"}.get(split, split)
    image_dir, label_dir = os.path.join(data_dir, folder), os.path.join(data_dir, folder + "annot")
    if not (os.path.isdir(image_dir) and os.path.isdir(label_dir)):
        found = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else "no such folder"
        raise ValueError(f"CamVid (SegNet layout) in {data_dir!r}: expected `{folder}/` and `{folder}annot/` "
                         f"folders for split {split!r}; found {found}")  # fmt: skip
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if sequences is not None:
        stems = [s for s in stems if s.startswith(sequences)]
    missing = [s for s in stems if not os.path.isfile(os.path.join(label_dir, s + ".png"))]
    if missing:
        raise ValueError(f"CamVid in {data_dir!r}: no label in {folder}annot/ for {missing[:5]}")
    if not stems:
        raise ValueError(f"CamVid in {data_dir!r}, split {split!r}: no frames of the sequences {sequences}")
    images = {os.path.splitext(f)[0]: f for f in os.listdir(image_dir)}
    return datasets.Dataset.from_dict({"image": [os.path.join(image_dir, images[s]) for s in stems],
                                       "label": [os.path.join(label_dir, s + ".png") for s in stems]})  # fmt: skip


def idd_lite_pairs(data_dir: str, split: str) -> datasets.Dataset:
    """
    IDD-Lite from `data_dir`: the official download, `idd20k_lite/leftImg8bit/<split>/<seq>/<id>_image.jpg` paired with
    `idd20k_lite/gtFine/<split>/<seq>/<id>_label.png` (`val` for `validation`; `data_dir` is `idd20k_lite/` or holds
    it), or the local-folder layout `<split>/images/<seq>_<id>.jpg` + `<split>/labels/<seq>_<id>.png`. Frames come in
    (sequence, frame) order, so a row range of a split keeps each sequence's frames together.
    """
    root = next((r for r in (os.path.join(data_dir, "idd20k_lite"), data_dir)
                 if os.path.isdir(os.path.join(r, "leftImg8bit"))), None)  # fmt: skip
    if root is None:
        if os.path.isdir(os.path.join(data_dir, split, "images")):
            return imagefolder_pairs(data_dir, split)
        found = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else "no such folder"
        raise ValueError(f"IDD-Lite in {data_dir!r}: expected `idd20k_lite/leftImg8bit/` and `idd20k_lite/gtFine/` (the "
                         f"official download) or `{split}/images/` and `{split}/labels/` folders; found {found}")  # fmt: skip
    folder = {"validation": "val"}.get(split, split)
    image_dir, label_dir = os.path.join(root, "leftImg8bit", folder), os.path.join(root, "gtFine", folder)
    if not (os.path.isdir(image_dir) and os.path.isdir(label_dir)):
        raise ValueError(f"IDD-Lite in {root!r}: expected `leftImg8bit/{folder}/` and `gtFine/{folder}/` for split "
                         f"{split!r}; found {sorted(os.listdir(os.path.join(root, 'leftImg8bit')))} in leftImg8bit/")  # fmt: skip
    images = sorted(glob.glob(os.path.join(image_dir, "*", "*_image.*")))
    images = [p for p in images if p.lower().endswith(IMAGE_EXTENSIONS)]
    if not images:
        raise ValueError(f"IDD-Lite in {root!r}: no `<seq>/<id>_image.jpg` frames in {image_dir!r}")
    labels = [os.path.join(label_dir, os.path.relpath(os.path.dirname(p), image_dir),
                           os.path.basename(p).rsplit("_image.", 1)[0] + "_label.png") for p in images]  # fmt: skip
    missing = [p for p in labels if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"IDD-Lite in {root!r}: no label for {len(missing)} frame(s), e.g. {missing[:3]}")
    return datasets.Dataset.from_dict({"image": images, "label": labels})


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


def describe(value) -> str:
    """The file behind an undecoded `datasets.Image` value, for error messages."""
    path = value.get("path") if isinstance(value, dict) else value
    return f"file {path}" if isinstance(path, str) and path else "embedded image"


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
    data_dir: str | None = None,
    label_space: str = "cityscapes",
    native_labels: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """
    Loads one domain as a dataset with columns `image` (PIL RGB) and `label` (PIL mode L, ids of `label_space`, 255
    ignored); generated domains also carry `shift_mask`.

    Args:
        name_or_path: a registry name (`cityscapes`, `bdd100k`, `mapillary`, `acdc`, `gta5`, `camvid`, `camvid/day`,
            `camvid/dusk`, `idd-lite`, `synthetic/<domain>`), any Hub dataset id, or a local path: a folder of
            `<split>/images` + `<split>/labels` pairs, a parquet file or folder, or a `save_to_disk` folder.
        split: `train`, `validation` or `test` (Hub and parquet datasets may name others), optionally with a row range,
            e.g. `train[:20]` or `train[40:]` (rows in dataset order), to carve a split out of another.
        hub_id: overrides the registry's default Hub id.
        image_column, label_column: override the registry's (or `image`/`label`) column names.
        label_mapping: raw label id -> train id, as a 256-entry array or a dict (unlisted ids become 255).
        num_samples: keep only the first N rows (generated domains: generate N scenes).
        streaming: return an `IterableDataset`.
        synthetic_size: (height, width) of generated scenes.
        on_bad_sample: `"raise"` stops at the first unreadable or inconsistent row, naming it; `"skip"` drops such rows
            with a warning naming each, and logs how many were skipped.
        data_dir: the folder of a benchmark read from local files (CamVid: SegNet's `CamVid/` folder; IDD-Lite:
            `idd20k_lite/` or the folder holding it, or a folder of `<split>/images` + `<split>/labels`).
        label_space: the space the labels are returned in (`cityscapes` or `idd_level1`, see `label_spaces`).
        native_labels: the space the dataset's labels (after `label_mapping`) are in: default the registry entry's,
            and `cityscapes` (train ids) for a Hub id or local path. A label that `label_space` cannot place is an
            error naming the file.
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
        dataset = load_domain(name, split, hub_id=hub_id, image_column=image_column, label_column=label_column,
                              label_mapping=label_mapping, synthetic_size=synthetic_size, on_bad_sample=on_bad_sample,
                              data_dir=data_dir, label_space=label_space, native_labels=native_labels)  # fmt: skip
        selected = range(len(dataset))[rows]
        if len(selected) == 0:
            raise ValueError(f"Dataset {name!r}: the row range {rows.start}:{rows.stop} of split {split!r} "
                             f"({len(dataset)} rows) is empty")  # fmt: skip
        dataset = dataset.select(selected)
        return dataset.select(range(min(num_samples, len(dataset)))) if num_samples else dataset
    if name.startswith("synthetic/"):
        domain = name.split("/", 1)[1]
        if domain not in DOMAINS:
            raise ValueError(
                f"Unknown generated domain {name!r}; expected one of {[f'synthetic/{d}' for d in DOMAINS]}"
            )
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLIT_SEED_OFFSETS:
            raise ValueError(f"Generated domain {name!r} has splits {sorted(SPLIT_SEED_OFFSETS)}, not {split!r}")
        to_space = space_mapping(native_labels or "cityscapes", label_space)
        scenes = load_synthetic(domain, split, num_samples, streaming, synthetic_size)
        if label_space == (native_labels or "cityscapes"):
            return scenes
        return scenes.map(
            lambda scene: {"label": Image.fromarray(to_space[np.asarray(scene["label"])].astype(np.uint8))}
        )

    benchmark = BENCHMARKS.get(name.lower())
    if benchmark is None and not os.path.exists(name) and "/" not in name:
        raise ValueError(
            f"Unknown benchmark {name!r}: expected one of {sorted(BENCHMARKS)}, a Hub dataset id (owner/name) "
            "or a local path"
        )
    image_column = image_column or (benchmark.image_column if benchmark else "image")
    label_column = label_column or (benchmark.label_column if benchmark else "label")
    if label_mapping is None and benchmark is not None:
        label_mapping = benchmark.label_mapping
    if isinstance(label_mapping, dict):
        label_mapping = lookup_table(label_mapping)
    native = get_label_space(native_labels or (benchmark.label_space if benchmark else "cityscapes"))
    to_space = space_mapping(native.name, label_space)  # fails here, before any file is read, if there is no table
    raw_ids = benchmark.raw_ids if benchmark is not None and label_mapping is benchmark.label_mapping else None

    if benchmark is not None and benchmark.layout == "segnet":
        if data_dir is None:
            raise ValueError(f"Benchmark {name!r} ({benchmark.note}) is read from local files: pass data_dir= (the "
                             "folder holding train/, trainannot/, val/, valannot/, test/, testannot/)")  # fmt: skip
        dataset = segnet_pairs(data_dir, SPLIT_ALIASES.get(split, split), benchmark.sequences)
        dataset = dataset.to_iterable_dataset() if streaming else dataset
    elif benchmark is not None and benchmark.layout == "idd":
        if data_dir is None:
            raise ValueError(f"Benchmark {name!r} ({benchmark.note}) is read from local files: pass data_dir= (the "
                             "folder holding idd20k_lite/, or one of <split>/images and <split>/labels)")  # fmt: skip
        dataset = idd_lite_pairs(data_dir, SPLIT_ALIASES.get(split, split))
        dataset = dataset.to_iterable_dataset() if streaming else dataset
    elif os.path.exists(name):
        dataset = load_local(name, split, streaming)
    else:
        repo_id = hub_id or (benchmark.hub_id if benchmark else name)
        if repo_id is None:
            raise ValueError(
                f"Benchmark {name!r} ({benchmark.note}) has no default Hub id: pass hub_id='owner/name' or a local path"
            )
        dataset = datasets.load_dataset(repo_id, split=split, streaming=streaming)

    columns = list(dataset.column_names or dataset.features or [])
    missing = [c for c in (image_column, label_column) if c not in columns]
    if missing:
        raise ValueError(
            f"Dataset {name!r} has no column(s) {missing}; columns found: {columns}. "
            "Pass image_column=/label_column= to name them."
        )
    if not streaming and len(dataset) == 0:
        raise ValueError(f"Dataset {name!r}, split {split!r}, has no rows")
    if num_samples is not None:
        dataset = dataset.take(num_samples) if streaming else dataset.select(range(min(num_samples, len(dataset))))
    dataset = dataset.select_columns([image_column, label_column])
    dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    dataset = dataset.cast_column(label_column, datasets.Image(decode=False))

    def convert_or_skip(example, index):
        try:
            return {**convert(example, index), "_readable": True}
        except ValueError as error:
            if on_bad_sample == "raise":
                raise
            logger.warning(f"Skipping a bad sample: {error}")
            return {"image": None, "label": None, "_readable": False}

    def convert(example, index):
        image = to_rgb8(open_image(example[image_column], name, image_column, index))
        label = open_image(example[label_column], name, label_column, index)
        where = f"Dataset {name!r}, row {index} ({describe(example[label_column])})"
        if label.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{where}: label images must be single-channel ids (mode L, P or I), got mode "
                             f"{label.mode}; a colour-coded label must be converted to ids first")  # fmt: skip
        if label.size != image.size:
            raise ValueError(f"{where}: label size {label.size} differs from image size {image.size} (image "
                             f"{describe(example[image_column])}; columns {image_column!r}, {label_column!r})")  # fmt: skip
        ids = np.asarray(label).astype(np.int64)
        if raw_ids is not None:
            bad = np.setdiff1d(np.unique(ids), raw_ids)
            if bad.size:
                raise ValueError(f"{where}: label id(s) {bad[:10].tolist()} are not in {name}'s label set "
                                 f"({benchmark.raw_ids_note})")  # fmt: skip
        if label_mapping is not None:
            if ids.min() < 0 or ids.max() >= len(label_mapping):
                raise ValueError(f"{where}: raw label ids must lie in [0, {len(label_mapping)}) for the label "
                                 f"mapping, got values in [{ids.min()}, {ids.max()}]")  # fmt: skip
            ids = label_mapping[ids]
        count = len(native.classes)
        bad = np.unique(ids[(ids != IGNORE_INDEX) & ((ids < 0) | (ids >= count))])
        if bad.size:
            raise ValueError(
                f"{where}: label ids must be {native.id_name} in [0, {count}) or {IGNORE_INDEX} (ignored), got "
                f"{bad[:10].tolist()}. Pass label_mapping= to map raw ids to {native.id_name}."
            )
        placed = to_space[ids]
        if (placed == UNPLACED).any():
            raise ValueError(f"{where}: {native.id_name} {np.unique(ids[placed == UNPLACED])[:10].tolist()} have no "
                             f"class in the {label_space!r} label space")  # fmt: skip
        return {"image": image, "label": Image.fromarray(placed.astype(np.uint8), mode="L")}

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.Image(), "_readable": datasets.Value("bool")}
    )
    remove = [image_column, label_column]
    if streaming:
        converted = dataset.map(convert_or_skip, with_indices=True, remove_columns=remove, features=features)
        return converted.filter(lambda ok: ok, input_columns="_readable").remove_columns("_readable")
    converted = dataset.map(
        convert_or_skip, with_indices=True, remove_columns=remove, features=features, desc=f"Loading {name}"
    )
    readable = converted["_readable"]
    if not all(readable):
        logger.warning(f"Dataset {name!r}: skipped {readable.count(False)} of {len(readable)} unreadable samples")
        converted = converted.filter(lambda ok: ok, input_columns="_readable")
    return converted.remove_columns("_readable")


def load_local(path: str, split: str, streaming: bool):
    """A local dataset: `save_to_disk` folder, parquet file(s), or image/label pairs."""
    if os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "dataset_info.json"))
        or os.path.exists(os.path.join(path, "dataset_dict.json"))
    ):
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"Local dataset {path!r} has splits {list(loaded)}, not {split!r}")
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    parquet = (
        [path]
        if path.endswith(".parquet")
        else sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    )
    if parquet:
        split_files = [p for p in parquet if os.path.basename(p).startswith(split) or f"/{split}/" in p]
        files = split_files or parquet
        return datasets.load_dataset("parquet", data_files={split: files}, split=split, streaming=streaming)
    pairs = imagefolder_pairs(path, split)
    return pairs.to_iterable_dataset() if streaming else pairs
