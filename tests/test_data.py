import hashlib
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from tmt_hf.data import (
    BENCHMARKS,
    CITYSCAPES_ID_TO_TRAIN_ID,
    DOMAINS,
    MAPILLARY_TO_TRAIN_ID,
    DomainStyle,
    SegmentationTransform,
    generate_scene,
    load_domain,
    registry,
    restyled_classes,
    scene_seed,
)
from tmt_hf.data.synthetic import (
    BUILDING,
    BUS,
    CAR,
    LIGHT,
    ROAD,
    SIDEWALK,
    SKY,
    TRAIN,
    TRUCK,
    VEGETATION,
    lit_window_band,
    local_shifts,
    mirror_above,
)
from tmt_hf.metrics import MeanIoU, binary_auroc, shift_auroc


def brute_force_iou(pred, ref, num_labels, ignore_index=255):
    keep = ref != ignore_index
    pred, ref = pred[keep], ref[keep]
    ious, accs = [], []
    for c in range(num_labels):
        inter = np.sum((pred == c) & (ref == c))
        union = np.sum((pred == c) | (ref == c))
        ious.append(inter / union if union else np.nan)
        accs.append(inter / np.sum(ref == c) if np.sum(ref == c) else np.nan)
    return np.array(ious), np.array(accs), np.mean(pred == ref)


def test_mean_iou_matches_numpy_reference_and_streams():
    rng = np.random.default_rng(0)
    num_labels = 6
    pred = rng.integers(0, 5, size=(4, 32, 40))  # class 5 is never predicted ...
    ref = rng.integers(0, 5, size=(4, 32, 40))  # ... nor present: absent -> NaN
    ref[rng.random(ref.shape) < 0.2] = 255
    ref[0, :4, :4] = 4
    ious, accs, overall = brute_force_iou(pred, ref, num_labels)

    whole = MeanIoU(num_labels)
    whole.update(torch.from_numpy(pred), torch.from_numpy(ref))
    streamed = MeanIoU(num_labels)
    for i in range(4):
        streamed.update(pred[i], ref[i])
    for metric in (whole, streamed):
        result = metric.compute()
        assert set(result) == {
            "mean_iou",
            "mean_accuracy",
            "overall_accuracy",
            "per_category_iou",
            "per_category_accuracy",
        }
        np.testing.assert_allclose(result["per_category_iou"], ious, equal_nan=True)
        np.testing.assert_allclose(result["per_category_accuracy"], accs, equal_nan=True)
        assert np.isnan(result["per_category_iou"][5])
        assert result["mean_iou"] == pytest.approx(np.nanmean(ious))
        assert result["mean_accuracy"] == pytest.approx(np.nanmean(accs))
        assert result["overall_accuracy"] == pytest.approx(overall)
    with pytest.raises(ValueError, match="same shape"):
        whole.update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_label_mapping_tables():
    assert [CITYSCAPES_ID_TO_TRAIN_ID[i] for i in (7, 8, 11, 21, 23, 24, 26, 33)] == [0, 1, 2, 8, 10, 11, 13, 18]
    assert CITYSCAPES_ID_TO_TRAIN_ID[0] == 255 and CITYSCAPES_ID_TO_TRAIN_ID[34] == 255
    assert [MAPILLARY_TO_TRAIN_ID[i] for i in (13, 15, 17, 27, 30, 55, 61, 19, 20, 48, 50)] == [
        0,
        1,
        2,
        10,
        8,
        13,
        14,
        11,
        12,
        6,
        7,
    ]
    assert MAPILLARY_TO_TRAIN_ID[49] == 255 and MAPILLARY_TO_TRAIN_ID[65] == 255  # sign backs, unlabeled
    assert BENCHMARKS["gta5"].label_mapping is CITYSCAPES_ID_TO_TRAIN_ID
    assert BENCHMARKS["bdd100k"].label_mapping is None  # already train ids
    for name in ("cityscapes", "bdd100k", "mapillary", "acdc", "gta5"):
        assert name in BENCHMARKS


def _raw_pairs(n=3, size=(24, 32)):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(n)]
    raw_labels = [rng.choice([7, 8, 26, 0, 23], size=size).astype(np.uint8) for _ in range(n)]
    return images, raw_labels


def _check_train_ids(dataset, raw_labels):
    rows = list(dataset)
    assert len(rows) == len(raw_labels) and set(rows[0]) >= {"image", "label"}
    for row, raw in zip(rows, raw_labels):
        assert row["image"].mode == "RGB" and row["label"].mode == "L"
        np.testing.assert_array_equal(np.asarray(row["label"]), CITYSCAPES_ID_TO_TRAIN_ID[raw])


