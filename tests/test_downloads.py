"""The benchmarks read from their downloads: each layout's fixture, its labels mapped by the published tables, the bad
inputs each a clear error naming the file, and `tmt-hf check-data`."""

import json

import datasets
import numpy as np
import pytest
from download_fixtures import (
    published,
    write,
    write_acdc,
    write_bdd100k,
    write_cityscapes,
    write_gta5,
    write_kitti,
    write_mapillary,
)
from PIL import Image

from tmt_hf.cli import main as cli_main
from tmt_hf.configuration_tmt import CITYSCAPES_CLASSES
from tmt_hf.data import (
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_LABEL_NAMES,
    CITYSCAPES_TO_IDD_LEVEL1,
    MAPILLARY_NAME_TO_TRAIN_ID,
    MAPILLARY_TO_TRAIN_ID,
    data_dir_for,
    group_boundary,
    group_rows,
    load_domain,
    registry,
)
from tmt_hf.data.readers import ACDC_CONDITIONS as ACDC
from tmt_hf.data.readers import BDD100K_TRAIN_IDS, IDD_LEVEL1_IDS, mapillary_encoding


def table(pairs: dict) -> np.ndarray:
    """A 256-entry raw id -> train id table from published pairs, every other id 255."""
    lookup = np.full(256, 255, np.uint8)
    for raw, train in pairs.items():
        lookup[raw] = train
    return lookup


# The published definitions, as tables: what every reader must yield.
CITYSCAPES_PUBLISHED = table(
    {label["id"]: label["trainId"] for label in published("cityscapes_labels.json")["labels"] if label["id"] >= 0}
)
HRDA_MAPILLARY = table({int(i): t for i, t in published("hrda_mapillary_to_cityscapes.json")["id_to_trainid"].items()})


def rows(dataset) -> list[np.ndarray]:
    return [np.asarray(label) for label in dataset["label"]]


def test_cityscapes_table_matches_labels_py_entry_by_entry():
    labels = published("cityscapes_labels.json")["labels"]
    for label in labels:
        if label["id"] < 0:  # license plate: no id in the label files
            continue
        assert CITYSCAPES_LABEL_NAMES[label["id"]] == label["name"]
        expected = label["trainId"] if 0 <= label["trainId"] < 19 else 255
        assert CITYSCAPES_ID_TO_TRAIN_ID[label["id"]] == expected, label
        if expected != 255:
            assert CITYSCAPES_CLASSES[expected] == label["name"]
    assert sorted(label["id"] for label in labels if label["id"] >= 0) == list(range(len(CITYSCAPES_LABEL_NAMES)))
    assert (CITYSCAPES_ID_TO_TRAIN_ID[34:] == 255).all()


def test_mapillary_table_matches_the_v12_config_and_hrda_entry_by_entry():
    names = [label["name"] for label in published("mapillary_config_v1.2.json")["labels"]]
    assert len(names) == 66 and set(MAPILLARY_NAME_TO_TRAIN_ID) <= set(names)
    for index, name in enumerate(names):
        assert MAPILLARY_NAME_TO_TRAIN_ID.get(name, 255) == HRDA_MAPILLARY[index], name
        assert MAPILLARY_TO_TRAIN_ID[index] == HRDA_MAPILLARY[index], name
    assert (MAPILLARY_TO_TRAIN_ID[66:] == 255).all()
    assert sorted(set(MAPILLARY_NAME_TO_TRAIN_ID.values())) == list(range(19))  # every Cityscapes class is fed


def test_bdd100k_and_idd_tables_match_their_label_definitions_entry_by_entry():
    bdd = published("bdd100k_labels.json")["labels"]
    for label in bdd:  # BDD100K's masks hold Cityscapes train ids: read as they are
        if label["trainId"] != 255:
            assert CITYSCAPES_CLASSES[label["trainId"]] == label["name"], label
    assert set(BDD100K_TRAIN_IDS.raw_ids) == {label["trainId"] for label in bdd}
    assert BDD100K_TRAIN_IDS.mapping is None
    idd = published("idd_labels.json")["labels"]
    for label in idd:  # each Cityscapes class goes to the level-1 class IDD puts it in
        if label["csTrainId"] != 255:
            assert CITYSCAPES_TO_IDD_LEVEL1[label["csTrainId"]] == label["level1Id"], label
    assert {label["csTrainId"] for label in idd} >= set(range(19))
    assert set(IDD_LEVEL1_IDS.raw_ids) == {label["level1Id"] for label in idd} and IDD_LEVEL1_IDS.mapping is None


