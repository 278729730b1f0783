"""
A dataset of your own in its own layout, registered as a benchmark: one reader (list the files, pair them, say what
the label ids are) and one registry entry.

The layout read here: `<root>/train/<drive>/<frame>.jpg`, with `<frame>_ids.png` beside each image holding 0 void,
1 road and 2 car. Each drive is a group, so a row range cut at a drive's boundary carves validation by drive.

    python examples/custom_dataset.py path/to/mine      # check it: frames, drives and the label ids found
    accelerate launch examples/train.py --method_file examples/custom_dataset.py --target mine \
      --data_dir path/to/mine --target_train_split "train[:n]" --target_eval_split "train[n:]"

(`--method_file` imports any module before the data are read, so the file that registers a dataset works there too.)
"""

import os
import sys

import numpy as np

from tmt_hf.data import BENCHMARKS, Benchmark, LabelEncoding, Layout, group_boundary, load_domain, lookup_table
from tmt_hf.data.readers import files_by_key, pair

# Raw ids in the label files -> Cityscapes train ids (road 0, car 13); void (0) and unlisted ids become 255.
MY_IDS = LabelEncoding("my ids: 0 void, 1 road, 2 car", raw_ids=(0, 1, 2), mapping=lookup_table({1: 0, 2: 13}))


def read_mine(root, split, with_labels):
    folder = os.path.join(root, split)
    images = files_by_key(folder, "*/*.jpg", (".jpg",))
    labels = {MY_IDS: files_by_key(folder, "*/*_ids.png", ("_ids.png",))} if with_labels else None
    return pair(
        "Mine",
        images,
        labels,
        folder,
        label_for=lambda key: os.path.join(folder, f"{key}_ids.png"),
        group=lambda key: key.split(os.sep)[0],
    )


BENCHMARKS["mine"] = Benchmark(
    "mine",
    layout=Layout("Mine", read_mine, markers=("train",), expected="`train/<drive>/*.jpg`"),
    classes=(0, 13),  # mIoU averages over the classes the dataset labels
)

if __name__ == "__main__":
    train = load_domain("mine", "train", data_dir=sys.argv[1])
    ids, counts = np.unique(np.concatenate([np.asarray(label).ravel() for label in train["label"]]), return_counts=True)
    print(
        f"{len(train)} frames in {len(set(train['group']))} drives; label ids (Cityscapes train ids) {dict(zip(ids.tolist(), counts.tolist()))}"
    )
    print(f"validation by drive, at least 20% of the frames: train[{group_boundary(train, max(1, len(train) // 5))}:]")