def test_imagefolder_pairs(tmp_path):
    images, raw_labels = _raw_pairs()
    for folder in ("images", "labels"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(images, raw_labels)):
        Image.fromarray(image).save(tmp_path / "train" / "images" / f"{i:03d}.jpg", quality=95)
        Image.fromarray(label).save(tmp_path / "train" / "labels" / f"{i:03d}.png")
    _check_train_ids(load_domain(str(tmp_path), "train", label_mapping=CITYSCAPES_ID_TO_TRAIN_ID), raw_labels)


def _raw_dataset(images, raw_labels, label_column="semantic_segmentation"):
    features = datasets.Features({"image": datasets.Image(), label_column: datasets.Image()})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(i) for i in images], label_column: [Image.fromarray(lab) for lab in raw_labels]},
        features=features,
    )


def test_parquet_and_save_to_disk(tmp_path):
    images, raw_labels = _raw_pairs()
    raw = _raw_dataset(images, raw_labels, "mask")
    raw.to_parquet(str(tmp_path / "train.parquet"))
    raw.save_to_disk(str(tmp_path / "disk"))
    for path in (tmp_path / "train.parquet", tmp_path / "disk"):
        dataset = load_domain(str(path), "train", label_column="mask", label_mapping=CITYSCAPES_ID_TO_TRAIN_ID)
        _check_train_ids(dataset, raw_labels)
    streamed = load_domain(
        str(tmp_path / "disk"), "train", label_column="mask", label_mapping=CITYSCAPES_ID_TO_TRAIN_ID, streaming=True
    )
    assert isinstance(streamed, datasets.IterableDataset)
    _check_train_ids(streamed, raw_labels)


def test_registry_name_goes_through_the_hub_path(monkeypatch):
    images, raw_labels = _raw_pairs()
    calls = []

    def fake_load_dataset(repo_id, split, streaming):
        calls.append((repo_id, split, streaming))
        return _raw_dataset(images, raw_labels)

    monkeypatch.setattr(registry.datasets, "load_dataset", fake_load_dataset)
    _check_train_ids(load_domain("cityscapes", "validation"), raw_labels)
    assert calls == [("Chris1/cityscapes", "validation", False)]
    load_domain("cityscapes", "train", hub_id="me/my-cityscapes")
    assert calls[-1][0] == "me/my-cityscapes"
    with pytest.raises(ValueError, match="no default Hub id"):
        load_domain("gta5")


def test_bad_inputs(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Unknown benchmark 'kitti360'"):
        load_domain("kitti360")
    with pytest.raises(ValueError, match="Unknown generated domain"):
        load_domain("synthetic/snow")
    images, raw_labels = _raw_pairs()
    _raw_dataset(images, raw_labels, "mask").save_to_disk(str(tmp_path / "disk"))
    with pytest.raises(ValueError, match=r"no column\(s\) \['label'\]; columns found: \['image', 'mask'\]"):
        load_domain(str(tmp_path / "disk"))
    _raw_dataset(images, [lab[:-2] for lab in raw_labels], "label").save_to_disk(str(tmp_path / "bad_size"))
    with pytest.raises(ValueError, match="label size .* differs from image size"):
        load_domain(str(tmp_path / "bad_size"))
    for folder in ("images", "labels"):
        (tmp_path / "corrupt" / "train" / folder).mkdir(parents=True)
    Image.fromarray(images[0]).save(tmp_path / "corrupt" / "train" / "images" / "a.png")
    (tmp_path / "corrupt" / "train" / "images" / "b.png").write_bytes(b"not an image at all")
    for stem in "ab":
        Image.fromarray(raw_labels[0]).save(tmp_path / "corrupt" / "train" / "labels" / f"{stem}.png")
    with pytest.raises(ValueError, match=r"Cannot read the 'image' image .*b\.png"):
        load_domain(str(tmp_path / "corrupt"), label_mapping=CITYSCAPES_ID_TO_TRAIN_ID)
    with pytest.raises(ValueError, match=r"row 0 \(file .*a\.png\).*got \[23, 26\]"):  # raw ids, no mapping
        load_domain(str(tmp_path / "corrupt"))


def test_generator_is_deterministic_and_covers_all_classes():
    a, b = generate_scene(123, "rain"), generate_scene(123, "rain")
    for key in ("image", "label", "shift_mask"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], generate_scene(124, "rain")["image"])
    assert a["image"].shape == (256, 512, 3) and a["label"].dtype == np.uint8
    seen = set()
    for index in range(80):
        seen |= set(np.unique(generate_scene(scene_seed("clear", "train", index), "clear", 128, 256)["label"]).tolist())
    assert seen == set(range(19))


