"""Domain datasets: real benchmarks through `datasets`, the embedded generated benchmark, and paired transforms."""

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
    lookup_table,
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
    "DOMAINS",
    "GENERATOR_VERSION",
    "IGNORE_INDEX",
    "MAPILLARY_TO_TRAIN_ID",
    "SYNTHETIC_DOMAINS",
    "SYNTHETIC_SPLIT_SIZES",
    "Benchmark",
    "DomainStyle",
    "SegmentationTransform",
    "collate",
    "generate_scene",
    "labelled_classes",
    "load_domain",
    "lookup_table",
    "parse_split",
    "generator_version_of",
    "restyled_classes",
    "scene_seed",
]
