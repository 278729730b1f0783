"""
Training-loop utilities of `examples/train.py`, for your own loop too: reproducible sampling and augmentation indices,
the auxiliary-image draws of the adaptation methods, evaluation gathered across processes, and crash-safe checkpoints.
"""

import json
import math
import os

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from .data import IGNORE_INDEX, collate
from .metrics import MeanIoU, shift_auroc


class EpochShuffleSampler(Sampler):
    """
    A permutation of the dataset that depends only on (seed, epoch), so a resumed run sees the same order. The epoch is
    set with `use_epoch` (not `set_epoch`, which Accelerate's loaders call with their own iteration counters).
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self):
        return self.size


def indexed(dataset):
    """`dataset` with a `sample_index` column 0..n-1 (replacing any), which seeds each row's augmentation."""
    if "sample_index" in dataset.column_names:
        dataset = dataset.remove_columns("sample_index")
    return dataset.add_column("sample_index", list(range(len(dataset))))


def two_domains(source_part, target_part):
    """Source then target images with `domain_labels` 0 / 1 and one `sample_index` over both (for augmentation)."""
    parts = [part.add_column("domain_labels", [d] * len(part)) for d, part in enumerate((source_part, target_part))]
    return indexed(datasets.concatenate_datasets(parts))


def repeated_to_fill(dataset, batch_size):
    """
    A training set smaller than one batch (5 labelled target images at batch 8), repeated until it fills one; each
    copy gets its own `sample_index`, so its own crop, flip and appearance draw.
    """
    if not 0 < len(dataset) < batch_size:
        return dataset
    return indexed(datasets.concatenate_datasets([dataset] * -(-batch_size // len(dataset))))


def auxiliary_draw(auxiliary, transform, counts, accelerator):
    """
    A function that draws `counts` = (source, target) images from `auxiliary` (labelled source, then unlabelled target
    images), collated, sources first. It draws with the global RNG, which Accelerate checkpoints, so a resumed run draws
    the same; every process draws for all and keeps its own share.
    """
    domains = torch.tensor(auxiliary["domain_labels"])
    pools = [torch.nonzero(domains == d)[:, 0] for d in (0, 1)]
    shares = [slice(accelerator.process_index * c, (accelerator.process_index + 1) * c) for c in counts]

    def draw():
        picks = [
            pool[torch.randint(len(pool), (count * accelerator.num_processes,))][share]
            for pool, count, share in zip(pools, counts, shares)
        ]
        transform.set_epoch(int(torch.randint(1 << 30, ())))
        return collate([auxiliary[int(i)] for i in torch.cat(picks)])

    return draw


@torch.no_grad()
def evaluate_segmenter(model, loader, accelerator, num_labels, classes=None):
    """
    mIoU of a segmenter over `classes` (default: every class present), fed the batches' `focus` maps where the loader
    has them; predictions and labels are gathered across processes once per pixel.
    """
    model.eval()
    metric = MeanIoU(num_labels, classes=classes)
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"], transferability_map=batch.get("focus")).logits
        predictions, references = accelerator.gather_for_metrics((logits.argmax(dim=1), batch["labels"]))
        metric.update(predictions, references)
    model.train()
    result = metric.compute()
    return {
        "mean_iou": result["mean_iou"],
        "mean_accuracy": result["mean_accuracy"],
        "overall_accuracy": result["overall_accuracy"],
        "classes": classes,
        "per_category_iou": [None if math.isnan(v) else float(v) for v in result["per_category_iou"]],
    }


@torch.no_grad()
def evaluate_acte(model, loader, accelerator, shift_loader=None):
    """
    Held-out discriminator accuracy of ACTE (region-level, both domains) and, given `shift_loader` (held-out target
    images whose labels are the generator's shift masks, 255 = shifted), the AUROC of the focus map against them
    (left out for a target without local shifts, such as synthetic/clear).
    """
    model.eval()
    correct = total = 0
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"]).domain_logits
        hits = ((logits > 0).long() == batch["domain_labels"][:, None, None]).float().mean(dim=(1, 2))
        hits = accelerator.gather_for_metrics(hits)
        correct, total = correct + hits.sum().item(), total + hits.numel()
    result = {"discriminator_accuracy": correct / max(total, 1)}
    if shift_loader is not None:
        maps, masks = [], []
        for batch in shift_loader:
            focus = model(pixel_values=batch["pixel_values"]).focus_map
            focus = F.interpolate(focus[:, None], size=batch["labels"].shape[-2:], mode="bilinear")
            focus, shifted = accelerator.gather_for_metrics((focus[:, 0], batch["labels"] == 255))
            maps += list(focus.cpu().numpy())
            masks += list(shifted.cpu().numpy())
        auroc = shift_auroc(maps, masks)
        if auroc["pooled"] is not None:
            result |= {"focus_shift_auroc": auroc["pooled"], "focus_shift_auroc_per_image": auroc["per_image"]}
    model.train()
    return result


def latest_checkpoint(stage_checkpoints: str) -> str | None:
    if not os.path.isdir(stage_checkpoints):
        return None
    steps = [int(d[5:]) for d in os.listdir(stage_checkpoints) if d.startswith("step_") and d[5:].isdigit()]
    return os.path.join(stage_checkpoints, f"step_{max(steps)}") if steps else None


def save_checkpoint(accelerator, checkpoints, step):
    """Writes the state to a temporary folder and renames it, so a kill never leaves a half-written checkpoint."""
    final = os.path.join(checkpoints, f"step_{step}")
    partial = final + ".tmp"
    accelerator.save_state(partial)
    if accelerator.is_main_process:
        with open(os.path.join(partial, "trainer_state.json"), "w") as f:
            json.dump({"step": step}, f)
        os.replace(partial, final)
    accelerator.wait_for_everyone()


def present_classes(dataset):
    """The train ids that occur in a dataset's labels (255 left out)."""
    counts = np.zeros(256, dtype=np.int64)
    for label in dataset.select_columns(["label"]):
        counts += np.bincount(np.asarray(label["label"]).ravel(), minlength=256)
    return [int(c) for c in np.flatnonzero(counts[:IGNORE_INDEX])]