def test_split_seeds_never_overlap():
    seeds = {
        split: {scene_seed(d, split, i) for d in DOMAINS for i in (0, 1, 999_999)}
        for split in ("train", "validation", "test")
    }
    assert (
        not (seeds["train"] & seeds["validation"])
        and not (seeds["train"] & seeds["test"])
        and not (seeds["validation"] & seeds["test"])
    )


def test_shift_masks_follow_local_shifts_only():
    # Classes whose every pixel a shift alters (sidewalks are wet in puddles only, terrain under litter only).
    vehicles = {CAR, TRUCK, BUS, TRAIN}
    covered = {
        "night": {*vehicles, LIGHT},
        "fog": {BUILDING, *vehicles, LIGHT},
        "rain": {ROAD, *vehicles},
        "autumn": {VEGETATION, *vehicles},
        "clear": set(),
    }
    for domain, style in DOMAINS.items():
        assert covered[domain] <= set(style.restyled)
        spilled = False
        for seed in range(3):
            scene = generate_scene(seed, domain, 128, 256)
            mask, label = scene["shift_mask"], scene["label"]
            assert mask[np.isin(label, list(covered[domain]))].all()
            assert mask.any() == bool(style.restyled)
            spilled |= mask[~np.isin(label, style.restyled)].any()
        # glare, halos, spray and shadows reach other classes; the facades' and the wet ground's restyles do not
        assert spilled == bool(style.restyled), domain
    rain = generate_scene(5, "rain", 128, 256)
    assert not rain["shift_mask"][np.isin(rain["label"], (SKY, BUILDING))].any(), "the wet ground stays on the ground"
    flat = (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.random.default_rng(0), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"Unknown local shifts \['snow'\]"):
        local_shifts(DomainStyle("snowy", local_shifts=("snow",)), *flat)


def test_clear_and_night_scenes_are_those_of_generator_version_3():
    """Version 4 changed only rain, fog and autumn, so clear and night runs of version 3 stay comparable."""
    # md5 of image, label and shift mask of test scene 7 at 64×128, computed with the version-3 generator (1fab4d6)
    version_3 = {"clear": "dfe079158f7a78973855b7b9e9edd744", "night": "dde9153b39f0da91b27ee1934ae2967e"}
    for domain, digest in version_3.items():
        scene = generate_scene(scene_seed(domain, "test", 7), domain, 64, 128)
        data = scene["image"].tobytes() + scene["label"].tobytes() + scene["shift_mask"].tobytes()
        assert hashlib.md5(data).hexdigest() == digest, domain
    assert restyled_classes("night", 3) == DOMAINS["night"].restyled
    assert restyled_classes("rain", 3) == (ROAD, SIDEWALK) != DOMAINS["rain"].restyled
    with pytest.raises(ValueError, match="generator version 2"):
        restyled_classes("rain", 2)


def test_lit_windows_sit_in_the_upper_part_of_each_vehicle():
    label = np.full((20, 9), SKY, np.uint8)
    label[5:15] = BUS  # a bus 10 rows tall
    band = lit_window_band(label) & (label == BUS)
    assert band[7:10].any(axis=1).all() and not band[:7].any() and not band[10:].any()  # rows 15-50% down the bus
    assert not band[7, :3].any() and band[7, 3:].all()  # panes 3 columns wide, 2 of every 3 lit


def test_wet_road_mirrors_what_stands_on_it():
    colours = np.zeros((6, 1, 3), np.float32)
    colours[:3, 0] = [[0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.9, 0.9, 0.9]]
    label = np.array([[SKY], [CAR], [CAR], [ROAD], [ROAD], [ROAD]], np.uint8)
    mirrored, distance = mirror_above(colours, label, np.random.default_rng(0))
    # The scene above, mirrored about the car's contact line.
    np.testing.assert_array_equal(mirrored[3:, 0], colours[[2, 1, 0], 0])
    np.testing.assert_array_equal(distance[3:, 0], [0, 1, 2])


def test_domains_differ_in_colour_statistics():
    stats = {}
    for domain in DOMAINS:
        pixels = np.stack([generate_scene(s, domain, 128, 256)["image"] for s in range(4)]).reshape(-1, 3) / 255.0
        stats[domain] = np.concatenate([pixels.mean(0), pixels.std(0)])
    names = list(DOMAINS)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            assert np.abs(stats[first] - stats[second]).max() > 0.02, (first, second)


