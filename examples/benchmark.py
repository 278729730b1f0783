"""Does TMT beat vanilla fine-tuning? The paper's protocol over source -> target pairs and seeds, side by side.

For every pair and seed: a source model (trained once per source domain and seed), ACTE on the pair, then the same
fine-tuning budget on the same labelled target images for `finetune` (TMA off), `patch` (TMA fed ACTE's discriminator
on an equal-sized patch grid) and `tmt` (TMA fed ACTE's adaptive regions). Writes OUTPUT_DIR/benchmark.json (every
run's per-class IoU), OUTPUT_DIR/benchmark.md (mean ± std per pair and the average over pairs) and
OUTPUT_DIR/gains.png.

    python examples/benchmark.py                  # all 20 ordered pairs of the 5 generated domains, 3 seeds
    python examples/benchmark.py --quick          # 4 pairs x 2 seeds (47 minutes on 2 CPU cores shared with other work)
    python examples/benchmark.py --pairs cityscapes:bdd100k --seeds 1 -- --preset base --image_size 512 1024
    python examples/benchmark.py --workers 12     # (source, seed) groups in parallel, e.g. on a GPU with many cores

Arguments after `--` go to examples/train.py for every run.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tmt_hf.data import SYNTHETIC_DOMAINS

METHODS = ("source", "finetune", "patch", "tmt")
QUICK_PAIRS = ["synthetic/clear:synthetic/night", "synthetic/clear:synthetic/rain", "synthetic/fog:synthetic/autumn",
               "synthetic/autumn:synthetic/fog"]  # fmt: skip
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def run_train(args_list, env=None):
    result = subprocess.run([sys.executable, TRAIN, *args_list], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args_list)} failed:\n{result.stderr[-3000:]}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    own, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=None, help="source:target pairs (default: all 20 generated)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 pairs x 2 seeds")
    parser.add_argument("--output_dir", default="outputs/benchmark")
    parser.add_argument("--workers", type=int, default=1, help="(source, seed) groups run in parallel")
    parser.add_argument("--report_only", action="store_true", help="only rebuild the table and plot from the JSON")
    args = parser.parse_args(own)
    if args.quick:
        args.pairs, args.seeds = args.pairs or QUICK_PAIRS, min(args.seeds, 2)
    pairs = [
        tuple(p.split(":"))
        for p in (args.pairs or [f"{s}:{t}" for s, t in itertools.permutations(SYNTHETIC_DOMAINS, 2)])
    ]
    if args.workers < 1:
        sys.exit("--workers must be >= 1")
    if any(len(p) != 2 for p in pairs):
        sys.exit("--pairs takes source:target items")
    os.makedirs(args.output_dir, exist_ok=True)
    json_path = os.path.join(args.output_dir, "benchmark.json")
    runs = json.load(open(json_path)) if os.path.isfile(json_path) else []  # resume: finished runs are kept
    done = {(r["source_domain"], r["target_domain"], r["seed"]) for r in runs}
    started = time.time()

    # One group per (seed, source): its source model is trained once, then every target of that source in turn.
    groups = {}
    for seed in range(0 if args.report_only else args.seeds):
        for source, target in pairs:
            if (source, target, seed) not in done:
                groups.setdefault((seed, source), []).append(target)
    env = None
    if args.workers > 1:  # share the cores between the parallel runs
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.workers)))
    lock = threading.Lock()

    def run_group(seed, source, targets):
        for target in targets:
            run = run_pair(source, target, seed, args.output_dir, train_args, env)
            with lock:
                runs.append(run)
                with open(json_path + ".tmp", "w") as f:  # write, then rename: a kill never truncates the results
                    json.dump(runs, f, indent=2)
                os.replace(json_path + ".tmp", json_path)
            print(f"{source} -> {target} seed {seed}: " + ", ".join(f"{m} {100 * run[m]['mean_iou']:.2f}" for m in METHODS),
                  flush=True)  # fmt: skip

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for future in [pool.submit(run_group, seed, source, targets) for (seed, source), targets in groups.items()]:
            future.result()

    table = summarise(runs, pairs)
    with open(os.path.join(args.output_dir, "benchmark.md"), "w") as f:
        f.write(table)
    plot_gains(runs, pairs, os.path.join(args.output_dir, "gains.png"))
    print(table)
    print(f"wall time {time.time() - started:.0f} s; {json_path}")


def run_pair(source, target, seed, output_dir, train_args, env):
    """Source model (reused if trained), ACTE, then the three transfer methods on one pair; returns its result row."""
    tag = lambda name: name.replace("/", "-")  # noqa: E731
    source_dir = os.path.join(output_dir, "sources", f"{tag(source)}-seed{seed}")
    if not os.path.isfile(os.path.join(source_dir, "source", "training_summary.json")):
        run_train(["--stage", "source", "--source", source, "--target", target, "--seed", str(seed),
                   "--output_dir", source_dir, "--overwrite_output_dir", *train_args], env)  # fmt: skip
    pair_dir = os.path.join(output_dir, "runs", f"{tag(source)}2{tag(target)}-seed{seed}")
    common = ["--source", source, "--target", target, "--seed", str(seed), "--output_dir", pair_dir,
              "--overwrite_output_dir", *train_args]  # fmt: skip
    run_train(["--stage", "acte", *common], env)
    run_train(["--stage", "transfer", "--method", "all", "--source_model", os.path.join(source_dir, "source"),
               "--resume_from_checkpoint", "latest", *common], env)  # fmt: skip
    with open(os.path.join(pair_dir, "results.json")) as f:
        result = json.load(f)
    run = {"source_domain": source, "target_domain": target, "seed": seed}
    for method in METHODS:
        metrics = result[method]["target_val"]
        run[method] = {"mean_iou": metrics["mean_iou"], "per_category_iou": metrics["per_category_iou"]}
    return run


def pair_gains(runs, pair):
    rows = [r for r in runs if (r["source_domain"], r["target_domain"]) == pair]
    miou = {m: np.array([100 * r[m]["mean_iou"] for r in rows]) for m in METHODS}
    return miou, {"tmt - finetune": miou["tmt"] - miou["finetune"], "tmt - patch": miou["tmt"] - miou["patch"],
                  "patch - finetune": miou["patch"] - miou["finetune"],
                  "finetune - source": miou["finetune"] - miou["source"]}  # fmt: skip


def summarise(runs, pairs) -> str:
    """Markdown: mIoU and gains, mean ± std over seeds per pair, then the average over pairs."""
    keys = ["tmt - finetune", "tmt - patch", "patch - finetune", "finetune - source"]
    lines = ["| pair | seeds | source-only | finetune | patch | TMT | " + " | ".join(keys) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(keys)]  # fmt: skip
    averages = {k: [] for k in keys + list(METHODS)}
    for pair in pairs:
        miou, gains = pair_gains(runs, pair)
        if not len(miou["tmt"]):
            continue
        cells = [f"{miou[m].mean():.2f} ± {miou[m].std():.2f}" for m in METHODS]
        cells += [f"{gains[k].mean():+.2f} ± {gains[k].std():.2f}" for k in keys]
        lines.append(f"| {pair[0]} → {pair[1]} | {len(miou['tmt'])} | " + " | ".join(cells) + " |")
        for k in keys:
            averages[k].append(gains[k].mean())
        for m in METHODS:
            averages[m].append(miou[m].mean())
    n = len(averages["tmt"])
    if n:
        cells = [f"{np.mean(averages[m]):.2f}" for m in METHODS] + [f"{np.mean(averages[k]):+.2f}" for k in keys]
        lines.append(f"| **average over {n} pairs** | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_gains(runs, pairs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, tmt_gain, patch_gain = [], [], []
    for pair in pairs:
        _, gains = pair_gains(runs, pair)
        if len(gains["tmt - finetune"]):
            labels.append(f"{pair[0].split('/')[-1]}→{pair[1].split('/')[-1]}")
            tmt_gain.append(gains["tmt - finetune"].mean())
            patch_gain.append(gains["patch - finetune"].mean())
    x = np.arange(len(labels))
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(labels) + 2), 4))
    axis.bar(x - 0.2, tmt_gain, 0.4, label="TMT − finetune")
    axis.bar(x + 0.2, patch_gain, 0.4, label="patch − finetune")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(x, labels, rotation=45, ha="right")
    axis.set_ylabel("target mIoU gain (points)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