def test_cityscapes_reads_its_download_by_city(tmp_path):
    raw = write_cityscapes(tmp_path / "cityscapes", {"train": {"aachen": 2, "bochum": 1}, "val": {"lindau": 2}})
    test_image = tmp_path / "cityscapes" / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000000_leftImg8bit.png"
    write(test_image, np.zeros((12, 16, 3), np.uint8))
    for data_dir in (tmp_path / "cityscapes", tmp_path):  # the download, or the folder holding `cityscapes/`
        train = load_domain("cityscapes", "train", data_dir=str(data_dir))
        assert train["group"] == ["aachen", "aachen", "bochum"]
        frames = ["aachen_000000_000000", "aachen_000000_000001", "bochum_000000_000000"]
        for label, frame in zip(rows(train), frames):
            np.testing.assert_array_equal(label, CITYSCAPES_PUBLISHED[raw["train", frame]])
        assert train[0]["image"].mode == "RGB" and train[0]["label"].mode == "L"
    assert len(load_domain("cityscapes", "validation", data_dir=str(tmp_path))) == 2
    with pytest.raises(ValueError, match=r"Cityscapes: the 'test' split has no labels; pass with_labels=False"):
        load_domain("cityscapes", "test", data_dir=str(tmp_path))
    test = load_domain("cityscapes", "test", data_dir=str(tmp_path), with_labels=False)
    assert set(test.column_names) == {"group", "image"} and test["group"] == ["berlin"]
    # Lazily: the rows hold the files' paths; nothing is copied.
    stored = test.cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert stored == {"bytes": None, "path": str(test_image)}


