"""Paired comparison of transfer methods over units (seeds, or domain pairs with `--by pair`): mean mIoU per method,
and each method minus a baseline with a 95% t-interval over the units (and the baseline's spread, the noise floor).

    python examples/results/v5_selftraining/paired.py examples/results/v5_selftraining/camvid/*.json
    python examples/results/v5_selftraining/paired.py --by pair examples/results/v5_selftraining/quick_pairs/*.json

Files of the same unit are merged (e.g. a control run in its own output folder).
"""

import argparse
import json

import numpy as np

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t(0.975, df)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="train.py results.json files")
    parser.add_argument("--baselines", nargs="+", default=["finetune", "selftrain", "tmt-shuffled"])
    parser.add_argument("--by", choices=["seed", "pair"], default="seed", help="the paired unit")
    args = parser.parse_args()
    by_unit = {}
    for path in args.results:
        with open(path) as f:
            result = json.load(f)
        run_args = result["args"]
        unit = f"seed {run_args['seed']}" if args.by == "seed" else f"{run_args['source']} → {run_args['target']}"
        by_unit.setdefault(unit, {}).update(result)
    runs = list(by_unit.values())
    methods = [
        m
        for m in ("source", "finetune", "align_patch", "tmt_paper", "selftrain", "tmt", "tmt-shuffled")
        if all(m in r for r in runs)
    ]
    miou = {m: np.array([100 * r[m]["target_val"]["mean_iou"] for r in runs]) for m in methods}
    units = list(by_unit)
    first = runs[0]["args"]
    split = first["target_eval_split"] or first["eval_split"]
    print(f"{', '.join(units)}; " + (f"target {first['target']} ({split})" if args.by == "seed" else split) + "\n")
    print("| method | " + " | ".join(units) + " | mean |")
    print("|---|" + "---|" * (len(units) + 1))
    for m in methods:
        print(f"| {m} | " + " | ".join(f"{v:.2f}" for v in miou[m]) + f" | {miou[m].mean():.2f} |")
    for baseline in (b for b in args.baselines if b in miou):
        print(f"\n| method − {baseline} | mean | 95% t-interval over {len(units)} {args.by}s |\n|---|---|---|")
        for m in methods:
            if m in (baseline, "source"):
                continue
            diff = miou[m] - miou[baseline]
            half = T_975[len(diff) - 1] * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            print(f"| {m} | {diff.mean():+.2f} | [{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}] |")
        if len(units) > 1:
            print(f"\n{baseline}'s {args.by}-to-{args.by} standard deviation: {miou[baseline].std(ddof=1):.2f} mIoU")


if __name__ == "__main__":
    main()