def test_transforms_keep_image_and_label_aligned():
    """The label is drawn from the image (label = red channel // 40), so any misalignment shows."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 6, size=(8, 16))
    label = np.kron(blocks, np.ones((16, 16), dtype=np.int64)).astype(np.uint8)  # 128 x 256 pieces
    image = np.stack([label * 40 + 10, np.full_like(label, 90), np.full_like(label, 30)], axis=-1).astype(np.uint8)
    label[:5, :5] = 255
    focus = np.where(label % 2 == 1, 255, 0).astype(np.uint8)  # a precomputed map: 1 on odd classes
    transform = SegmentationTransform(train=True, size=(128, 256), crop_size=(96, 160), scale_range=(0.5, 2.0))
    for step in range(10):
        torch.manual_seed(step)
        out = transform(
            {"image": [Image.fromarray(image)], "label": [Image.fromarray(label)], "focus": [Image.fromarray(focus)]}
        )
        pixels, labels, focus_map = out["pixel_values"][0], out["labels"][0], out["focus"][0]
        assert pixels.shape == (3, 96, 160) and labels.shape == focus_map.shape == (96, 160)
        red = (pixels[0] * 0.5 + 0.5) * 255
        level = ((red - 10) / 40).round().long()
        # Compare away from block edges, where bilinear resampling blends neighbouring blocks.
        as_float = labels[None, None].float()
        pool = torch.nn.functional.max_pool2d
        interior = (pool(as_float, 3, 1, 1) == -pool(-as_float, 3, 1, 1))[0, 0]
        valid = (labels != 255) & (pixels.abs().sum(0) > 0) & interior
        assert valid.float().mean() > 0.2
        assert torch.equal(level[valid], labels[valid])
        assert torch.equal(focus_map[valid].round().long(), labels[valid] % 2)  # the map moved with the image
    evaluation = SegmentationTransform(train=False, size=(100, 200), size_divisor=16)
    out = evaluation(
        {"image": [Image.fromarray(image)], "label": [Image.fromarray(label)], "focus": [Image.fromarray(focus)]}
    )
    assert out["pixel_values"][0].shape == (3, 112, 208)
    assert (out["labels"][0][100:] == 255).all() and (out["labels"][0][:, 200:] == 255).all()
    assert out["focus"][0].shape == (112, 208) and (out["focus"][0][100:] == 0).all()


def test_bad_samples_can_be_skipped(tmp_path, caplog):
    images, raw_labels = _raw_pairs()
    for folder in ("images", "labels"):
        (tmp_path / "train" / folder).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(images[i]).save(tmp_path / "train" / "images" / f"{i}.png")
        Image.fromarray(raw_labels[i]).save(tmp_path / "train" / "labels" / f"{i}.png")
    (tmp_path / "train" / "images" / "1.png").write_bytes(b"\x89PNG broken")
    dataset = load_domain(str(tmp_path), label_mapping=CITYSCAPES_ID_TO_TRAIN_ID, on_bad_sample="skip")
    assert len(dataset) == 2
    np.testing.assert_array_equal(np.asarray(dataset[1]["label"]), CITYSCAPES_ID_TO_TRAIN_ID[raw_labels[2]])
    with pytest.raises(ValueError, match=r"1\.png"):
        load_domain(str(tmp_path), label_mapping=CITYSCAPES_ID_TO_TRAIN_ID)


def test_auroc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(float)  # many ties
    positives = rng.random(300) < 0.3
    pairs = scores[positives][:, None] - scores[~positives][None, :]
    expected = ((pairs > 0) + 0.5 * (pairs == 0)).mean()
    assert binary_auroc(scores, positives) == pytest.approx(expected)
    assert binary_auroc(scores, np.zeros(300, bool)) is None
    maps, masks = [scores[:150], scores[150:]], [positives[:150], positives[150:]]
    result = shift_auroc(maps, masks)
    assert result["pooled"] == pytest.approx(expected)
    assert result["per_image"] == pytest.approx((binary_auroc(maps[0], masks[0]) + binary_auroc(maps[1], masks[1])) / 2)


def _segnet_camvid(root, frames):
    """A tiny CamVid in SegNet's layout: `<split>/<frame>.png` images, `<split>annot/<frame>.png` ids 0-10, 11 void."""
    rng = np.random.default_rng(2)
    raw = {}
    for split, names in frames.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for name in names:
            raw[name] = rng.integers(0, 12, (12, 16)).astype(np.uint8)
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(root / split / f"{name}.png")
            Image.fromarray(raw[name]).save(root / f"{split}annot" / f"{name}.png")
    return raw