def test_cityscapes_train_ids_are_used_as_they_are_and_never_mixed_with_label_ids(tmp_path):
    raw = write_cityscapes(tmp_path, {"train": {"aachen": 3}}, train_ids=True)
    train = load_domain("cityscapes", "train", data_dir=str(tmp_path))
    for label, frame in zip(rows(train), sorted(frame for _, frame in raw)):
        np.testing.assert_array_equal(label, raw["train", frame])  # the train ids as they are
    stored = train.cast_column("label", datasets.Image(decode=False))[0]["label"]
    assert stored["path"].endswith("aachen_000000_000000_gtFine_labelTrainIds.png")  # unmapped: kept as the file
    (tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000001_gtFine_labelTrainIds.png").unlink()
    mixed = r"two kinds of label files mixed in one split: 1 frame\(s\) have another kind but no Cityscapes train ids"
    with pytest.raises(ValueError, match=mixed + r".*\[.*aachen_000000_000001_gtFine_labelIds\.png"):
        load_domain("cityscapes", "train", data_dir=str(tmp_path))


def test_acdc_reads_every_condition_or_one_with_its_condition_per_row(tmp_path):
    frames = {
        condition: {"train": {f"GOPR0{n}": 2}, "val": {f"GOPR1{n}": 1}, "test": {f"GOPR2{n}": 1}}
        for n, condition in enumerate(("fog", "night", "rain", "snow"))
    }
    raw = write_acdc(tmp_path / "acdc", frames)
    validation = load_domain("acdc", "validation", data_dir=str(tmp_path))
    assert validation["condition"] == ["fog", "night", "rain", "snow"]
    assert validation["group"] == ["fog/GOPR10", "night/GOPR11", "rain/GOPR12", "snow/GOPR13"]
    assert group_rows(validation, "condition") == {"fog": [0], "night": [1], "rain": [2], "snow": [3]}
    streamed = list(load_domain("acdc", "validation", data_dir=str(tmp_path), streaming=True))
    assert [row["condition"] for row in streamed] == validation["condition"]
    np.testing.assert_array_equal(np.asarray(streamed[2]["label"]), rows(validation)[2])
    night = load_domain("acdc/night", "train", data_dir=str(tmp_path))
    assert night["condition"] == ["night", "night"] and night["group"] == ["night/GOPR01"] * 2
    for label, name in zip(rows(night), ("GOPR01_frame_000000", "GOPR01_frame_000001")):
        np.testing.assert_array_equal(label, CITYSCAPES_PUBLISHED[raw["train", f"night/{name}"]])
    assert len(load_domain("acdc", "test", data_dir=str(tmp_path), with_labels=False)) == 4
    # Where only the label ids are there, they are mapped.
    for path in (tmp_path / "acdc" / "gt" / "snow").rglob("*_gt_labelTrainIds.png"):
        path.unlink()
    snow = load_domain("acdc/snow", "train", data_dir=str(tmp_path / "acdc"))
    np.testing.assert_array_equal(rows(snow)[1], CITYSCAPES_PUBLISHED[raw["train", "snow/GOPR03_frame_000001"]])
    with pytest.raises(ValueError, match=r"mixed in one split: 2 frame\(s\).*snow/train/GOPR03/GOPR03_frame_000000"):
        load_domain("acdc", "train", data_dir=str(tmp_path))


def test_bdd100k_reads_its_10k_masks_as_train_ids(tmp_path):
    raw = write_bdd100k(tmp_path, {"train": 3, "val": 2, "test": 1})
    train = load_domain("bdd100k", "train", data_dir=str(tmp_path))
    for label, name in zip(rows(train), sorted(name for split, name in raw if split == "train")):
        np.testing.assert_array_equal(label, raw["train", name])  # train ids and 255 as they are
    assert train["group"] == sorted(name for split, name in raw if split == "train")
    assert len(load_domain("bdd100k", "val", data_dir=str(tmp_path / "bdd100k"))) == 2
    assert len(load_domain("bdd100k", "test", data_dir=str(tmp_path), with_labels=False)) == 1


@pytest.mark.parametrize("v12_only", [False, True])
def test_mapillary_maps_its_labels_by_the_names_in_its_config(tmp_path, v12_only):
    raw = write_mapillary(tmp_path / "mapillary", {"training": 2, "validation": 1}, v12_only=v12_only)
    train = load_domain("mapillary", "train", data_dir=str(tmp_path))
    assert train[0]["label"].mode == "L"
    for label, key in zip(rows(train), ("key0000t", "key0001t")):
        np.testing.assert_array_equal(label, HRDA_MAPILLARY[raw["training", key]])
    assert len(load_domain("mapillary", "validation", data_dir=str(tmp_path))) == 1
    # A config in another order: the ids follow the download's own config, by name.
    names = [label["name"] for label in published("mapillary_config_v1.2.json")["labels"]][::-1]
    raw = write_mapillary(tmp_path / "reordered", {"training": 1}, v12_only=v12_only, names=names)
    expected = np.array([MAPILLARY_NAME_TO_TRAIN_ID.get(name, 255) for name in names], np.uint8)
    np.testing.assert_array_equal(
        rows(load_domain("mapillary", "train", data_dir=str(tmp_path / "reordered")))[0],
        expected[raw["training", "key0000t"]],
    )
    assert (mapillary_encoding(str(tmp_path / "reordered")).mapping[:66] == expected).all()
    (tmp_path / "reordered" / "config_v1.2.json").write_text(json.dumps({"labels": [{"name": "road"}]}))
    with pytest.raises(ValueError, match=r"config_v1\.2\.json: no label named .*; expected a v1\.2 config"):
        load_domain("mapillary", "train", data_dir=str(tmp_path / "reordered"))


def test_gta5_reads_palettised_labels_and_names_frames_of_another_size(tmp_path, caplog):
    raw = write_gta5(tmp_path / "gta5", 4)
    assert Image.open(tmp_path / "gta5" / "labels" / "00001.png").mode == "P"
    train = load_domain("gta5", "train", data_dir=str(tmp_path))
    for label, frame in zip(rows(train), ("00001", "00002", "00003", "00004")):
        np.testing.assert_array_equal(label, CITYSCAPES_PUBLISHED[raw["train", frame]])
    with pytest.raises(ValueError, match=r"no split file .*val\.txt.*every frame is `train`"):
        load_domain("gta5", "validation", data_dir=str(tmp_path))
    small = tmp_path / "gta5" / "labels" / "00003.png"
    Image.open(small).crop((0, 0, 10, 8)).save(small)
    message = r"row 2 \(file .*labels/00003\.png\): label size \(10, 8\) differs from image size \(16, 12\)"
    with pytest.raises(ValueError, match=message + r" \(image file .*images/00003\.png"):
        load_domain("gta5", "train", data_dir=str(tmp_path))
    kept = load_domain("gta5", "train", data_dir=str(tmp_path), on_bad_sample="skip")
    assert len(kept) == 3 and "00003.png" in caplog.text and "skipped 1 of 4" in caplog.text
    split = write_gta5(tmp_path / "split", 5, {"train.txt": [1, 2, 4], "val.txt": [3, 5]})
    validation = load_domain("gta5", "validation", data_dir=str(tmp_path / "split"))
    assert validation["group"] == ["00003", "00005"]
    np.testing.assert_array_equal(rows(validation)[1], CITYSCAPES_PUBLISHED[split["train", "00005"]])
    assert len(load_domain("gta5", "train", data_dir=str(tmp_path / "split"))) == 3


def test_kitti_reads_its_200_frame_layout_and_has_no_validation_split(tmp_path):
    raw = write_kitti(tmp_path / "kitti", 6)
    train = load_domain("kitti", "train", data_dir=str(tmp_path))  # the folder holding kitti/data_semantics
    for label, index in zip(rows(train), range(6)):
        np.testing.assert_array_equal(label, CITYSCAPES_PUBLISHED[raw["train", f"{index:06d}_10"]])
    with pytest.raises(ValueError, match=r"not 'validation'; carve one from `train` by group"):
        load_domain("kitti", "validation", data_dir=str(tmp_path))
    assert len(load_domain("kitti", "test", data_dir=str(tmp_path), with_labels=False)) == 1
    # Validation carved by group: the last whole groups of at least 2 frames, as a row range.
    assert group_boundary(train, 2) == 4
    assert load_domain("kitti", "train[4:]", data_dir=str(tmp_path))["group"] == ["000004_10", "000005_10"]


def test_validation_is_carved_by_whole_groups():
    grouped = datasets.Dataset.from_dict({"group": ["a", "a", "a", "b", "b", "c", "c", "c"]})
    assert group_boundary(grouped, 3) == 5  # c's 3 rows
    assert group_boundary(grouped, 4) == 3  # b's and c's 5 rows, not a group cut in two
    assert group_rows(grouped) == {"a": [0, 1, 2], "b": [3, 4], "c": [5, 6, 7]}
    with pytest.raises(ValueError, match="would leave no training rows"):
        group_boundary(grouped, 7)
    with pytest.raises(ValueError, match="not in 'group' order"):
        group_boundary(datasets.Dataset.from_dict({"group": ["a", "b", "a"]}), 1)


def test_data_dir_serves_each_benchmark_from_its_own_download(tmp_path, monkeypatch):
    write_cityscapes(tmp_path / "data" / "cityscapes", {"train": {"aachen": 1}})
    write_acdc(tmp_path / "data" / "acdc", {"night": {"train": {"GOPR0": 2}}})
    write_acdc(tmp_path / "elsewhere", {"night": {"train": {"GOPR9": 1}}})
    # One folder holding each download under its usual name serves source and target alike.
    assert len(load_domain("cityscapes", data_dir=str(tmp_path / "data"))) == 1
    assert len(load_domain("acdc/night", data_dir=str(tmp_path / "data"))) == 2
    # NAME=DIR entries (the family name serves acdc/night), or a mapping.
    entries = [f"cityscapes={tmp_path / 'data' / 'cityscapes'}", f"acdc={tmp_path / 'elsewhere'}"]
    assert len(load_domain("acdc/night", data_dir=entries)) == 1
    assert len(load_domain("acdc/night", data_dir={"acdc/night": str(tmp_path / "elsewhere")})) == 1
    assert data_dir_for("cityscapes", [*entries, str(tmp_path / "data")]) == str(tmp_path / "data" / "cityscapes")
    assert data_dir_for("idd-lite", [*entries, str(tmp_path / "data")]) == str(tmp_path / "data")
    with pytest.raises(ValueError, match=r"data_dir names \['cityscape'\], not registry names"):
        load_domain("cityscapes", data_dir=["cityscape=/somewhere"])
    # A benchmark the entries do not name falls back to its Hub mirror, as without data_dir.
    calls = []
    mirror = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 2))], "semantic_segmentation": [Image.new("L", (4, 2), 26)]},
        features=datasets.Features({"image": datasets.Image(), "semantic_segmentation": datasets.Image()}),
    )
    monkeypatch.setattr(registry.datasets, "load_dataset", lambda repo, split, streaming: calls.append(repo) or mirror)
    hub = load_domain("cityscapes", data_dir=[f"acdc={tmp_path / 'elsewhere'}"])
    assert calls == ["Chris1/cityscapes"] and (np.asarray(hub[0]["label"]) == 13).all()  # car: 26 -> 13


