"""
Label spaces: the classes a model predicts, and the tables that map a dataset's labels into them.

A dataset's labels are in its *native* space (after its registry entry's raw-id mapping: Cityscapes train ids for
Cityscapes, BDD100K, GTA5, ACDC, Mapillary and CamVid; IDD level-1 ids for IDD-Lite). Training both domains in one
space maps each through `space_mapping(native, space)`:

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
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# IDD's level-1 classes (Varma et al., WACV 2019), coloured with the Cityscapes colour of each group's main class
# (road, sidewalk, person, car, traffic sign, building, sky).
IDD_LEVEL1_CLASSES = (
    "drivable", "non-drivable", "living things", "vehicles", "roadside objects", "far objects", "sky",
)  # fmt: skip
IDD_LEVEL1_PALETTE = (
    (128, 64, 128), (244, 35, 232), (220, 20, 60), (0, 0, 142), (220, 220, 0), (70, 70, 70), (70, 130, 180),
)  # fmt: skip

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
CITYSCAPES_TO_IDD_LEVEL1 = lookup_table({
    0: 0, 1: 1, 9: 1, 11: 2, 12: 2, 13: 3, 14: 3, 15: 3, 16: 3, 17: 3, 18: 3, 3: 4, 4: 4, 5: 4, 6: 4, 7: 4,
    2: 5, 8: 5, 10: 6, IGNORE_INDEX: IGNORE_INDEX,
}, default=UNPLACED, dtype=np.int16)  # fmt: skip
SPACE_MAPPINGS = {("cityscapes", "idd_level1"): CITYSCAPES_TO_IDD_LEVEL1}


def get_label_space(name: str) -> LabelSpace:
    if name not in LABEL_SPACES:
        raise ValueError(f"Unknown label space {name!r}; expected one of {sorted(LABEL_SPACES)}")
    return LABEL_SPACES[name]


def space_mapping(native: str, space: str) -> np.ndarray:
    """The int16 table from `native` ids to `space` ids (identity within a space); an error if there is none."""
    for name in (native, space):
        get_label_space(name)  # an unknown name is an error here
    if native == space:
        return lookup_table({i: i for i in range(len(LABEL_SPACES[space].classes))} | {IGNORE_INDEX: IGNORE_INDEX},
                            default=UNPLACED, dtype=np.int16)  # fmt: skip
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
