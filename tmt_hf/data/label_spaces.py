"""
Label spaces: the classes a model predicts, and the tables that map a dataset's labels into them.

A dataset's label files hold *raw* ids, which a table below maps into its *native* space: Cityscapes train ids for
Cityscapes, ACDC, GTA5 and KITTI (from Cityscapes label ids), Mapillary Vistas (from its v1.2 label names), BDD100K
(already train ids) and CamVid (from SegNet's 11 classes); IDD level-1 ids for IDD-Lite (already level-1 ids).
Training both domains in one space maps each through `space_mapping(native, space)`:

| Cityscapes train id | IDD level-1 id |
|---|---|
| road 0 | drivable 0 |
| sidewalk 1, terrain 9 | non-drivable 1 |
| person 11, rider 12 | living things 2 |
| car 13, truck 14, bus 15, train 16, motorcycle 17, bicycle 18 | vehicles 3 |
| wall 3, fence 4, pole 5, traffic light 6, traffic sign 7 | roadside objects 4 |
| building 2, vegetation 8 | far objects 5 |
| sky 10 | sky 6 |

IDD level-1 labels cannot be placed in the Cityscapes space (one level-1 class holds several Cityscapes classes).
"""

from dataclasses import dataclass

import numpy as np

from ..configuration_tmt import CITYSCAPES_CLASSES

IGNORE_INDEX = 255
UNPLACED = -1  # in a space mapping: a label the target space has no class for


@dataclass(frozen=True)
class LabelSpace:
    """The classes a model predicts (`id2label` order), what their ids are called, and a colour per class."""

    name: str
    classes: tuple[str, ...]
    id_name: str  # e.g. "Cityscapes train ids", for error messages
    palette: tuple[tuple[int, int, int], ...]

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.classes))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.classes)}


# The Cityscapes colours of the 19 train ids.
CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
# IDD's level-1 classes (Varma et al., WACV 2019), coloured with the Cityscapes colour of each group's main class
# (road, sidewalk, person, car, traffic sign, building, sky).
IDD_LEVEL1_CLASSES = (
    "drivable",
    "non-drivable",
    "living things",
    "vehicles",
    "roadside objects",
    "far objects",
    "sky",
)
IDD_LEVEL1_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (220, 20, 60),
    (0, 0, 142),
    (220, 220, 0),
    (70, 70, 70),
    (70, 130, 180),
)

LABEL_SPACES = {
    "cityscapes": LabelSpace("cityscapes", CITYSCAPES_CLASSES, "Cityscapes train ids", CITYSCAPES_PALETTE),
    "idd_level1": LabelSpace("idd_level1", IDD_LEVEL1_CLASSES, "IDD level-1 ids", IDD_LEVEL1_PALETTE),
}


def lookup_table(pairs: dict[int, int], default: int = IGNORE_INDEX, dtype=np.uint8) -> np.ndarray:
    """A 256-entry raw-id -> train-id table; ids not listed map to `default` (255: ignored)."""
    table = np.full(256, default, dtype=dtype)
    for raw, train in pairs.items():
        table[raw] = train
    return table


# Space -> space tables: int16, UNPLACED where the target space has no class for a label; 255 stays 255.
CITYSCAPES_TO_IDD_LEVEL1 = lookup_table(
    {
        0: 0,
        1: 1,
        9: 1,
        11: 2,
        12: 2,
        13: 3,
        14: 3,
        15: 3,
        16: 3,
        17: 3,
        18: 3,
        3: 4,
        4: 4,
        5: 4,
        6: 4,
        7: 4,
        2: 5,
        8: 5,
        10: 6,
        IGNORE_INDEX: IGNORE_INDEX,
    },
    default=UNPLACED,
    dtype=np.int16,
)
SPACE_MAPPINGS = {("cityscapes", "idd_level1"): CITYSCAPES_TO_IDD_LEVEL1}

# Raw id -> native id tables (uint8; 255 where a raw id has no class).

# Cityscapes label ids 0-33 (cityscapesScripts' helpers/labels.py), as in gtFine's *_labelIds.png, ACDC's
# *_gt_labelIds.png, GTA5's palette indices and KITTI's semantic/ files, by name. Ids 0-6 are void; parking, rail
# track, guard rail, bridge, tunnel, polegroup, caravan and trailer have no train id.
CITYSCAPES_LABEL_NAMES = (
    *("unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road"),
    *("sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole"),
    *("polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car"),
    *("truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"),
)
CITYSCAPES_ID_TO_TRAIN_ID = lookup_table(
    {
        label_id: CITYSCAPES_CLASSES.index(name)
        for label_id, name in enumerate(CITYSCAPES_LABEL_NAMES)
        if name in CITYSCAPES_CLASSES
    }
)

