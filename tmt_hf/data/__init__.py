"""Domain datasets: real benchmarks through `datasets`, the embedded generated benchmark, label spaces, and paired
transforms."""

from .cache import resized_cache
from .label_spaces import (
    CAMVID_TO_TRAIN_ID,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_LABEL_NAMES,
    CITYSCAPES_TO_IDD_LEVEL1,
    IDD_LEVEL1_CLASSES,
    LABEL_SPACES,
    MAPILLARY_NAME_TO_TRAIN_ID,
    MAPILLARY_TO_TRAIN_ID,
    LabelSpace,
    get_label_space,
    label_space_of,
    lookup_table,
    space_mapping,
)
from .readers import Frames, LabelEncoding, Layout
from .registry import (
    BENCHMARKS,
    CAMVID_CLASSES,
    SYNTHETIC_SPLIT_SIZES,
    Benchmark,
    data_dir_for,
    group_boundary,
    group_rows,
    labelled_classes,
    load_domain,
    parse_split,
)
from .synthetic import (
    DOMAINS,
    GENERATOR_VERSION,
    DomainStyle,
    generate_scene,
    generator_version_of,
    restyled_classes,
    scene_seed,
)
from .transforms import IGNORE_INDEX, SegmentationTransform, collate

SYNTHETIC_DOMAINS = [f"synthetic/{name}" for name in DOMAINS]

__all__ = [
    "BENCHMARKS",
    "CAMVID_CLASSES",
    "CAMVID_TO_TRAIN_ID",
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "CITYSCAPES_LABEL_NAMES",
    "CITYSCAPES_TO_IDD_LEVEL1",
    "DOMAINS",
    "GENERATOR_VERSION",
    "IDD_LEVEL1_CLASSES",
    "IGNORE_INDEX",
    "LABEL_SPACES",
    "MAPILLARY_NAME_TO_TRAIN_ID",
    "MAPILLARY_TO_TRAIN_ID",
    "SYNTHETIC_DOMAINS",
    "SYNTHETIC_SPLIT_SIZES",
    "Benchmark",
    "DomainStyle",
    "Frames",
    "LabelEncoding",
    "LabelSpace",
    "Layout",
    "SegmentationTransform",
    "collate",
    "data_dir_for",
    "generate_scene",
    "get_label_space",
    "group_boundary",
    "group_rows",
    "label_space_of",
    "labelled_classes",
    "load_domain",
    "resized_cache",
    "lookup_table",
    "parse_split",
    "generator_version_of",
    "restyled_classes",
    "scene_seed",
    "space_mapping",
]
