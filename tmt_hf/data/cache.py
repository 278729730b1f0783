"""
An optional resized cache: a dataset's images and labels decoded and resized once to the size the transforms resize
to, stored losslessly in an Arrow file that later runs memory-map instead of decoding the source files again.
"""

import hashlib
import io
import operator
import os
import uuid

import datasets
import numpy as np
import torch
from datasets.arrow_writer import ArrowWriter
from PIL import Image
from torch.utils.data import DataLoader

from ..image_processing_tmt import to_rgb8
from .transforms import resize_image, resize_labels, to_tensors

logger = datasets.logging.get_logger(__name__)

CACHE_FOLDER = "tmt-hf-resized"
CACHE_VERSION = 1  # part of every key: a change to how rows are stored builds new cache files
NEAREST_COLUMNS = ("label", "shift_mask")  # label-like columns, resized by nearest neighbour
WRITER_BATCH_SIZE = 32  # rows per Arrow record batch: a few hundred MB of full-resolution frames at most


def resized_cache(
    dataset: datasets.Dataset,
    size: tuple[int, int],
    cache_dir: str | os.PathLike | None = None,
    compress: bool = True,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """
    `dataset` with its `image` column resized to `size` as `SegmentationTransform` resizes images (bilinear with
    antialiasing, in float, rounded to 8 bits) and its `label` and `shift_mask` columns as it resizes labels (nearest
    neighbour), stored losslessly in an Arrow file built on the first call and memory-mapped on the next ones. Every
    other column is kept as it is, a `focus` map too: the transforms resize it to the image's size themselves.

    A frame already at `size` keeps its pixels exactly and the transforms' resize to `size` is then the identity, so
    at the images' own resolution (e.g. `--image_size 1024 2048` on Cityscapes) the cached dataset yields the same
    tensors as `dataset` under `SegmentationTransform(size=size)`, for training (same crops, flips and appearance for
    the same seed and epoch) and evaluation. Smaller than the source, it cannot: the transforms resize in float
    from the source resolution, so evaluation images differ by the 8-bit rounding of the resized image (at most
    0.5/255 before normalisation; labels are equal), and training crops, which the transform scales from `size` by a
    random factor, are resampled twice (source to `size`, then to the scaled size) with the same crop windows.

    Args:
        dataset: a map-style dataset with an `image` column, a `datasets.Image` feature or file paths (as `label` and
            `shift_mask`, if present).
        size: (height, width), the transforms' `size` (`--image_size`).
        cache_dir: the folder of the cache files; default `tmt-hf-resized/` in the `datasets` cache
            (`HF_DATASETS_CACHE`). A file is named by the size and a key of `size`, `compress` and, per row and cached
            column, the file's path, modification time and byte size, or the hash of embedded image bytes.
        compress: images as PNG; `False`: as uncompressed TIFF, about 3x the disk space and decoded about 10x faster,
            worth it at or near the source resolution, where a PNG decodes about as slowly as the source file.
        num_proc: processes that decode, resize and encode the rows when the cache is built.
    """
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"resized_cache needs a map-style datasets.Dataset, got {type(dataset).__name__}")
    if "image" not in dataset.column_names:
        raise ValueError(f"The dataset has no 'image' column to cache; columns: {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError("The dataset has no rows to cache")
    size = checked_size(size)
    columns = [c for c in ("image", *NEAREST_COLUMNS) if c in dataset.column_names and holds_images(dataset, c)]
    if "image" not in columns:
        raise ValueError(
            f"The 'image' column must hold images (datasets.Image) or file paths, got {dataset.features['image']}"
        )
    undecoded = dataset.with_format(None).select_columns(columns)
    for column in columns:
        if isinstance(undecoded.features[column], datasets.Image):
            undecoded = undecoded.cast_column(column, datasets.Image(decode=False))
    folder = os.fspath(cache_dir or os.path.join(datasets.config.HF_DATASETS_CACHE, CACHE_FOLDER))
    key = cache_key(undecoded, columns, size, compress)
    path = os.path.join(folder, f"{size[0]}x{size[1]}-{key}.arrow")
    if os.path.exists(path):
        logger.info(f"Reusing the resized cache {path}")
    else:
        decoders = {c: datasets.Image(mode=getattr(dataset.features[c], "mode", None)) for c in columns}
        build(RowEncoder(undecoded, decoders, size, compress), path, num_proc)
    cached = datasets.Dataset.from_file(path)
    rest = dataset.with_format(None).remove_columns(columns)
    if not rest.column_names:
        return cached
    return datasets.concatenate_datasets([cached, rest], axis=1).select_columns(dataset.column_names)


def checked_size(size) -> tuple[int, int]:
    try:
        height, width = (operator.index(side) for side in size)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise ValueError(f"size must be (height, width), two positive integers, got {size!r}")
    return height, width


def holds_images(dataset: datasets.Dataset, column: str) -> bool:
    feature = dataset.features[column]
    return isinstance(feature, datasets.Image) or feature == datasets.Value("string")


def cache_key(undecoded: datasets.Dataset, columns: list[str], *settings) -> str:
    """
    A hash of what a cache holds: its `settings` (reprs), then each row's files (path, mtime, bytes), embedded bytes
    or other values.
    """
    digest = hashlib.blake2b(repr((CACHE_VERSION, columns, *settings)).encode(), digest_size=16)
    for batch in undecoded.iter(batch_size=256):
        for column in columns:
            for value in batch[column]:
                digest.update(value_identity(value))
    return digest.hexdigest()


def value_identity(value) -> bytes:
    if isinstance(value, dict) and value.get("bytes"):
        return hashlib.blake2b(value["bytes"], digest_size=16).digest()
    path = value.get("path") if isinstance(value, dict) else value
    stat = os.stat(path) if path and os.path.isfile(path) else None
    return repr((path, stat and (stat.st_mtime_ns, stat.st_size))).encode()


class RowEncoder(torch.utils.data.Dataset):
    """Row `index` of the undecoded columns, each decoded as `datasets` decodes it, resized and encoded."""

    def __init__(self, undecoded: datasets.Dataset, decoders: dict, size: tuple[int, int], compress: bool):
        self.undecoded, self.decoders, self.size, self.compress = undecoded, decoders, size, compress

    def __len__(self) -> int:
        return len(self.undecoded)

    def __getitem__(self, index: int) -> dict:
        row = self.undecoded[index]
        return {column: self.encode(column, row[column]) for column in self.decoders}

    def encode(self, column: str, value) -> dict | None:
        if value is None:
            return None
        image = self.decoders[column].decode_example(
            value if isinstance(value, dict) else {"path": value, "bytes": None}
        )
        if column == "image":
            return encoded(resized_rgb8(image, self.size), "PNG" if self.compress else "TIFF")
        return encoded(resized_ids(image, self.size), "PNG")


def resized_rgb8(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    rgb = to_rgb8(image)
    if rgb.size == (size[1], size[0]):
        return rgb
    pixels = resize_image(to_tensors(rgb, None)[0], size)
    return Image.fromarray((pixels * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def resized_ids(label: Image.Image, size: tuple[int, int]) -> Image.Image:
    ids = np.asarray(label).astype(np.int64)
    if ids.shape != size:
        ids = resize_labels(torch.from_numpy(ids), size).numpy()
    if ids.min(initial=0) < 0 or ids.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError(f"Label ids must lie in 0-65535 to be cached as PNG, got {ids.min()}-{ids.max()}")
    return Image.fromarray(ids.astype(np.uint8 if ids.max(initial=0) <= 255 else np.uint16))


def encoded(image: Image.Image, image_format: str) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"compress_level": 1} if image_format == "PNG" else {}))
    return {"bytes": buffer.getvalue(), "path": None}


def build(encoder: RowEncoder, path: str, num_proc: int | None) -> None:
    """Writes the encoded rows to a temporary file renamed to `path` when complete, so concurrent builders are safe."""
    logger.info(f"Building the resized cache {path} ({len(encoder)} rows at {encoder.size[0]}x{encoder.size[1]})")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    features = datasets.Features({column: datasets.Image() for column in encoder.decoders})
    rows = DataLoader(encoder, batch_size=None, num_workers=num_proc or 0)  # unbatched: rows come as they are
    try:
        with ArrowWriter(features=features, path=temporary, writer_batch_size=WRITER_BATCH_SIZE) as writer:
            for row in rows:
                writer.write(row)
            writer.finalize()
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