# Mapillary Vistas v1.2 labels -> Cityscapes train ids: the 66 -> 19 table of HRDA and MIC
# (tools/convert_datasets/mapillary.py), as (label name in config_v1.2.json, its index there, train id). A download is
# mapped by name, so that the ids come from its own config; every other label (bike lanes, crosswalks, other lane
# markings, guard rails, street lights, ...) is ignored.
MAPILLARY_TABLE = (
    ("construction--flat--road", 13, 0),
    ("marking--general", 24, 0),
    ("object--manhole", 41, 0),
    ("construction--barrier--curb", 2, 1),
    ("construction--flat--sidewalk", 15, 1),
    ("construction--structure--building", 17, 2),
    ("construction--barrier--wall", 6, 3),
    ("construction--barrier--fence", 3, 4),
    ("object--support--pole", 45, 5),
    ("object--support--utility-pole", 47, 5),
    ("object--traffic-light", 48, 6),
    ("object--traffic-sign--front", 50, 7),
    ("nature--vegetation", 30, 8),
    ("nature--terrain", 29, 9),
    ("nature--sky", 27, 10),
    ("human--person", 19, 11),
    ("human--rider--bicyclist", 20, 12),
    ("human--rider--motorcyclist", 21, 12),
    ("human--rider--other-rider", 22, 12),
    ("object--vehicle--car", 55, 13),
    ("object--vehicle--truck", 61, 14),
    ("object--vehicle--bus", 54, 15),
    ("object--vehicle--on-rails", 58, 16),
    ("object--vehicle--motorcycle", 57, 17),
    ("object--vehicle--bicycle", 52, 18),
)
MAPILLARY_NAME_TO_TRAIN_ID = {name: train_id for name, _, train_id in MAPILLARY_TABLE}
# By index, for a copy without its config (a Hub or local image/label dataset with the v1.2 ids).
MAPILLARY_TO_TRAIN_ID = lookup_table({index: train_id for _, index, train_id in MAPILLARY_TABLE})

# CamVid's 11 classes in the SegNet release, and void 11, -> Cityscapes train ids.
CAMVID_NAMES = (
    *("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car", "pedestrian"),
    *("bicyclist", "void"),
)
CAMVID_TO_TRAIN_ID = lookup_table({0: 10, 1: 2, 2: 5, 3: 0, 4: 1, 5: 8, 6: 7, 7: 4, 8: 13, 9: 11, 10: 12})


def get_label_space(name: str) -> LabelSpace:
    if name not in LABEL_SPACES:
        raise ValueError(f"Unknown label space {name!r}; expected one of {sorted(LABEL_SPACES)}")
    return LABEL_SPACES[name]


def space_mapping(native: str, space: str) -> np.ndarray:
    """The int16 table from `native` ids to `space` ids (identity within a space); an error if there is none."""
    for name in (native, space):
        get_label_space(name)  # an unknown name is an error here
    if native == space:
        return lookup_table(
            {i: i for i in range(len(LABEL_SPACES[space].classes))} | {IGNORE_INDEX: IGNORE_INDEX},
            default=UNPLACED,
            dtype=np.int16,
        )
    if (native, space) not in SPACE_MAPPINGS:
        raise ValueError(
            f"Labels in the {native!r} space cannot be mapped into the {space!r} space; label spaces they map into: "
            f"{sorted({native} | {s for n, s in SPACE_MAPPINGS if n == native})}"
        )
    return SPACE_MAPPINGS[native, space]


def label_space_of(id2label: dict) -> LabelSpace | None:
    """The registered space whose classes are a model's `id2label` (in order), or None."""
    names = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    return next((space for space in LABEL_SPACES.values() if space.classes == names), None)


__all__ = [
    "CITYSCAPES_PALETTE",
    "CITYSCAPES_TO_IDD_LEVEL1",
    "IDD_LEVEL1_CLASSES",
    "IDD_LEVEL1_PALETTE",
    "LABEL_SPACES",
    "LabelSpace",
    "get_label_space",
    "label_space_of",
    "lookup_table",
    "space_mapping",
]