def test_bad_downloads_are_clear_errors_naming_the_file(tmp_path):
    write_cityscapes(tmp_path / "cityscapes", {"train": {"aachen": 2}, "val": {"lindau": 1}})
    gt, val = (tmp_path / "cityscapes" / "gtFine" / split for split in ("train", "val"))
    # A colour image saved where ids are expected.
    write(gt / "aachen" / "aachen_000000_000001_gtFine_labelIds.png", np.zeros((12, 16, 3), np.uint8))
    colour = r"row 1 \(file .*aachen_000000_000001_gtFine_labelIds\.png\): label images must be single-channel ids"
    with pytest.raises(ValueError, match=colour + r" .* got mode RGB"):
        load_domain("cityscapes", "train", data_dir=str(tmp_path))
    # An id outside the dataset's set (Cityscapes label ids end at 33).
    outside = np.full((12, 16), 7, np.uint8)
    outside[0, 0] = 40
    write(gt / "aachen" / "aachen_000000_000000_gtFine_labelIds.png", outside)
    with pytest.raises(
        ValueError,
        match=r"row 0 \(file .*aachen_000000_000000_gtFine_labelIds\.png\): label id\(s\) "
        r"\[40\] are not in cityscapes's label set \(Cityscapes label ids 0-33",
    ):
        load_domain("cityscapes", "train", data_dir=str(tmp_path))
    # A label without its image, and an image without its label.
    write(val / "lindau" / "lindau_000000_000009_gtFine_labelIds.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(
        ValueError,
        match=r"no image in .*leftImg8bit/val for 1 label\(s\), e\.g\. \[.*lindau_000000_"
        r"000009_gtFine_labelIds\.png",
    ):
        load_domain("cityscapes", "validation", data_dir=str(tmp_path))
    (val / "lindau" / "lindau_000000_000009_gtFine_labelIds.png").unlink()
    (val / "lindau" / "lindau_000000_000000_gtFine_labelIds.png").unlink()
    with pytest.raises(
        ValueError,
        match=r"no label for 1 frame\(s\), e\.g\. \[.*gtFine/val/lindau/lindau_000000_"
        r"000000_gtFine_labelIds\.png",
    ):
        load_domain("cityscapes", "validation", data_dir=str(tmp_path))
    # An empty split folder.
    (tmp_path / "cityscapes" / "leftImg8bit" / "test").mkdir()
    with pytest.raises(ValueError, match=r"Cityscapes in .*: no images in .*leftImg8bit/test"):
        load_domain("cityscapes", "test", data_dir=str(tmp_path), with_labels=False)
    # --data_dir one level too deep, or too shallow.
    with pytest.raises(
        ValueError,
        match=r"expected `leftImg8bit/` and `gtFine/`.*1 level\(s\) too deep: pass "
        r"'.*/cityscapes'",
    ):
        load_domain("cityscapes", data_dir=str(tmp_path / "cityscapes" / "leftImg8bit"))
    (tmp_path / "deeper").mkdir()
    (tmp_path / "cityscapes").rename(tmp_path / "deeper" / "cs")
    with pytest.raises(ValueError, match=r"--data_dir is too shallow: pass '.*deeper/cs'"):
        load_domain("cityscapes", data_dir=str(tmp_path / "deeper"))
    with pytest.raises(ValueError, match=r"is read from its download and has no default Hub id: pass data_dir="):
        load_domain("acdc/night")