def test_camvid_reads_the_segnet_layout_split_by_sequence(tmp_path):
    from tmt_hf.data import CAMVID_CLASSES, labelled_classes

    frames = {
        "train": ["0001TP_006690", "0006R0_f01290", "0016E5_00390", "0001TP_006720"],
        "val": ["0016E5_07959", "0001TP_008550"],
        "test": ["Seq05VD_f00000"],
    }
    raw = _segnet_camvid(tmp_path, frames)
    dusk = load_domain("camvid/dusk", "train", data_dir=str(tmp_path))
    day = load_domain("camvid/day", "train", data_dir=str(tmp_path))
    both = load_domain("camvid", "train", data_dir=str(tmp_path))
    assert (len(dusk), len(day), len(both)) == (2, 2, 4)
    assert len(load_domain("camvid/day", "validation", data_dir=str(tmp_path))) == 1  # val/ and valannot/
    assert len(load_domain("camvid/day", "test", data_dir=str(tmp_path))) == 1  # Seq05VD is a daytime sequence
    # Frames in name order; ids mapped to train ids: sky 0 -> 10, road 3 -> 0, bicyclist 10 -> rider 12, void 11 -> 255.
    expected = {0: 10, 1: 2, 2: 5, 3: 0, 4: 1, 5: 8, 6: 7, 7: 4, 8: 13, 9: 11, 10: 12, 11: 255}
    for row, name in zip(dusk, ["0001TP_006690", "0001TP_006720"]):
        np.testing.assert_array_equal(np.asarray(row["label"]), np.vectorize(expected.get)(raw[name]))
        assert row["image"].mode == "RGB" and row["image"].size == (16, 12)
    assert labelled_classes("camvid/dusk") == CAMVID_CLASSES and len(CAMVID_CLASSES) == 11
    assert labelled_classes("synthetic/night") == tuple(range(19)) and labelled_classes(str(tmp_path)) is None
    # A row range carves a split out of another, in dataset order.
    tail = load_domain("camvid/day", "train[1:]", data_dir=str(tmp_path))
    assert len(tail) == 1 and np.array_equal(np.asarray(tail[0]["label"]), np.asarray(day[1]["label"]))
    with pytest.raises(ValueError, match="pass data_dir="):
        load_domain("camvid/dusk", "train")
    with pytest.raises(ValueError, match="expected `train/` and `trainannot/`"):
        load_domain("camvid/dusk", "train", data_dir=str(tmp_path / "train"))
    with pytest.raises(ValueError, match="no frames of the sequences"):
        load_domain("camvid/dusk", "test", data_dir=str(tmp_path))
    (tmp_path / "valannot" / "0016E5_07959.png").unlink()
    with pytest.raises(ValueError, match=r"no label for 1 frame\(s\), e\.g\. \[.*valannot/0016E5_07959\.png"):
        load_domain("camvid/day", "validation", data_dir=str(tmp_path))


def test_row_ranges_of_a_split(tmp_path):
    from tmt_hf.data import parse_split

    assert parse_split("train[:20]") == ("train", slice(None, 20))
    assert parse_split("train[42:]") == ("train", slice(42, None))
    assert parse_split("validation") == ("validation", None)
    with pytest.raises(ValueError, match="row range such as"):
        parse_split("train[a:b]")
    scenes = load_domain("synthetic/night", "validation[2:5]", synthetic_size=(32, 64))
    full = load_domain("synthetic/night", "validation", num_samples=5, synthetic_size=(32, 64))
    assert len(scenes) == 3
    np.testing.assert_array_equal(np.asarray(scenes[0]["label"]), np.asarray(full[2]["label"]))
    assert len(load_domain("synthetic/night", "validation[2:5]", num_samples=2, synthetic_size=(32, 64))) == 2
    with pytest.raises(ValueError, match="is empty"):
        load_domain("synthetic/night", "validation[200:]", synthetic_size=(32, 64))


