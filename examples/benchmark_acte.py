"""Measure ACTE on the generated benchmark and print JSON:

1. region quality: achievable segmentation accuracy (ASA) of ACTE's hard regions against the labels, next to an
   equal-sized grid with the same number of regions;
2. transferability validity: AUROC of (1 - transferability) against the generator's per-pixel shift mask on
   held-out target images (target: >= 0.80);
3. held-out discriminator accuracy on both domains.

    python examples/benchmark_acte.py                                   # trains ACTE on clear -> rain, then measures
    python examples/benchmark_acte.py --acte outputs/tmt-clear2night/acte --target synthetic/night
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from tmt_hf import ACTEConfig, ACTEModel
from tmt_hf.data import SegmentationTransform, load_domain


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


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties get their average rank)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    boundaries = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1, len(scores)]
    for low, high in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[low:high]] = (low + high + 1) / 2
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_acte(args, size):
    source = load_domain(args.source, "train", num_samples=args.num_train, synthetic_size=size)
    target = load_domain(args.target, "train", num_samples=args.num_train, synthetic_size=size)
    transform = SegmentationTransform(train=True, size=size, crop_size=size, scale_range=(0.75, 1.25),
                                      appearance_jitter=args.appearance_jitter)  # fmt: skip
    config = ACTEConfig(cell_size=args.cell_size, num_iterations=args.iterations, kappa=args.kappa,
                        encoder_channels=args.encoder_channels, focus_alpha=args.alpha,
                        input_normalization=args.input_normalization,
                        center_region_features=args.center_region_features)  # fmt: skip
    acte = ACTEModel(config)
    optimizer = torch.optim.AdamW(acte.parameters(), lr=args.learning_rate, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    half = args.batch_size // 2
    for step in range(args.steps):
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
        if step % 50 == 0:
            print(
                f"step {step}: domain {out.domain_loss.item():.3f} semantic {out.semantic_loss.item():.3f}", flush=True
            )
    return acte.eval()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="synthetic/clear")
    parser.add_argument("--target", default="synthetic/rain")
    parser.add_argument("--acte", default=None, help="a trained ACTE folder; default: train one here")
    parser.add_argument("--image_size", type=int, nargs=2, default=[128, 256])
    parser.add_argument("--num_train", type=int, default=200)
    parser.add_argument("--num_eval", type=int, default=50)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--cell_size", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--kappa", type=float, default=10.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--encoder_channels", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--input_normalization", choices=["instance", "none"], default="instance")
    parser.add_argument(
        "--appearance_jitter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random global appearance on both domains while training ACTE",
    )
    parser.add_argument("--center_region_features", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    size = tuple(args.image_size)
    started = time.time()
    acte = ACTEModel.from_pretrained(args.acte).eval() if args.acte else train_acte(args, size)
    cell = acte.config.cell_size
    evaluation = SegmentationTransform(train=False, size=size)

    asa = {"acte": [0, 0], "grid": [0, 0]}
    scores, positives = [], []
    correct = total = 0
    for domain_label, name in enumerate((args.source, args.target)):
        data = load_domain(name, "test", num_samples=args.num_eval, synthetic_size=size)
        for pixels, labels, extra in batches(data, evaluation, 16, columns=("image", "label", "shift_mask")):
            with torch.no_grad():
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
            if domain_label == 1:
                low = 1 - F.interpolate(out.transferability[:, None], size=labels.shape[-2:], mode="bilinear")[:, 0]
                masks = torch.stack([torch.from_numpy(np.array(m)) > 127 for m in extra["shift_mask"]])
                scores.append(low.flatten().numpy())
                positives.append(masks.flatten().numpy())
    scores, positives = np.concatenate(scores), np.concatenate(positives)
    result = {
        "source": args.source, "target": args.target,
        "asa_acte": asa["acte"][0] / asa["acte"][1], "asa_equal_grid": asa["grid"][0] / asa["grid"][1],
        "regions_per_image": int((size[0] // acte.config.size_multiple) * (size[1] // acte.config.size_multiple)),
        "shift_auroc": auroc(scores, positives) if 0 < positives.mean() < 1 else None,
        "shifted_pixel_fraction": float(positives.mean()),
        "discriminator_accuracy": correct / total,
        "config": {k: getattr(acte.config, k) for k in ("cell_size", "num_iterations", "kappa", "focus_alpha",
                                                         "encoder_channels", "input_normalization",
                                                         "center_region_features")},
        "wall_time_s": round(time.time() - started, 1),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
