"""Measure ACTE on the generated benchmark and print JSON:

1. region quality: achievable segmentation accuracy (ASA) of ACTE's hard regions against the labels, next to an
   equal-sized grid with the same number of regions;
2. shift detection: AUROC of the focus map (what TMA receives) and of 1 - transferability against the generator's
   per-pixel shift mask on held-out target images, pooled over all pixels and as the mean of per-image AUROCs
   (target: >= 0.80), and per class (`shift_by_class`). The same trained ACTE is also scored with the earlier
   formulas (`SCORING_VARIANTS`);
3. held-out discriminator accuracy on both domains.

    python examples/research/benchmark_acte.py                                   # clear -> night, fog, rain, autumn
    python examples/research/benchmark_acte.py --acte outputs/tmt-clear2night/acte --targets synthetic/night
    python examples/research/benchmark_acte.py --report examples/results/acte/*.json      # the README table from saved JSON
    python examples/research/benchmark_acte.py --steps 450 --monitor_every 50 --ema_decay 0.99 --output F   # trajectories
    python examples/research/benchmark_acte.py --report F --stopping_rules         # stopping rules read off the trajectories
    python examples/research/benchmark_acte.py --report F --by_class               # where the map finds the shift, per class

Selection uses `--eval_split validation` (the default); report with `--eval_split test`.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tmt_hf import ACTEConfig, ACTEModel
from tmt_hf.configuration_acte import NORMALIZATIONS
from tmt_hf.configuration_tmt import CITYSCAPES_CLASSES
from tmt_hf.data import SegmentationTransform, load_domain
from tmt_hf.metrics import binary_auroc, shift_auroc
from tmt_hf.training import write_report


def batches(dataset, transform, batch_size, columns=("image", "label")):
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        out = transform({"image": rows["image"], "label": rows["label"]})
        extra = {c: rows[c] for c in columns if c not in ("image", "label")}
        yield torch.stack(out["pixel_values"]), torch.stack(out["labels"]), extra


def achievable_segmentation_accuracy(
    regions: torch.Tensor, labels: torch.Tensor, num_classes: int = 19
) -> tuple[int, int]:
    """(pixels whose region's majority label is their own, labelled pixels) for one image."""
    valid = labels != 255
    regions, labels = regions[valid].long(), labels[valid].long()
    _, regions = torch.unique(regions, return_inverse=True)
    counts = torch.zeros(int(regions.max()) + 1, num_classes, dtype=torch.long)
    counts.index_put_((regions, labels), torch.ones_like(labels), accumulate=True)
    return int(counts.max(dim=1).values.sum()), int(valid.sum())


# Read-time scoring formulas compared on one trained ACTE (ACTEConfig fields; see its docstring).
SCORING_VARIANTS = {
    "default": {},
    "absolute (no relative scoring)": {"relative_scoring": False},
    "focus = 1 - t (alpha 1)": {"focus_alpha": 1.0},
    "gated mixing": {"focus_mixing": "gated"},
    "sum mixing": {"focus_mixing": "sum"},
    "entropy t, sum mixing (v0.1)": {
        "transferability_score": "entropy",
        "focus_mixing": "sum",
        "relative_scoring": False,
    },
}


def evaluation_batches(dataset, size, columns=("image", "label")) -> list:
    """`batches` of a held-out dataset under the evaluation transform, built once and reused at every check."""
    return list(batches(dataset, SegmentationTransform(train=False, size=size), 16, columns))


@torch.no_grad()
def discriminator_accuracy(acte, parts) -> float:
    """Region-level accuracy of ACTE's domain discriminator on the (source, target) `evaluation_batches`."""
    correct = total = 0
    for domain_label, part in enumerate(parts):
        for pixels, _, _ in part:
            logits = acte(pixel_values=pixels).domain_logits
            correct += ((logits > 0).long() == domain_label).sum().item()
            total += logits.numel()
    return correct / total


def shift_by_class(focus_maps, shift_masks, label_maps) -> dict:
    """
    Per class, where the focus map finds the shift and where it errs: the mean focus of the class's shifted and
    unshifted pixels, and the AUROC of its shifted pixels against every unshifted pixel (of any class).
    """
    focus, shifted, labels = (np.concatenate(maps) for maps in (focus_maps, shift_masks, label_maps))
    unshifted_focus = focus[~shifted]
    by_class = {}
    for index, name in enumerate(CITYSCAPES_CLASSES):
        own = labels == index
        if not own.any():
            continue
        positives, negatives = focus[own & shifted], focus[own & ~shifted]
        entry = {
            "shifted_pixels": int(positives.size),
            "unshifted_pixels": int(negatives.size),
            "mean_focus_shifted": round(float(positives.mean()), 4) if positives.size else None,
            "mean_focus_unshifted": round(float(negatives.mean()), 4) if negatives.size else None,
            "auroc_vs_all_unshifted": None,
        }
        if positives.size and unshifted_focus.size:
            scores = np.concatenate([positives, unshifted_focus])
            truth = np.r_[np.ones(positives.size, bool), np.zeros(unshifted_focus.size, bool)]
            entry["auroc_vs_all_unshifted"] = round(binary_auroc(scores, truth), 4)
        by_class[name] = entry
    return by_class


@torch.no_grad()
def focus_auroc_now(acte, shifted) -> dict:
    """Focus-map AUROC (the config's own formula) against the shift masks of the target `evaluation_batches`."""
    maps, masks = [], []
    for pixels, labels, extra in shifted:
        focus = F.interpolate(acte(pixel_values=pixels).focus_map[:, None], size=labels.shape[-2:], mode="bilinear")
        maps += list(focus[:, 0].flatten(1).numpy())
        masks += [np.array(m).reshape(-1) > 127 for m in extra["shift_mask"]]
    return {kind: None if value is None else round(value, 4) for kind, value in shift_auroc(maps, masks).items()}


def train_acte(args, target_name, size):
    """
    Trains one ACTE for at most `args.steps` steps. With `--monitor_every N`, every N steps it records the
    discriminator's accuracy on `--num_monitor` train-split images per domain that it does not train on (label-free)
    and, for the record only, the focus AUROC on the evaluation split; with `--stop_accuracy`, training stops at the
    first such step >= `--min_steps` whose monitor accuracy reaches it. With `--ema_decay`, the returned (and
    monitored) ACTE is the exponential moving average of the weights; the trajectory also records the last iterate
    under "iterate". Returns (acte, trajectory, steps trained).
    """
    source = load_domain(args.source, "train", num_samples=args.num_train, synthetic_size=size)
    target = load_domain(target_name, "train", num_samples=args.num_train, synthetic_size=size)
    if args.monitor_every:  # the next --num_monitor train-split scenes of each domain
        monitor = [
            evaluation_batches(
                load_domain(name, "train", num_samples=args.num_train + args.num_monitor, synthetic_size=size).select(
                    range(args.num_train, args.num_train + args.num_monitor)
                ),
                size,
            )
            for name in (args.source, target_name)
        ]
        shifted = evaluation_batches(
            load_domain(target_name, args.eval_split, num_samples=args.num_eval, synthetic_size=size),
            size,
            columns=("image", "label", "shift_mask"),
        )

        def record(model):
            return {
                "monitor_discriminator_accuracy": round(discriminator_accuracy(model, monitor), 4),
                "focus_auroc": focus_auroc_now(model, shifted),
            }

    transform = SegmentationTransform(
        train=True, size=size, crop_size=size, scale_range=(0.75, 1.25), appearance_jitter=args.appearance_jitter
    )
    config = ACTEConfig(
        cell_size=args.cell_size,
        num_iterations=args.iterations,
        kappa=args.kappa,
        encoder_channels=args.encoder_channels,
        focus_alpha=args.alpha,
        input_normalization=args.input_normalization,
        discriminator_input_normalization=args.discriminator_input_normalization,
        center_region_features=args.center_region_features,
        detach_discriminator_input=args.detach_discriminator_input,
        discriminator_input=args.discriminator_input,
        class_conditional_discriminator=args.class_conditional_discriminator,
    )
    acte = ACTEModel(config)
    optimizer = torch.optim.AdamW(acte.parameters(), lr=args.learning_rate, weight_decay=0.01)
    ema = None
    if args.ema_decay is not None:
        ema = AveragedModel(acte, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay), use_buffers=True)
    generator = torch.Generator().manual_seed(args.seed)
    half = args.batch_size // 2
    trajectory = []
    step = 0
    while step < args.steps:
        s_idx = torch.randint(0, len(source), (half,), generator=generator).tolist()
        t_idx = torch.randint(0, len(target), (half,), generator=generator).tolist()
        s = transform({"image": source[s_idx]["image"], "label": source[s_idx]["label"]})
        t = transform({"image": target[t_idx]["image"], "label": target[t_idx]["label"]})
        pixels = torch.stack(s["pixel_values"] + t["pixel_values"])
        labels = torch.stack(s["labels"] + [torch.full_like(lab, 255) for lab in t["labels"]])  # no target labels
        domains = torch.tensor([0] * half + [1] * half)
        out = acte(pixel_values=pixels, domain_labels=domains, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(acte)
        if step % 50 == 0:
            print(
                f"step {step}: domain {out.domain_loss.item():.3f} semantic {out.semantic_loss.item():.3f}", flush=True
            )
        step += 1
        if args.monitor_every and step % args.monitor_every == 0:
            acte.eval()
            trajectory.append({"step": step, **record(acte if ema is None else ema.module.eval())})
            if ema is not None:
                trajectory[-1]["iterate"] = record(acte)
            acte.train()
            print(f"step {step}: {trajectory[-1]}", flush=True)
            accuracy = trajectory[-1]["monitor_discriminator_accuracy"]
            if args.stop_accuracy is not None and step >= args.min_steps and accuracy >= args.stop_accuracy:
                break
    return (ema.module if ema is not None else acte).eval(), trajectory, step


@torch.no_grad()
def measure(acte, source_name, target_name, args, size):
    """Region quality, discriminator accuracy and shift AUROCs of every scoring variant on held-out images."""
    cell = acte.config.cell_size
    evaluation = SegmentationTransform(train=False, size=size)
    asa = {"acte": [0, 0], "grid": [0, 0]}
    correct = total = 0
    maps = {name: {"focus": [], "1 - t": []} for name in SCORING_VARIANTS}
    masks, target_labels = [], []
    original = {key: getattr(acte.config, key) for overrides in SCORING_VARIANTS.values() for key in overrides}
    for domain_label, name in enumerate((source_name, target_name)):
        data = load_domain(name, args.eval_split, num_samples=args.num_eval, synthetic_size=size)
        for pixels, labels, extra in batches(data, evaluation, 16, columns=("image", "label", "shift_mask")):
            out = acte(pixel_values=pixels)
            correct += ((out.domain_logits > 0).long() == domain_label).sum().item()
            total += out.domain_logits.numel()
            h, w = out.transferability.shape[-2:]
            hard = ACTEModel.hard_regions(out.region_assignments, cell)
            grid = (torch.arange(h)[:, None] // cell) * (w // cell) + torch.arange(w)[None, :] // cell
            for image in range(len(pixels)):
                for key, regions in (("acte", hard[image]), ("grid", grid)):
                    upsampled = F.interpolate(regions[None, None].float(), size=labels.shape[-2:], mode="nearest")[0, 0]
                    hits, count = achievable_segmentation_accuracy(upsampled, labels[image])
                    asa[key][0] += hits
                    asa[key][1] += count
            if domain_label == 0:
                continue
            masks += [np.array(m).reshape(-1) > 127 for m in extra["shift_mask"]]
            target_labels += list(labels.flatten(1).numpy())
            for variant, overrides in SCORING_VARIANTS.items():
                scored = out  # the default scoring is the forward above
                if overrides:
                    for key, value in {**original, **overrides}.items():
                        setattr(acte.config, key, value)
                    scored = acte(pixel_values=pixels)
                for key, value in (("focus", scored.focus_map), ("1 - t", 1 - scored.transferability)):
                    full = F.interpolate(value[:, None], size=labels.shape[-2:], mode="bilinear")[:, 0]
                    maps[variant][key] += list(full.flatten(1).numpy())
            for key, value in original.items():
                setattr(acte.config, key, value)
    pooled_masks = np.concatenate(masks)
    shift = {
        variant: {
            f"{key} {kind}": None if value is None else round(value, 4)
            for key, scores in entries.items()
            for kind, value in shift_auroc(scores, masks).items()
        }
        for variant, entries in maps.items()
    }
    return {
        "source": source_name,
        "target": target_name,
        "eval_split": args.eval_split,
        "asa_acte": asa["acte"][0] / asa["acte"][1],
        "asa_equal_grid": asa["grid"][0] / asa["grid"][1],
        "regions_per_image": int((size[0] // acte.config.size_multiple) * (size[1] // acte.config.size_multiple)),
        "shift_auroc": shift,
        "shift_by_class": shift_by_class(maps["default"]["focus"], masks, target_labels),
        "shifted_pixel_fraction": float(pooled_masks.mean()),
        "discriminator_accuracy": correct / total,
    }


def focus_auroc(result: dict, scoring: str, path: str) -> dict:
    """One result's AUROCs under one of `SCORING_VARIANTS` (for files written before "gated mixing" was its own
    variant, their config's own formula is the "default" entry)."""
    if scoring in result["shift_auroc"]:
        return result["shift_auroc"][scoring]
    if f"{result['config']['focus_mixing']} mixing" == scoring:
        return result["shift_auroc"]["default"]
    raise ValueError(f"{path} has no {scoring!r} scores")


def report(paths, scoring: str = "default") -> str:
    """Markdown: the focus-map AUROC (pooled / per image) under one of `SCORING_VARIANTS`, per file and target."""
    lines = [
        "| results file | split | target | focus AUROC pooled | focus AUROC per image | discriminator accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for path in paths:
        with open(path) as f:
            for result in json.load(f):
                auroc = focus_auroc(result, scoring, path)
                lines.append(
                    f"| {os.path.basename(path)} | {result['eval_split']} | {result['target']} | "
                    f"{auroc['focus pooled']:.3f} | {auroc['focus per_image']:.3f} | "
                    f"{result['discriminator_accuracy']:.3f} |"
                )
    return "\n".join(lines)


def report_by_variant(paths, scoring: str = "default") -> str:
    """
    Markdown: per discriminator variant and pair, the mean (and lowest) focus AUROC over the runs (seeds) given,
    under one of `SCORING_VARIANTS`, and a bootstrap 95% interval of the pooled mean over runs.
    """
    runs = {}
    for path in paths:
        with open(path) as f:
            for result in json.load(f):
                config = result["config"]
                steps = f"{result.get('steps', 300)} steps"
                if result.get("stop_accuracy") is not None:
                    steps = (
                        f"stop at monitor accuracy ≥ {result['stop_accuracy']} from step {result['min_steps']} "
                        f"(≤ {result['max_steps']})"
                    )
                if result.get("ema_decay") is not None:
                    steps += f", EMA {result['ema_decay']}"
                variant = (
                    f"{config['discriminator_input_normalization']}"
                    f"{', class-conditional' if config['class_conditional_discriminator'] else ''}, {steps}"
                )
                pair = f"{result['source'].split('/')[-1]} → {result['target'].split('/')[-1]}"
                auroc = focus_auroc(result, scoring, path)
                runs.setdefault((pair, variant), []).append((auroc["focus pooled"], auroc["focus per_image"]))
    lines = [
        "| pair | discriminator input, conditioning, steps | runs | focus AUROC pooled, mean (lowest) | "
        "per image, mean (lowest) | pooled mean, 95% bootstrap interval over runs |",
        "|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for (pair, variant), values in sorted(runs.items()):
        pooled, per_image = np.array(values).T
        low, high = np.percentile(rng.choice(pooled, (10000, len(pooled))).mean(axis=1), [2.5, 97.5])
        interval = f"[{low:.3f}, {high:.3f}]" if len(values) > 1 else "–"
        lines.append(
            f"| {pair} | {variant} | {len(values)} | {pooled.mean():.3f} ({pooled.min():.3f}) | "
            f"{per_image.mean():.3f} ({per_image.min():.3f}) | {interval} |"
        )
    return "\n".join(lines)


def report_by_class(paths) -> str:
    """Markdown: per target and class, `shift_by_class` averaged over the runs (seeds) given."""
    runs = {}
    for path in paths:
        with open(path) as f:
            for result in json.load(f):
                if "shift_by_class" not in result:
                    raise ValueError(f"{path} predates the per-class breakdown; run it again")
                runs.setdefault(result["target"].split("/")[-1], []).append(result["shift_by_class"])
    lines = [
        "| target | class | runs | shifted share of its pixels | mean focus, shifted | mean focus, unshifted | "
        "AUROC of its shifted pixels vs all unshifted |",
        "|---|---|---|---|---|---|---|",
    ]

    def mean(values):
        values = [v for v in values if v is not None]
        return f"{np.mean(values):.3f}" if values else "–"

    for target, by_class in sorted(runs.items()):
        for name in CITYSCAPES_CLASSES:
            entries = [run[name] for run in by_class if name in run]
            if not entries:
                continue
            share = np.mean([e["shifted_pixels"] / (e["shifted_pixels"] + e["unshifted_pixels"]) for e in entries])
            lines.append(
                f"| {target} | {name} | {len(entries)} | {share:.2f} | "
                f"{mean([e['mean_focus_shifted'] for e in entries])} | "
                f"{mean([e['mean_focus_unshifted'] for e in entries])} | "
                f"{mean([e['auroc_vs_all_unshifted'] for e in entries])} |"
            )
    return "\n".join(lines)


# The stopping rules compared on recorded trajectories: stop at the first monitored step >= MIN_STEPS whose monitor
# accuracy reaches STOP_ACCURACY, else at the last recorded step.
STOP_ACCURACIES = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
MIN_STEPS = (100, 200, 300)


def stopping_point(trajectory: list, stop_accuracy: float, min_steps: int) -> dict:
    """The trajectory entry at which a stopping rule stops (`stop_accuracy=0`: the first check from `min_steps` on)."""
    for entry in trajectory:
        if entry["step"] >= min_steps and entry["monitor_discriminator_accuracy"] >= stop_accuracy:
            return entry
    return trajectory[-1]


def report_stopping_rules(paths) -> str:
    """
    Markdown: the focus AUROC (pooled / per image, mean over runs) at which each stopping rule, applied to the
    recorded trajectories, would have stopped, per target, with the mean step; fixed step counts for reference.
    Runs with `--ema_decay` give rows for the averaged weights and for the last iterate.
    """
    runs = {}
    for path in paths:
        with open(path) as f:
            for result in json.load(f):
                trajectory, target = result["trajectory"], result["target"].split("/")[-1]
                if "iterate" in trajectory[0]:
                    runs.setdefault(f"EMA {result['ema_decay']}", {}).setdefault(target, []).append(trajectory)
                    trajectory = [{"step": entry["step"], **entry["iterate"]} for entry in trajectory]
                runs.setdefault("iterate", {}).setdefault(target, []).append(trajectory)
    targets = sorted({target for by_target in runs.values() for target in by_target})
    lines = [
        "| weights | rule | "
        + " | ".join(f"{t}: pooled / per image (mean step)" for t in targets)
        + " | worst pooled |",
        "|---|---|" + "---|" * (len(targets) + 1),
    ]
    for weights, by_target in sorted(runs.items()):
        steps_recorded = sorted({entry["step"] for entry in next(iter(by_target.values()))[0]})
        rules = [(f"fixed {steps} steps", 0.0, steps) for steps in steps_recorded if steps % 150 == 0]
        rules += [
            (f"accuracy ≥ {accuracy:.2f} from step {steps}", accuracy, steps)
            for steps in MIN_STEPS
            for accuracy in STOP_ACCURACIES
        ]
        for name, accuracy, steps in rules:
            cells, means = [], []
            for target in targets:
                if target not in by_target:
                    cells.append("–")
                    continue
                stops = [stopping_point(trajectory, accuracy, steps) for trajectory in by_target[target]]
                pooled = np.mean([s["focus_auroc"]["pooled"] for s in stops])
                per_image = np.mean([s["focus_auroc"]["per_image"] for s in stops])
                cells.append(f"{pooled:.3f} / {per_image:.3f} ({np.mean([s['step'] for s in stops]):.0f})")
                means.append(pooled)
            lines.append(f"| {weights} | {name} | " + " | ".join(cells) + f" | {min(means):.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", nargs="+", default=None, help="only print the table of these result files")
    parser.add_argument(
        "--by_variant", action="store_true", help="with --report: average over runs per discriminator variant and pair"
    )
    parser.add_argument(
        "--by_class", action="store_true", help="with --report: where the focus map finds the shift, per class"
    )
    parser.add_argument(
        "--stopping_rules", action="store_true", help="with --report: stopping rules applied to recorded trajectories"
    )
    parser.add_argument(
        "--scoring", default="default", choices=list(SCORING_VARIANTS), help="with --report: the focus formula"
    )
    parser.add_argument("--source", default="synthetic/clear")
    parser.add_argument("--targets", nargs="+", default=[f"synthetic/{d}" for d in ("night", "fog", "rain", "autumn")])
    parser.add_argument(
        "--acte", default=None, help="a trained ACTE folder (one target); default: train one per target"
    )
    parser.add_argument("--eval_split", default="validation", choices=["validation", "test"])
    parser.add_argument("--image_size", type=int, nargs=2, default=[128, 256])
    parser.add_argument("--num_train", type=int, default=200)
    parser.add_argument("--num_eval", type=int, default=40)
    parser.add_argument("--steps", type=int, default=300, help="training steps (the most, with --stop_accuracy)")
    parser.add_argument(
        "--monitor_every", type=int, default=0, help="every N steps: record the monitor accuracy and the focus AUROC"
    )
    parser.add_argument(
        "--num_monitor", type=int, default=40, help="train-split images per domain held out as the monitor"
    )
    parser.add_argument(
        "--stop_accuracy",
        type=float,
        default=None,
        help="stop at the first monitored step >= --min_steps whose monitor discriminator accuracy reaches this",
    )
    parser.add_argument("--min_steps", type=int, default=0, help="with --stop_accuracy: never stop before this step")
    parser.add_argument(
        "--ema_decay", type=float, default=None, help="return the exponential moving average of ACTE's weights"
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--cell_size", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=10.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--encoder_channels", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--input_normalization", choices=NORMALIZATIONS, default="instance")
    parser.add_argument(
        "--discriminator_input_normalization",
        choices=NORMALIZATIONS,
        default=ACTEConfig.discriminator_input_normalization,
    )
    parser.add_argument(
        "--appearance_jitter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random global appearance on both domains while training ACTE",
    )
    parser.add_argument("--center_region_features", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--discriminator_input", choices=["local", "regions"], default="local")
    parser.add_argument(
        "--class_conditional_discriminator",
        action=argparse.BooleanOptionalAction,
        default=ACTEConfig.class_conditional_discriminator,
    )
    parser.add_argument("--detach_discriminator_input", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.report:
        if args.stopping_rules:
            print(report_stopping_rules(args.report))
        elif args.by_class:
            print(report_by_class(args.report))
        elif args.by_variant:
            print(report_by_variant(args.report, args.scoring))
        else:
            print(report(args.report, args.scoring))
        return None
    if args.acte and len(args.targets) != 1:
        parser.error("--acte measures one trained ACTE: give exactly one --targets")
    if args.stop_accuracy is not None and not args.monitor_every:
        parser.error("--stop_accuracy needs --monitor_every N (how often to check the monitor accuracy)")
    size = tuple(args.image_size)
    results = []
    for target in args.targets:
        started = time.time()
        torch.manual_seed(args.seed)
        trajectory, steps = [], None
        if args.acte:
            acte = ACTEModel.from_pretrained(args.acte).eval()
        else:
            acte, trajectory, steps = train_acte(args, target, size)
        result = measure(acte, args.source, target, args, size)
        result["config"] = {
            k: getattr(acte.config, k)
            for k in (
                "cell_size",
                "num_iterations",
                "kappa",
                "focus_alpha",
                "encoder_channels",
                "input_normalization",
                "discriminator_input_normalization",
                "discriminator_input",
                "class_conditional_discriminator",
                "center_region_features",
                "detach_discriminator_input",
                "transferability_score",
                "relative_scoring",
                "focus_mixing",
            )
        }
        result.update(seed=args.seed, steps=steps, wall_time_s=round(time.time() - started, 1))
        if args.monitor_every:
            result.update(
                max_steps=args.steps,
                stop_accuracy=args.stop_accuracy,
                min_steps=args.min_steps,
                ema_decay=args.ema_decay,
                trajectory=trajectory,
            )
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    write_report(results, args.output, echo=False)
    return results


if __name__ == "__main__":
    main()