def test_mean_iou_over_the_classes_a_dataset_labels():
    # Three classes labelled (0, 1, 2); the model also predicts class 3, which the dataset never labels.
    references = torch.tensor([0, 0, 1, 1, 2, 2, 255])
    predictions = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    everything, labelled = MeanIoU(4), MeanIoU(4, classes=[0, 1, 2])
    for metric in (everything, labelled):
        metric.update(predictions, references)
    iou = [1 / 3, 1.0, 0.5]  # class 0: 1 hit of 3 (a miss to 3, a false positive from 2); 1: exact; 2: 1 of 2
    assert labelled.compute()["mean_iou"] == pytest.approx(np.mean(iou))
    assert np.isnan(labelled.compute()["per_category_iou"][3])
    assert everything.compute()["mean_iou"] == pytest.approx(np.mean([*iou, 0.0]))  # 3's IoU of 0 drags the mean
    with pytest.raises(ValueError, match="classes must lie in"):
        MeanIoU(4, classes=[4])


def test_cityscapes_train_ids_map_into_idd_level1_as_documented():
    from tmt_hf.data import CITYSCAPES_TO_IDD_LEVEL1, IDD_LEVEL1_CLASSES, get_label_space, label_space_of, space_mapping

    documented = {
        0: 0,
        1: 1,
        9: 1,
        2: 5,
        8: 5,
        3: 4,
        4: 4,
        5: 4,
        6: 4,
        7: 4,
        10: 6,
        11: 2,
        12: 2,
        **{vehicle: 3 for vehicle in range(13, 19)},
        255: 255,
    }
    assert {i: int(CITYSCAPES_TO_IDD_LEVEL1[i]) for i in documented} == documented
    assert IDD_LEVEL1_CLASSES[3] == "vehicles" and len(IDD_LEVEL1_CLASSES) == 7
    assert (space_mapping("idd_level1", "idd_level1")[[0, 6, 255]] == [0, 6, 255]).all()
    with pytest.raises(ValueError, match="'idd_level1' space cannot be mapped into the 'cityscapes' space"):
        space_mapping("idd_level1", "cityscapes")
    with pytest.raises(ValueError, match="Unknown label space 'ade20k'"):
        get_label_space("ade20k")
    assert label_space_of(get_label_space("idd_level1").id2label).name == "idd_level1"
    assert label_space_of({0: "road", 1: "water"}) is None
    # The classes a benchmark labels, in the chosen space: CamVid's 11 Cityscapes classes cover IDD's 7.
    assert registry.labelled_classes("camvid/day", "idd_level1") == tuple(range(7))
    assert registry.labelled_classes("idd-lite", "idd_level1") == tuple(range(7))


@pytest.mark.parametrize("official", [True, False])
def test_idd_lite_reads_the_download_and_the_local_folder_layout(tmp_path, official):
    from conftest import write_idd_lite

    labels = write_idd_lite(tmp_path, {"train": {"7": 2, "12": 3}, "validation": {"40": 2}}, official=official)
    kwargs = {"data_dir": str(tmp_path), "label_space": "idd_level1"}
    train = load_domain("idd-lite", "train", **kwargs)
    # In (sequence, frame) order, so that a row range keeps a sequence's frames together; level-1 ids kept as they are.
    expected = [labels["train", s, f] for s, f in sorted((s, f) for split, s, f in labels if split == "train")]
    assert len(train) == 5 and train[0]["image"].mode == "RGB"
    for row, label in zip(train, expected):
        np.testing.assert_array_equal(np.asarray(row["label"]), label)
    assert len(load_domain("idd-lite", "validation", **kwargs)) == 2
    if official:  # data_dir may also be idd20k_lite/ itself
        assert (
            len(load_domain("idd-lite", "val", data_dir=str(tmp_path / "idd20k_lite"), label_space="idd_level1")) == 2
        )
        (tmp_path / "idd20k_lite" / "gtFine" / "train" / "12" / "000101_label.png").unlink()
        with pytest.raises(ValueError, match=r"no label for 1 frame\(s\).*12/000101_label\.png"):
            load_domain("idd-lite", "train", **kwargs)
    with pytest.raises(ValueError, match="'idd_level1' space cannot be mapped into the 'cityscapes' space"):
        load_domain("idd-lite", "validation", data_dir=str(tmp_path), label_space="cityscapes")  # 7 classes, not 19
    native = load_domain("idd-lite", "validation", data_dir=str(tmp_path))  # by default in the dataset's own space
    np.testing.assert_array_equal(np.asarray(native[1]["label"]), labels["validation", "40", "000101"])
    with pytest.raises(ValueError, match="pass data_dir="):
        load_domain("idd-lite", "train", label_space="idd_level1")
    with pytest.raises(ValueError, match="expected `idd20k_lite/leftImg8bit/`"):
        load_domain("idd-lite", "train", data_dir=str(tmp_path / "nowhere"), label_space="idd_level1")


