"""Domain datasets: real benchmarks through `datasets`, the embedded generated benchmark, and paired transforms."""

from .registry import (
    BENCHMARKS,
    CITYSCAPES_ID_TO_TRAIN_ID,
    MAPILLARY_TO_TRAIN_ID,
    SYNTHETIC_SPLIT_SIZES,
    Benchmark,
    load_domain,
    lookup_table,
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
    "load_domain",
    "lookup_table",
    "generator_version_of",
    "restyled_classes",
    "scene_seed",
]
