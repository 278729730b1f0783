"""Where the vehicle pixels go: the confusion-matrix rows of car, truck, bus and train for the part-2 models (protocol
part 4), as a markdown table from `confusion.json`. Each entry of that file is the output of

    python examples/evaluate.py --model outputs/v4/runs/<run>-<pair>-seed0/<method> --data synthetic/<target> \
        --num_samples 100 --confusions car truck bus train [--shift_mask_as_map]

(`--shift_mask_as_map` for the oracle runs; `<method>` is `finetune` for the `alltarget` runs).
"""

import json
import os

RUNS = ("finetune", "align_patch", "oracle", "alltarget")

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "confusion.json")) as f:
    confusion = json.load(f)
print("| pair | class | pixels | " + " | ".join(RUNS) + " |")
print("|---|---|---|" + "---|" * len(RUNS))
for pair, runs in confusion.items():
    for name in ("truck", "bus", "train"):
        cells = []
        for run in RUNS:
            row = dict(runs[run]["confusions"][name])
            row.pop("pixels")
            cells.append(", ".join(f"{predicted} {share:.2f}" for predicted, share in list(row.items())[:3]))
        print(f"| {pair} | {name} | {runs['finetune']['confusions'][name]['pixels']} | " + " | ".join(cells) + " |")