def test_labels_are_mapped_into_the_chosen_space(tmp_path, monkeypatch):
    from conftest import write_local_pairs

    from tmt_hf.data import CITYSCAPES_TO_IDD_LEVEL1, label_spaces

    write_local_pairs(tmp_path / "city", {"train": 2}, classes=[0, 2, 8, 9, 11, 13, 255])
    city = load_domain(str(tmp_path / "city"))  # a local folder holds Cityscapes train ids unless told otherwise
    idd = load_domain(str(tmp_path / "city"), label_space="idd_level1")
    for a, b in zip(city, idd):
        np.testing.assert_array_equal(np.asarray(b["label"]), CITYSCAPES_TO_IDD_LEVEL1[np.asarray(a["label"])])
    # A local folder of IDD level-1 ids, declared as such.
    write_local_pairs(tmp_path / "idd", {"train": 2}, classes=[0, 3, 6, 255])
    declared = load_domain(str(tmp_path / "idd"), label_space="idd_level1", native_labels="idd_level1")
    assert set(np.unique(np.asarray(declared[0]["label"]))) <= {0, 3, 6, 255}
    # CamVid's SegNet ids go through their Cityscapes train ids: sky 0 -> 10 -> 6, pedestrian 9 -> 11 -> 2.
    raw = _segnet_camvid(tmp_path / "camvid", {"train": ["0001TP_006690"]})["0001TP_006690"]
    camvid = load_domain("camvid/dusk", "train", data_dir=str(tmp_path / "camvid"), label_space="idd_level1")
    np.testing.assert_array_equal(
        np.asarray(camvid[0]["label"]), CITYSCAPES_TO_IDD_LEVEL1[registry.CAMVID_TO_TRAIN_ID[raw]]
    )
    scenes = load_domain("synthetic/night", "train", num_samples=2, synthetic_size=(32, 64))
    mapped = load_domain("synthetic/night", "train", num_samples=2, synthetic_size=(32, 64), label_space="idd_level1")
    np.testing.assert_array_equal(
        np.asarray(mapped[1]["label"]), CITYSCAPES_TO_IDD_LEVEL1[np.asarray(scenes[1]["label"])]
    )
    # A label the space has no class for is an error naming the file and the id.
    partial = CITYSCAPES_TO_IDD_LEVEL1.copy()
    partial[9] = label_spaces.UNPLACED
    monkeypatch.setitem(label_spaces.SPACE_MAPPINGS, ("cityscapes", "idd_level1"), partial)
    with pytest.raises(
        ValueError,
        match=r"row 0 \(file .*city/train/labels/000\.png\): Cityscapes train ids \[9\] have no class in the 'idd_level1'",
    ):
        load_domain(str(tmp_path / "city"), label_space="idd_level1")


def test_ids_outside_a_datasets_label_set_are_errors_naming_the_file(tmp_path, caplog):
    from conftest import write_idd_lite

    frames = {"train": ["0001TP_006690", "0001TP_006720", "0001TP_006750"]}
    raw = _segnet_camvid(tmp_path / "camvid", frames)
    bad = raw["0001TP_006720"].copy()
    bad[3, 4] = 12  # the 32-class CamVid release's ids are not SegNet's
    Image.fromarray(bad).save(tmp_path / "camvid" / "trainannot" / "0001TP_006720.png")
    with pytest.raises(
        ValueError,
        match=r"row 1 \(file .*trainannot/0001TP_006720\.png\): label id\(s\) \[12\] are not "
        r"in camvid/dusk's label set \(CamVid's 11 SegNet classes 0-10 and void 11\)",
    ):
        load_domain("camvid/dusk", "train", data_dir=str(tmp_path / "camvid"))
    kept = load_domain("camvid/dusk", "train", data_dir=str(tmp_path / "camvid"), on_bad_sample="skip")
    assert len(kept) == 2 and "skipped 1 of 3" in caplog.text and "0001TP_006720.png" in caplog.text
    write_idd_lite(tmp_path / "idd", {"train": {"3": 2}})
    path = tmp_path / "idd" / "idd20k_lite" / "gtFine" / "train" / "3" / "000101_label.png"
    label = np.asarray(Image.open(path)).copy()
    label[5, 5], label[6, 6] = 7, 254
    Image.fromarray(label).save(path)
    with pytest.raises(
        ValueError, match=r"file .*3/000101_label\.png\): label id\(s\) \[7, 254\] are not in idd-lite's"
    ):
        load_domain("idd-lite", "train", data_dir=str(tmp_path / "idd"), label_space="idd_level1")


