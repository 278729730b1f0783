"""Does TMT beat vanilla fine-tuning? The paper's protocol over source -> target pairs and seeds, side by side.

For every pair and seed: a source model (trained once per source domain and seed), ACTE on the pair (when a method
needs it), then the same budget on the same labelled target images for `finetune` and every method of `--methods`
(train.py's transfer methods, self-training included, and `oracle`: tmt_paper fed the generator's ground-truth shift
mask). Writes OUTPUT_DIR/benchmark.json (every run's per-class IoU; finished runs are kept when the script is run
again), OUTPUT_DIR/benchmark.md and summary.json (mIoU per pair, every method's gain over finetune with a paired
bootstrap 95% interval over the (pair, seed) runs, and finetune's seed-to-seed noise) and OUTPUT_DIR/gains.png.

    python examples/research/benchmark.py                  # all 20 ordered pairs of the 5 generated domains, 3 seeds
    python examples/research/benchmark.py --quick          # 4 pairs x 2 seeds
    python examples/research/benchmark.py --pairs synthetic/clear:synthetic/night --methods oracle tmt_paper -- --transfer_steps 1800
    python examples/research/benchmark.py --quick --methods selftrain tmt   # the self-training methods
    python examples/research/benchmark.py --pairs cityscapes:bdd100k --seeds 1 -- --preset base --image_size 512 1024
    python examples/research/benchmark.py --workers 12     # (source, seed) groups in parallel, e.g. on a GPU with many cores

Arguments after `--` go to examples/research/train_variants.py (train.py with the arms' flags) for every run.
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

TRANSFER_METHODS = ("finetune", "align_patch", "tmt_paper", "selftrain", "tmt", "oracle")
QUICK_PAIRS = [
    "synthetic/clear:synthetic/night",
    "synthetic/clear:synthetic/rain",
    "synthetic/fog:synthetic/autumn",
    "synthetic/autumn:synthetic/fog",
]
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_variants.py")


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
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=TRANSFER_METHODS,
        default=["finetune", "align_patch", "tmt_paper"],
        help="transfer methods compared (finetune is always run: every gain is against it)",
    )
    parser.add_argument("--output_dir", default="outputs/benchmark")
    parser.add_argument("--workers", type=int, default=1, help="(source, seed) groups run in parallel")
    parser.add_argument("--report_only", action="store_true", help="only rebuild the table and plot from the JSON")
    args = parser.parse_args(own)
    methods = ["finetune"] + [m for m in args.methods if m != "finetune"]
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
            run = run_pair(source, target, seed, args.output_dir, methods, train_args, env)
            with lock:
                runs.append(run)
                with open(json_path + ".tmp", "w") as f:  # write, then rename: a kill never truncates the results
                    json.dump(runs, f, indent=2)
                os.replace(json_path + ".tmp", json_path)
            print(
                f"{source} -> {target} seed {seed}: "
                + ", ".join(f"{m} {100 * run[m]['mean_iou']:.2f}" for m in ["source", *methods]),
                flush=True,
            )

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for future in [pool.submit(run_group, seed, source, targets) for (seed, source), targets in groups.items()]:
            future.result()

    table, summary = summarise(runs, pairs, methods)
    with open(os.path.join(args.output_dir, "benchmark.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot_gains(runs, pairs, methods, os.path.join(args.output_dir, "gains.png"))
    print(table)
    print(f"wall time {time.time() - started:.0f} s; {json_path}")


def run_pair(source, target, seed, output_dir, methods, train_args, env):
    """Source model (reused if trained), ACTE, then the transfer methods on one pair; returns its result row."""
    tag = lambda name: name.replace("/", "-")  # noqa: E731
    source_dir = os.path.join(output_dir, "sources", f"{tag(source)}-seed{seed}")

    def flags(output):
        pair = ["--source", source, "--target", target, "--seed", str(seed)]
        return [*pair, "--output_dir", output, "--overwrite_output_dir", *train_args]

    if not os.path.isfile(os.path.join(source_dir, "source", "training_summary.json")):
        run_train(["--stage", "source", *flags(source_dir)], env)
    pair_dir = os.path.join(output_dir, "runs", f"{tag(source)}2{tag(target)}-seed{seed}")
    common = flags(pair_dir)
    acte_done = os.path.isfile(os.path.join(pair_dir, "acte", "training_summary.json"))
    if {"tmt_paper", "tmt"} & set(methods) and not acte_done:
        run_train(["--stage", "acte", *common], env)
    transfer = [
        "--stage",
        "transfer",
        "--source_model",
        os.path.join(source_dir, "source"),
        "--resume_from_checkpoint",
        "latest",
        *common,
    ]
    run_train([*transfer, "--method", *[m for m in methods if m != "oracle"]], env)
    if "oracle" in methods:
        run_train([*transfer, "--method", "tmt_paper", "--focus_map", "oracle"], env)
    with open(os.path.join(pair_dir, "results.json")) as f:
        result = json.load(f)
    run = {"source_domain": source, "target_domain": target, "seed": seed}
    for method in ["source", *methods]:
        metrics = result["tmt_paper-oracle" if method == "oracle" else method]["target_val"]
        run[method] = {"mean_iou": metrics["mean_iou"], "per_category_iou": metrics["per_category_iou"]}
    return run


def paired_bootstrap(differences: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of paired differences, resampling the (pair, seed) units."""
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (resamples, len(differences)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(runs, pairs, methods):
    """
    Markdown and JSON: mIoU per pair (mean ± std over seeds), then every method's gain over finetune averaged over
    all (pair, seed) units with a paired bootstrap 95% interval, and finetune's seed-to-seed noise.
    """
    methods = [m for m in methods if all(m in r for r in runs)]
    wanted = set(pairs)
    rows = [r for r in runs if (r["source_domain"], r["target_domain"]) in wanted]
    shown = ["source", *methods]
    lines = ["| pair | seeds | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    noise = []
    for pair in pairs:
        pair_rows = [r for r in rows if (r["source_domain"], r["target_domain"]) == pair]
        if not pair_rows:
            continue
        miou = {m: np.array([100 * r[m]["mean_iou"] for r in pair_rows]) for m in shown}
        lines.append(
            f"| {pair[0]} → {pair[1]} | {len(pair_rows)} | "
            + " | ".join(f"{miou[m].mean():.2f} ± {miou[m].std():.2f}" for m in shown)
            + " |"
        )
        if len(pair_rows) > 1:
            noise.append(miou["finetune"].std(ddof=1))
    summary = {
        "units": len(rows),
        "pairs": len({(r["source_domain"], r["target_domain"]) for r in rows}),
        "mean_miou": {m: float(np.mean([100 * r[m]["mean_iou"] for r in rows])) for m in shown if rows},
        "gain_over_finetune": {},
        "finetune_seed_std": float(np.mean(noise)) if noise else None,
    }
    if rows:
        lines.append(
            f"| **mean over {len(rows)} runs** | | "
            + " | ".join(f"{summary['mean_miou'][m]:.2f}" for m in shown)
            + " |"
        )
        lines += ["", "| gain over finetune (mIoU points) | mean | paired bootstrap 95% CI |", "|---|---|---|"]
        for method in [m for m in methods if m != "finetune"]:
            differences = np.array([100 * (r[method]["mean_iou"] - r["finetune"]["mean_iou"]) for r in rows])
            low, high = paired_bootstrap(differences)
            summary["gain_over_finetune"][method] = {"mean": float(differences.mean()), "ci95": [low, high]}
            lines.append(f"| {method} − finetune | {differences.mean():+.2f} | [{low:+.2f}, {high:+.2f}] |")
        if noise:
            lines.append(f"\nfinetune seed-to-seed standard deviation, mean over pairs: {np.mean(noise):.2f} mIoU")
    return "\n".join(lines) + "\n", summary


def plot_gains(runs, pairs, methods, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [m for m in methods if m != "finetune" and all(m in r for r in runs)]
    labels, gains = [], {m: [] for m in compared}
    for pair in pairs:
        pair_rows = [r for r in runs if (r["source_domain"], r["target_domain"]) == pair]
        if pair_rows:
            labels.append(f"{pair[0].split('/')[-1]}→{pair[1].split('/')[-1]}")
            for m in compared:
                gains[m].append(np.mean([100 * (r[m]["mean_iou"] - r["finetune"]["mean_iou"]) for r in pair_rows]))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(compared))
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(labels) + 2), 4))
    for index, method in enumerate(compared):
        axis.bar(x + (index - (len(compared) - 1) / 2) * width, gains[method], width, label=f"{method} − finetune")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(x, labels, rotation=45, ha="right")
    axis.set_ylabel("target mIoU gain (points)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