def test_a_target_can_be_a_folder_of_images(tmp_path):
    for index in range(3):
        write(tmp_path / "street" / f"{index}.jpg", np.full((12, 16, 3), index, np.uint8))
    target = load_domain(str(tmp_path / "street"), with_labels=False)
    assert set(target.column_names) == {"group", "image"} and len(target) == 3 and target[0]["image"].mode == "RGB"
    with pytest.raises(ValueError, match=r"expected `train/images/` .* images alone with with_labels=False"):
        load_domain(str(tmp_path / "street"))
    scenes = load_domain("synthetic/night", num_samples=1, synthetic_size=(32, 64), with_labels=False)
    assert "label" not in scenes.column_names


@pytest.mark.parametrize(
    "name, build, labels",
    [
        (
            "cityscapes",
            lambda root: write_cityscapes(root, {"train": {"a": 2}, "val": {"b": 1}}),
            "gtFine/*/*/*_labelIds.png",
        ),
        ("acdc", lambda root: write_acdc(root, {c: {"train": {"R": 1}} for c in ACDC}), "gt/*/*/*/*TrainIds.png"),
        ("bdd100k", lambda root: write_bdd100k(root, {"train": 2, "val": 1}), "bdd100k/labels/sem_seg/masks/*/*"),
        ("mapillary", lambda root: write_mapillary(root, {"training": 2, "validation": 1}), "*/v1.2/labels/*"),
        ("gta5", lambda root: write_gta5(root, 3), "labels/*"),
        ("kitti", lambda root: write_kitti(root, 3), "data_semantics/training/semantic/*"),
    ],
)
def test_check_data_runs_on_every_layout(tmp_path, capsys, name, build, labels):
    build(tmp_path)
    cli_main(["check-data", name, "--data_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"{name}: no problems found" in out and "train: " in out and " files -> " in out
    label = sorted(tmp_path.glob(labels))[0]
    Image.open(label).convert("RGB").save(label)  # a colour image where ids are expected
    with pytest.raises(SystemExit) as exit_code:
        cli_main(["check-data", name, "--data_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert exit_code.value.code == 1 and f"PROBLEM: Dataset '{name}'" in out and f"{label.name}): label images" in out


def test_check_data_reports_ids_against_the_set_and_what_they_map_to(tmp_path, capsys):
    write_cityscapes(tmp_path, {"train": {"aachen": 1}})
    label = tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000000_gtFine_labelIds.png"
    write(label, np.array([[7, 9, 26, 40]], np.uint8).repeat(12, 0).repeat(4, 1))
    with pytest.raises(SystemExit):
        cli_main(["check-data", "cityscapes", "--data_dir", str(tmp_path), "--split", "train"])
    out = capsys.readouterr().out
    assert "train: 1 frames, 1 groups" in out
    assert "7 road" in out and "-> 0 road" in out and "9 parking" in out and "-> ignored (255)" in out
    assert "26 car" in out and "-> 13 car" in out and "40 ?" in out and "not in the dataset's label set" in out
    assert "label id(s) [40] are not in cityscapes's label set" in out and label.name in out
    with pytest.raises(SystemExit):
        cli_main(["check-data", "gta5"])
    assert "gta5 is checked in its download: pass --data_dir" in capsys.readouterr().out
