"""Domain datasets: real benchmarks through `datasets`, the embedded generated benchmark, label spaces, and paired
transforms."""

from .label_spaces import (
    CITYSCAPES_TO_IDD_LEVEL1,
    IDD_LEVEL1_CLASSES,
    LABEL_SPACES,
    LabelSpace,
    get_label_space,
    label_space_of,
    lookup_table,
    space_mapping,
)
from .registry import (
    BENCHMARKS,
    CAMVID_CLASSES,
    CAMVID_TO_TRAIN_ID,
    CITYSCAPES_ID_TO_TRAIN_ID,
    MAPILLARY_TO_TRAIN_ID,
    SYNTHETIC_SPLIT_SIZES,
    Benchmark,
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
    "CITYSCAPES_TO_IDD_LEVEL1",
    "DOMAINS",
    "GENERATOR_VERSION",
    "IDD_LEVEL1_CLASSES",
    "IGNORE_INDEX",
    "LABEL_SPACES",
    "MAPILLARY_TO_TRAIN_ID",
    "SYNTHETIC_DOMAINS",
    "SYNTHETIC_SPLIT_SIZES",
    "Benchmark",
    "DomainStyle",
    "LabelSpace",
    "SegmentationTransform",
    "collate",
    "generate_scene",
    "get_label_space",
    "label_space_of",
    "labelled_classes",
    "load_domain",
    "lookup_table",
    "parse_split",
    "generator_version_of",
    "restyled_classes",
    "scene_seed",
    "space_mapping",
]