def test_size_mismatches_and_colour_coded_labels_name_the_file(tmp_path, caplog):
    from conftest import write_idd_lite

    raw = _segnet_camvid(tmp_path / "camvid", {"train": ["0001TP_006690", "0001TP_006720"]})
    Image.fromarray(np.stack([raw["0001TP_006720"]] * 3, axis=-1)).save(
        tmp_path / "camvid" / "trainannot" / "0001TP_006720.png"
    )
    write_idd_lite(tmp_path / "idd", {"train": {"3": 2}})
    small = tmp_path / "idd" / "idd20k_lite" / "gtFine" / "train" / "3" / "000100_label.png"
    Image.open(small).crop((0, 0, 20, 20)).save(small)
    cases = [
        (
            ("camvid/dusk", {"data_dir": str(tmp_path / "camvid")}),
            r"row 1 \(file .*trainannot/0001TP_006720\.png\): label images must be single-channel ids .* got mode RGB",
        ),
        (
            ("idd-lite", {"data_dir": str(tmp_path / "idd"), "label_space": "idd_level1"}),
            r"row 0 \(file .*3/000100_label\.png\): label size \(20, 20\) differs from image size \(32, 24\) "
            r"\(image file .*3/000100_image\.jpg",
        ),
    ]
    for (name, kwargs), message in cases:
        with pytest.raises(ValueError, match=message):
            load_domain(name, "train", **kwargs)
        assert len(load_domain(name, "train", on_bad_sample="skip", **kwargs)) == 1
        assert "skipped 1 of 2" in caplog.text
        caplog.clear()


def test_estimate_reports_classes_of_the_label_space(tmp_path, capsys):
    import json

    from conftest import tiny_acte_config, write_idd_lite

    from tmt_hf import ACTEModel, TMTImageProcessor
    from tmt_hf.cli import main as cli_main
    from tmt_hf.data import IDD_LEVEL1_CLASSES

    ACTEModel(tiny_acte_config(num_semantic_classes=7)).save_pretrained(tmp_path / "acte")
    TMTImageProcessor(size={"height": 24, "width": 32}).save_pretrained(tmp_path / "acte")  # the fixture's size
    write_idd_lite(tmp_path / "idd", {"validation": {"40": 2}})
    cli_main(
        ["estimate", "--acte", str(tmp_path / "acte"), "--data", "idd-lite", "--data_dir", str(tmp_path / "idd")]
        + "--label_space idd_level1 --json".split()
    )
    report = json.loads(capsys.readouterr().out)
    assert set(report["classes"]) == set(IDD_LEVEL1_CLASSES)  # the fixture's labels hold all 7
    assert sum(row["pixels"] for row in report["classes"].values()) == 2 * (24 * 32 - 3)  # 255 left out


def test_the_custom_dataset_example_reads_its_layout(tmp_path, monkeypatch):
    """examples/custom_dataset.py: drives as groups, its ids mapped into train ids, an id outside its set named."""
    import importlib.util

    example = Path(__file__).resolve().parents[1] / "examples" / "custom_dataset.py"
    spec = importlib.util.spec_from_file_location("custom_dataset", example)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    monkeypatch.setitem(BENCHMARKS, "mine", BENCHMARKS["mine"])  # removed again after the test
    raw = np.zeros((8, 12), dtype=np.uint8)
    raw[:4], raw[4:, :6] = 1, 2  # road above, a car below left, void below right
    for drive, frames in {"drive_a": 2, "drive_b": 3}.items():
        (tmp_path / "train" / drive).mkdir(parents=True)
        for frame in range(frames):
            Image.new("RGB", (12, 8), (90, 90, 90)).save(tmp_path / "train" / drive / f"f{frame}.jpg")
            Image.fromarray(raw).save(tmp_path / "train" / drive / f"f{frame}_ids.png")
    train = load_domain("mine", "train", data_dir=str(tmp_path))
    assert len(train) == 5 and train["group"] == ["drive_a"] * 2 + ["drive_b"] * 3
    label = np.asarray(train[0]["label"])
    assert (label[:4] == 0).all() and (label[4:, :6] == 13).all() and (label[4:, 6:] == 255).all()
    raw[0, 0] = 3
    Image.fromarray(raw).save(tmp_path / "train" / "drive_b" / "f2_ids.png")
    with pytest.raises(ValueError, match=r"f2_ids\.png"):
        load_domain("mine", "train", data_dir=str(tmp_path))
