"""A download's split is checked and mapped once: later loads of the same files read the checked rows from an Arrow file
in the `datasets` cache, memory-mapped, until a file or the label table changes."""

import os

import datasets
import numpy as np
import pytest
from download_fixtures import write, write_cityscapes, write_gta5, write_mapillary
from test_downloads import CITYSCAPES_PUBLISHED, HRDA_MAPILLARY, rows

from tmt_hf.data import load_domain, registry


@pytest.fixture
def checked_cache(tmp_path, monkeypatch):
    """The folder of the checked rows, in a `datasets` cache of its own."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    return tmp_path / "hf" / registry.CHECKED_CACHE_FOLDER


@pytest.fixture
def opened(monkeypatch):
    """The files `load_domain` opens to check rows (image headers, labels), in order."""
    paths = []
    for function in ("open_image", "image_header"):

        def counted(value, *args, original=getattr(registry, function)):
            paths.append(value["path"])
            return original(value, *args)

        monkeypatch.setattr(registry, function, counted)
    return paths


def stored(dataset) -> list[dict]:
    """The rows as stored: file paths or PNG bytes, undecoded."""
    undecoded = dataset
    for column in ("image", "label"):
        undecoded = undecoded.cast_column(column, datasets.Image(decode=False))
    return undecoded.to_list()


def cached_in(dataset, folder) -> bool:
    return bool(dataset.cache_files) and all(
        os.path.dirname(entry["filename"]) == str(folder) for entry in dataset.cache_files
    )


def test_a_second_load_reads_the_checked_rows_from_the_cache(tmp_path, checked_cache, opened):
    raw = write_cityscapes(tmp_path / "cityscapes", {"train": {"aachen": 2, "bochum": 1}})
    streamed = list(load_domain("cityscapes", data_dir=str(tmp_path), streaming=True))
    assert len(streamed) == 3 and not checked_cache.exists()  # a stream is checked as it is read, never cached
    first = load_domain("cityscapes", data_dir=str(tmp_path))
    assert len(opened) == 2 * 3 * 2  # the stream's and this load's image headers and labels
    assert cached_in(first, checked_cache)
    opened.clear()
    second = load_domain("cityscapes", data_dir=str(tmp_path))
    assert opened == [] and stored(second) == stored(first) and cached_in(second, checked_cache)
    assert second["group"] == ["aachen", "aachen", "bochum"]
    assert len(load_domain("cityscapes", "train[1:]", data_dir=str(tmp_path))) == 2 and opened == []

    # A label rewritten (new content, new modification time) is checked again, in a cache file of its own.
    label = tmp_path / "cityscapes" / "gtFine" / "train" / "aachen" / "aachen_000000_000001_gtFine_labelIds.png"
    changed = np.full_like(raw["train", "aachen_000000_000001"], 26)  # car
    write(label, changed)
    modified = label.stat().st_mtime_ns + 10**9
    os.utime(label, ns=(modified, modified))
    third = load_domain("cityscapes", data_dir=str(tmp_path))
    assert str(label) in opened and len(list(checked_cache.glob("*.arrow"))) == 2
    np.testing.assert_array_equal(rows(third)[1], CITYSCAPES_PUBLISHED[changed])
    np.testing.assert_array_equal(rows(third)[0], rows(first)[0])


def test_skipped_rows_are_cached_and_warned_of_again(tmp_path, checked_cache, opened, caplog):
    write_gta5(tmp_path / "gta5", 4)
    small = tmp_path / "gta5" / "labels" / "00003.png"
    write(small, np.zeros((8, 10), np.uint8))
    kept = load_domain("gta5", data_dir=str(tmp_path), on_bad_sample="skip")
    assert kept["group"] == ["00001", "00002", "00004"] and "skipped 1 of 4" in caplog.text
    opened.clear()
    caplog.clear()
    again = load_domain("gta5", data_dir=str(tmp_path), on_bad_sample="skip")
    assert opened == [] and stored(again) == stored(kept)
    assert "labels/00003.png): label size (10, 8) differs" in caplog.text and "skipped 1 of 4" in caplog.text
    with pytest.raises(ValueError, match=r"row 2 \(file .*labels/00003\.png\): label size"):
        load_domain("gta5", data_dir=str(tmp_path))  # the skipping load's cache serves no other setting
    assert len(list(checked_cache.glob("*.arrow"))) == 1  # and a failed check leaves no file


def test_mapped_labels_come_back_from_disk(tmp_path, checked_cache, opened):
    raw = write_mapillary(tmp_path / "mapillary", {"training": 2})
    for attempt in range(2):
        train = load_domain("mapillary", data_dir=str(tmp_path))
        assert cached_in(train, checked_cache) and isinstance(train.data, datasets.table.MemoryMappedTable)
        labels = [row["label"] for row in stored(train)]
        assert all(label["path"] is None and label["bytes"].startswith(b"\x89PNG") for label in labels)
        for label, key in zip(rows(train), ("key0000t", "key0001t")):
            np.testing.assert_array_equal(label, HRDA_MAPILLARY[raw["training", key]])
        assert len(opened) == 4 and all(row["image"]["path"] for row in stored(train))  # images stay their files
