"""Collect the results.json of several `train.py` runs into one small JSON and a markdown table.

    python examples/research/summarise_runs.py outputs/exp/runs/c2n-* --output examples/results/clear2night_forms.json
    python examples/research/summarise_runs.py --from_json examples/results/clear2night_forms.json   # rebuild the table

Each row: the run's folder name, its source and target, the transfer settings that vary between ablations, and the
target mIoU (and per-class IoU) of every method it trained. The table adds the mean IoU over the target domain's
locally restyled classes and over the other classes. Runs of the ACTE stage get a second table: the focus map's AUROC
against the generator's shift mask, the steps trained (with `--acte_stop_accuracy`, where the rule stopped) and the
mean over the runs of each target.
"""

import argparse
import json
import os

import numpy as np

from tmt_hf.data import generator_version_of, restyled_classes

SETTINGS = (
    "tma_form",
    "transfer_steps",
    "target_train_samples",
    "target_train_fraction",
    "tma_lr_scale",
    "transfer_tma_init",
    "eval_split",
    "seed",
    "alignment",
    "alignment_weight",
    "source_labels",
    "ignore_source_labels",
    "class_conditional_alignment",
    "target_focus_weight",
    "tmt_parts",
    "mask_ratio",
    "source_model",
)
METHODS = (
    "source",
    "finetune",
    "source_replay",
    "align_global",
    "align_patch",
    "patch",
    "tmt",
    "oracle",
    "tmt_paper",
    "tmt_paper-oracle",
    "tmt_paper-shuffled",
    "selftrain",
    "tmt-oracle",
    "tmt-shuffled",
)
SELF_TRAINING = ("selftrain", "tmt", "tmt-oracle", "tmt-shuffled")  # in runs that record --tmt_parts (protocol v5 on)
# The alignment each method trains with ("—": target labels only; "none": also source labels, no discriminator).
FIXED_ALIGNMENT = {
    "source": "—",
    "finetune": "—",
    "source_replay": "none",
    "align_global": "global",
    "align_patch": "patch",
    "tmt_paper": "focus",
    "tmt_paper-oracle": "focus",
    "tmt_paper-shuffled": "focus",
}
# How the alignment column names a --source_labels setting other than "all".
SOURCE_LABELS_NOTE = {"none": "ignored", "focused": "focus-weighted", "focused_shuffled": "weighted by a shuffled map"}


def collect(folders):
    rows = []
    for folder in folders:
        with open(os.path.join(folder, "results.json")) as f:
            result = json.load(f)
        args = result["args"]
        row = {
            "run": os.path.basename(os.path.normpath(folder)),
            "source": args["source"],
            "target": args["target"],
            "generator_version": generator_version_of(result),
            **{key: args.get(key) for key in SETTINGS},
            "methods": {},
        }
        for method in METHODS:
            if result.get(method) and "target_val" in result[method]:
                metrics = result[method]["target_val"]
                row["methods"][method] = {
                    "mean_iou": metrics["mean_iou"],
                    "per_category_iou": metrics["per_category_iou"],
                }
        if result.get("acte") and "focus_shift_auroc" in result["acte"]:
            acte = result["acte"]
            row["acte"] = {
                key: acte[key] for key in ("discriminator_accuracy", "focus_shift_auroc", "focus_shift_auroc_per_image")
            }
            row["acte"]["steps"] = acte.get("stopping", {}).get("steps", args["acte_steps"])
            row["acte"]["stopping_checks"] = acte.get("stopping", {}).get("checks")
        rows.append(row)
    return rows


def acte_table(rows):
    """Focus-map AUROC per ACTE run, then the mean over the runs of each target."""
    rows = [row for row in rows if "acte" in row]
    lines = [
        "| run | target | seed | steps | held-out discriminator accuracy | focus AUROC pooled | per image |",
        "|---|---|---|---|---|---|---|",
    ]
    by_target = {}
    for row in rows:
        acte = row["acte"]
        by_target.setdefault(row["target"], []).append(acte)
        lines.append(
            f"| {row['run']} | {row['target']} | {row['seed']} | {acte['steps']} "
            f"| {acte['discriminator_accuracy']:.3f} | {acte['focus_shift_auroc']:.3f} "
            f"| {acte['focus_shift_auroc_per_image']:.3f} |"
        )
    for target, actes in by_target.items():
        pooled, per_image = (
            np.mean([a[key] for a in actes]) for key in ("focus_shift_auroc", "focus_shift_auroc_per_image")
        )
        lines.append(f"| **mean of {len(actes)}** | {target} | | | | **{pooled:.3f}** | **{per_image:.3f}** |")
    return "\n".join(lines)


def split_iou(per_category_iou, target, generator_version):
    """Mean IoU over the target domain's restyled classes and over the other classes (classes present only)."""
    restyled = (
        set(restyled_classes(target.split("/", 1)[1], generator_version)) if target.startswith("synthetic/") else set()
    )
    values = {i: v for i, v in enumerate(per_category_iou) if v is not None}
    shifted = [v for i, v in values.items() if i in restyled]
    others = [v for i, v in values.items() if i not in restyled]
    return (float(np.mean(shifted)) if shifted else None), float(np.mean(others))


def table(rows):
    lines = [
        "| run | target | method | form | λ lr × | alignment | steps | labelled | mIoU | restyled classes "
        "| other classes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        labelled = (
            f"{row['target_train_fraction']:.0%}" if row["target_train_fraction"] else row["target_train_samples"]
        )
        for method, metrics in row["methods"].items():
            if method == "source" and len(row["methods"]) > 1:
                continue
            shifted, others = split_iou(metrics["per_category_iou"], row["target"], generator_version_of(row))
            with_map = method in ("tmt", "patch", "oracle")
            form = (row["tma_form"] or "source model's") if with_map else "—"
            scale = row["tma_lr_scale"] if with_map else "—"
            alignment = FIXED_ALIGNMENT.get(method) or row.get("alignment") or "—"
            if method in SELF_TRAINING and row.get("tmt_parts"):  # v5: `tmt` is region-level self-training
                with_map, form, scale = method != "selftrain" and "tma" in row["tmt_parts"], "—", "—"
                alignment = f"self-training, mask {row['mask_ratio']:g}"
                if method != "selftrain":
                    alignment += f", map: {' '.join(row['tmt_parts'])}"
            # runs before `--source_labels` recorded the boolean `ignore_source_labels`
            source_labels = row.get("source_labels") or ("none" if row.get("ignore_source_labels") else "all")
            if source_labels != "all" and alignment not in ("—", "none"):
                alignment += f", source labels {SOURCE_LABELS_NOTE[source_labels]}"
            if row.get("class_conditional_alignment") and alignment not in ("—", "none"):
                alignment += ", class-conditional"
            if row.get("target_focus_weight") and with_map:
                alignment += f", target labels weighted 1 + {row['target_focus_weight']:g} × focus"
            lines.append(
                f"| {row['run']} | {row['target']} | {method} | {form} | {scale} | {alignment} "
                f"| {row['transfer_steps']} "
                f"| {labelled} | {100 * metrics['mean_iou']:.2f} "
                f"| {'—' if shifted is None else f'{100 * shifted:.2f}'} | {100 * others:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="train.py output folders")
    parser.add_argument("--from_json", default=None, help="rebuild the table from a JSON written by this script")
    parser.add_argument("--output", default=None, help="write the collected rows here")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            rows = json.load(f)
    else:
        rows = collect(args.folders)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1)
    if any(row["methods"] for row in rows):
        print(table(rows))
    if any("acte" in row for row in rows):
        print(acte_table(rows))


if __name__ == "__main__":
    main()
