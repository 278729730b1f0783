"""Tables of the v3 and v4 runs from results/*.json (METHOD-SOURCE2TARGET-seedN.json, one train.py results.json each:
the device benchmark of run_device.py and the CPU runs): the quick pairs with every method (in a folder of finetune
and TMT runs only, with those two; in one without TMT runs, finetune, align_patch and the oracle map, and finetune
against the oracle map over every seed that has both); the headroom (alltarget-*.json against finetune-*.json) per
seed and, with several seeds, its mean over every seed; for each seed that has runs beyond the quick pairs, finetune
against TMT over all its pairs, and then over every pair and seed, each with TMT's gain by source and target domain
and its correlation with the ACTE map's AUROC; the pooled table also with each pair weighted once and with the
per-pair gains of two seeds correlated; the same for TMT with focus-weighted source labels (tmtfocused-*.json:
`--source_labels focused`) against finetune and TMT. Prints Markdown, writes summary.json.

python examples/results/v3_benchmark/summarise.py examples/results/v3_benchmark/results
"""

import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from benchmark import paired_bootstrap, summarise  # noqa: E402

from tmt_hf.configuration_tmt import CITYSCAPES_CLASSES  # noqa: E402
from tmt_hf.data.synthetic import generator_version_of, restyled_classes  # noqa: E402

QUICK = [("clear", "night"), ("clear", "rain"), ("fog", "autumn"), ("autumn", "fog")]
# File prefix -> (method key in this script, key of the method in the run's results.json).
KINDS = {kind: (kind, kind) for kind in ("finetune", "oracle", "align_patch", "align_global", "tmt")}
KINDS["tmtfocused"] = ("tmt_focused", "tmt")  # train.py --method tmt --source_labels focused
LABELS = {"tmt": "TMT", "tmt_focused": "TMT (focus-weighted source labels)"}


def class_gaps(better: dict, worse: dict, target: str, generator_version: int) -> tuple[dict, float, float]:
    """Each class's IoU gap (better − worse, a missing IoU as 0) divided by the number of classes `better` scores, in
    mIoU points, and their sums over the target's restyled classes (in that generator version) and over the others
    (together, the mIoU gap)."""
    present = [i for i, v in enumerate(better["per_category_iou"]) if v is not None]
    gaps = {
        i: 100 * (better["per_category_iou"][i] - (worse["per_category_iou"][i] or 0)) / len(present) for i in present
    }
    restyled = restyled_classes(target, generator_version)
    return (
        gaps,
        sum(g for i, g in gaps.items() if i in restyled),
        sum(g for i, g in gaps.items() if i not in restyled),
    )


def gain_split(rows, method) -> tuple[float, float]:
    """Mean over units of the mIoU gain over finetune in the target's restyled classes and in the others."""
    split = []
    for row in rows:
        split.append(
            class_gaps(row[method], row["finetune"], row["target_domain"].split("/")[1], row["generator_version"])[1:]
        )
    restyled, other = np.mean(split, axis=0)
    return float(restyled), float(other)


def gain_by_domain_and_map(rows, gains, results, summary, method="tmt") -> list[str]:
    """`method` − finetune (`gains`, one per row) averaged per target and per source domain, and its Pearson
    correlation over runs with the test focus-map AUROC of the ACTE that the run used (runs whose target has no
    shifted pixels have none)."""
    lines, name = [], LABELS[method]
    for side in ("target", "source"):
        by_domain = {}
        for row, gain in zip(rows, gains):
            by_domain.setdefault(row[f"{side}_domain"].split("/")[1], []).append(gain)
        summary[f"{method} - finetune by {side}"] = {
            domain: float(np.mean(v)) for domain, v in sorted(by_domain.items())
        }
        lines.append(
            f"{name} − finetune by {side} domain: "
            + ", ".join(f"{domain} {np.mean(v):+.2f} ({len(v)} runs)" for domain, v in sorted(by_domain.items()))
            + "\n"
        )
    paired = []
    for row, gain in zip(rows, gains):
        tag = f"{row['source_domain'].split('/')[1]}2{row['target_domain'].split('/')[1]}-seed{row['seed']}"
        auroc = results.get(f"acte-{tag}", {}).get("acte", {}).get("focus_shift_auroc")
        if auroc is not None:
            paired.append((auroc, gain))
    if len(paired) >= 3:
        correlation = float(np.corrcoef(np.array(paired).T)[0, 1])
        summary[f"pearson r (acte auroc, {method} - finetune)"] = {"r": correlation, "runs": len(paired)}
        lines.append(
            f"Pearson r between the pair's ACTE focus AUROC (test) and {name} − finetune: {correlation:+.2f} "
            f"over {len(paired)} runs with a shifted target\n"
        )
    return lines


def pair_level(rows, gains, summary, method="tmt") -> list[str]:
    """`method` − finetune (`gains`, one per row) per pair and seed; with each pair weighted once (its seeds averaged)
    and a 95% interval that resamples pairs, each with all its seeds; and, for every two seeds that share pairs, the
    correlation of their per-pair gains (does a pair's gain repeat under a new seed?)."""
    by_pair, name = {}, LABELS[method]  # (source, target) -> seed -> gain
    for row, gain in zip(rows, gains):
        by_pair.setdefault((row["source_domain"], row["target_domain"]), {})[row["seed"]] = gain
    seeds = sorted({seed for by_seed in by_pair.values() for seed in by_seed})
    lines = [
        "| pair | " + " | ".join(f"Δ seed {seed}" for seed in seeds) + " | mean Δ |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for (source, target), by_seed in sorted(by_pair.items()):
        cells = [f"{by_seed[seed]:+.2f}" if seed in by_seed else "—" for seed in seeds]
        lines.append(
            f"| {source.split('/')[1]} → {target.split('/')[1]} | {' | '.join(cells)} "
            f"| {np.mean(list(by_seed.values())):+.2f} |"
        )
    summary[f"{method} - finetune per pair and seed"] = {
        f"{source.split('/')[1]}->{target.split('/')[1]}": {str(seed): gain for seed, gain in sorted(by_seed.items())}
        for (source, target), by_seed in sorted(by_pair.items())
    }
    per_pair = np.array([np.mean(list(by_seed.values())) for by_seed in by_pair.values()])
    low, high = paired_bootstrap(per_pair)
    summary[f"{method} - finetune, pairs weighted equally"] = {
        "mean": float(per_pair.mean()),
        "ci95": [low, high],
        "pairs": len(per_pair),
    }
    lines += [
        "",
        f"{name} − finetune with each pair's seeds averaged: {per_pair.mean():+.2f} [{low:+.2f}, {high:+.2f}] "
        f"(bootstrap over {len(per_pair)} pairs)\n",
    ]
    for i, first in enumerate(seeds):
        for second in seeds[i + 1 :]:
            shared = [(g[first], g[second]) for g in by_pair.values() if first in g and second in g]
            if len(shared) >= 3:
                correlation = float(np.corrcoef(np.array(shared).T)[0, 1])
                summary[f"pearson r ({method} gain seed {first}, seed {second})"] = {
                    "r": correlation,
                    "pairs": len(shared),
                }
                lines.append(
                    f"Pearson r between the per-pair {name} − finetune of seed {first} and seed {second}: "
                    f"{correlation:+.2f} over {len(shared)} pairs\n"
                )
    return lines


def main(folder):
    results = {os.path.basename(p)[: -len(".json")]: json.load(open(p)) for p in glob.glob(f"{folder}/*.json")}
    units = {}  # (source, target, seed) -> method -> metrics
    for name, result in results.items():
        kind, tag = name.split("-", 1)
        if kind in KINDS:
            method, key = KINDS[kind]
            pair, seed = tag.rsplit("-seed", 1)
            source, target = pair.split("2")
            unit = units.setdefault((f"synthetic/{source}", f"synthetic/{target}", int(seed)), {})
            unit[method] = result[key]["target_val"]
            unit["source"] = result["source"]["target_val"]
            unit["generator_version"] = generator_version_of(result)
    lines, summary = [], {}
    beyond_quick = sorted({seed for (s, t, seed) in units if (s.split("/")[1], t.split("/")[1]) not in QUICK})
    focused = sorted({seed for (s, t, seed), unit in units.items() if "tmt_focused" in unit})
    focused_methods = ["finetune", "tmt", "tmt_focused"]
    for title, pairs, seeds, methods in (
        ("Quick pairs", QUICK, None, ["finetune", "oracle", "align_patch", "tmt"]),
        ("Quick pairs with image-level alignment", QUICK, None, ["finetune", "align_global", "align_patch", "tmt"]),
        *(
            [("Quick pairs with finetune and TMT only", QUICK, None, ["finetune", "tmt"])]
            if not any("oracle" in unit or "align_patch" in unit for unit in units.values())
            else []
        ),
        *(
            [
                (
                    "Quick pairs with the oracle map and map-free alignment",
                    QUICK,
                    None,
                    ["finetune", "align_patch", "oracle"],
                ),
                ("Quick pairs with the oracle map, every seed", QUICK, None, ["finetune", "oracle"]),
            ]
            if not any("tmt" in unit for unit in units.values())
            else []
        ),
        *(
            (f"All pairs with finetune and TMT, seed {seed}", None, {seed}, ["finetune", "tmt"])
            for seed in beyond_quick
        ),
        *([("Every pair and seed with finetune and TMT", None, None, ["finetune", "tmt"])] if beyond_quick else []),
        *(
            (f"All pairs with TMT's source labels focus-weighted, seed {seed}", None, {seed}, focused_methods)
            for seed in focused
        ),
        *(
            [("Every pair and seed with TMT's source labels focus-weighted", None, None, focused_methods)]
            if len(focused) > 1
            else []
        ),
    ):
        rows = [
            {
                "source_domain": s,
                "target_domain": t,
                "seed": seed,
                "generator_version": unit["generator_version"],
                **{m: unit[m] for m in ["source", *methods]},
            }
            for (s, t, seed), unit in sorted(units.items())
            if all(m in unit for m in methods)
            and (pairs is None or (s.split("/")[1], t.split("/")[1]) in pairs)
            and (seeds is None or seed in seeds)
        ]
        if rows:
            wanted = sorted({(r["source_domain"], r["target_domain"]) for r in rows})
            table, summary[title] = summarise(rows, wanted, methods)
            lines += [f"## {title}", "", table]
            for better, worse in [
                (a, b)
                for a, b in (
                    ("tmt", "align_patch"),
                    ("tmt", "align_global"),
                    ("oracle", "tmt"),
                    ("oracle", "align_patch"),
                    ("tmt_focused", "tmt"),
                )
                if {a, b} <= set(methods)
            ]:
                differences = np.array([100 * (r[better]["mean_iou"] - r[worse]["mean_iou"]) for r in rows])
                low, high = paired_bootstrap(differences)
                summary[title][f"{better} - {worse}"] = {"mean": float(differences.mean()), "ci95": [low, high]}
                lines.append(
                    f"{better} − {worse}: {differences.mean():+.2f} [{low:+.2f}, {high:+.2f}] (paired, "
                    f"{len(rows)} units)\n"
                )
            for method in methods[1:]:
                restyled, other = gain_split(rows, method)
                summary[title][f"{method} - finetune by class"] = {"restyled": restyled, "other": other}
                lines.append(
                    f"{method} − finetune, split by class: {restyled:+.2f} in the restyled classes, "
                    f"{other:+.2f} in the others (mean over {len(rows)} units)\n"
                )
            if pairs is None:
                headline = methods[-1]
                gains = [100 * (row[headline]["mean_iou"] - row["finetune"]["mean_iou"]) for row in rows]
                lines += gain_by_domain_and_map(rows, gains, results, summary[title], headline)
                if seeds is None:
                    lines += pair_level(rows, gains, summary[title], headline)

    summary["headroom"] = {}  # seed 0's; other seeds under headroom_seed<S>
    headroom_seeds = sorted({int(name.rsplit("-seed", 1)[1]) for name in results if name.startswith("alltarget-")})
    every_seed = []  # the headroom entries of every (pair, seed)
    for seed in headroom_seeds:
        key = "headroom" if seed == 0 else f"headroom_seed{seed}"
        headroom = [
            f"## Headroom (seed {seed}): all the target's labelled images against finetune's few",
            "",
            "| pair | source-only | finetune (labelled images) | all-target | gap | gap in restyled classes | "
            "gap elsewhere |",
            "|---|---|---|---|---|---|---|",
        ]
        summary[key] = {}
        for source, target in QUICK:
            tag = f"{source}2{target}-seed{seed}"
            if f"alltarget-{tag}" not in results or f"finetune-{tag}" not in results:
                continue
            full, few = results[f"alltarget-{tag}"]["finetune"]["target_val"], results[f"finetune-{tag}"]
            count, few, source_only = (
                few["finetune"].get("labelled_target_images"),
                few["finetune"]["target_val"],
                few["source"]["target_val"],
            )
            gaps, restyled, _ = class_gaps(full, few, target, generator_version_of(results[f"finetune-{tag}"]))
            gap = 100 * (full["mean_iou"] - few["mean_iou"])
            summary[key][f"{source}->{target}"] = {
                "source_only": 100 * source_only["mean_iou"],
                "finetune": 100 * few["mean_iou"],
                "all_target": 100 * full["mean_iou"],
                "gap": gap,
                "gap_restyled": restyled,
                "labelled_images": count,
                "per_class_gap": {CITYSCAPES_CLASSES[i]: g for i, g in gaps.items()},
            }
            headroom.append(
                f"| {source} → {target} | {100 * source_only['mean_iou']:.2f} | {100 * few['mean_iou']:.2f} ({count}) | "
                f"{100 * full['mean_iou']:.2f} | {gap:.2f} | {restyled:.2f} | {gap - restyled:.2f} |"
            )
        every_seed += summary[key].values()
        if summary[key]:
            mean = lambda field: np.mean([h[field] for h in summary[key].values()])  # noqa: E731
            headroom.append(f"| **mean** | | | | {mean('gap'):.2f} | {mean('gap_restyled'):.2f} | |")
            lines += [*headroom, ""]
        if seed != 0:  # seed-to-seed differences on the pairs both seeds have
            both = sorted(set(summary[key]) & set(summary.get("headroom", {})))
            for field in ("finetune", "gap", "gap_restyled"):
                diffs = [summary[key][p][field] - summary["headroom"][p][field] for p in both]
                if diffs:
                    lines.append(
                        f"seed {seed} − seed 0, {field}: "
                        + ", ".join(f"{p} {d:+.2f}" for p, d in zip(both, diffs))
                        + f" (mean |difference| {np.mean(np.abs(diffs)):.2f})"
                    )
            lines.append("")
    if len(headroom_seeds) > 1 and every_seed:
        gaps = np.array([h["gap"] for h in every_seed])
        low, high = paired_bootstrap(gaps)
        restyled = float(np.mean([h["gap_restyled"] for h in every_seed]))
        summary["headroom_every_seed"] = {
            "gap": float(gaps.mean()),
            "ci95": [low, high],
            "gap_restyled": restyled,
            "units": len(gaps),
        }
        lines += [
            f"Headroom over every seed: mean gap {gaps.mean():.2f} [{low:.2f}, {high:.2f}] (paired bootstrap, "
            f"{len(gaps)} units), of which {restyled:.2f} in the restyled classes",
            "",
        ]

    acte_lines = [
        "## ACTE focus map against the shift mask (held-out scenes)",
        "",
        "| pair | seed | AUROC pooled | AUROC per image |",
        "|---|---|---|---|",
    ]
    summary["acte"] = {}
    for name in sorted(n for n in results if n.startswith("acte-")):
        acte, tag = results[name]["acte"], name.split("-", 1)[1]
        summary["acte"][tag] = {k: acte[k] for k in ("focus_shift_auroc", "focus_shift_auroc_per_image") if k in acte}
        if "focus_shift_auroc" in acte:
            pair, seed = tag.rsplit("-seed", 1)
            acte_lines.append(
                f"| {pair} | {seed} | {acte['focus_shift_auroc']:.3f} | {acte['focus_shift_auroc_per_image']:.3f} |"
            )
    if summary["acte"]:
        lines += acte_lines
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(os.path.dirname(os.path.abspath(folder)), "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(os.path.dirname(os.path.abspath(folder)), "benchmark.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
