"""Streaming mean IoU on a confusion matrix, with the result keys of `evaluate`'s `mean_iou`; AUROC of a score map."""

import numpy as np
import torch


class MeanIoU:
    """
    Accumulates a `num_labels` x `num_labels` confusion matrix with `torch.bincount`.

    `update(predictions, references)` takes integer tensors (or arrays) of equal shape; pixels whose reference equals
    `ignore_index` are skipped. With Accelerate, pass `accelerator.gather_for_metrics((predictions, references))`, so
    that N processes count each pixel once. `compute()` returns `mean_iou`, `mean_accuracy`, `overall_accuracy`,
    `per_category_iou` and `per_category_accuracy`; classes absent from both predictions and references are NaN and
    left out of the means. `classes` (optional) restricts the means to the classes a dataset labels (CamVid labels 11
    of the 19 Cityscapes classes): the others are NaN in the per-class results, and a prediction of one of them still
    counts as an error of the labelled class it hit.
    """

    def __init__(self, num_labels: int, ignore_index: int = 255, classes=None):
        self.num_labels, self.ignore_index = num_labels, ignore_index
        self.classes = None if classes is None else sorted(set(int(c) for c in classes))
        if self.classes is not None and not all(0 <= c < num_labels for c in self.classes):
            raise ValueError(f"classes must lie in [0, {num_labels}), got {self.classes}")
        self.confusion = torch.zeros(num_labels, num_labels, dtype=torch.int64)

    def reset(self) -> None:
        self.confusion.zero_()

    def update(self, predictions, references) -> None:
        predictions, references = torch.as_tensor(predictions), torch.as_tensor(references)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions {tuple(predictions.shape)} and references {tuple(references.shape)} must have the same shape"
            )
        predictions, references = predictions.reshape(-1).long().cpu(), references.reshape(-1).long().cpu()
        keep = references != self.ignore_index
        predictions, references = predictions[keep], references[keep]
        if references.numel() and (references.min() < 0 or references.max() >= self.num_labels):
            raise ValueError(f"references must be in [0, {self.num_labels}) or {self.ignore_index}")
        if predictions.numel() and (predictions.min() < 0 or predictions.max() >= self.num_labels):
            raise ValueError(f"predictions must be in [0, {self.num_labels})")
        counts = torch.bincount(references * self.num_labels + predictions, minlength=self.num_labels**2)
        self.confusion += counts.view(self.num_labels, self.num_labels)

    def compute(self) -> dict:
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        reference_total = confusion.sum(dim=1)  # rows: references
        prediction_total = confusion.sum(dim=0)
        union = reference_total + prediction_total - true_positive
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = (true_positive / union).numpy()
            accuracy = (true_positive / reference_total).numpy()
        iou[union.numpy() == 0] = np.nan
        accuracy[reference_total.numpy() == 0] = np.nan
        if self.classes is not None:
            unlabelled = np.setdiff1d(np.arange(self.num_labels), self.classes)
            iou[unlabelled] = accuracy[unlabelled] = np.nan
        total = confusion.sum().item()
        return {
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
            "overall_accuracy": float(true_positive.sum().item() / total) if total else float("nan"),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }


def binary_auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """
    Area under the ROC curve of `scores` for the boolean `positives`, by the rank statistic (ties get their average
    rank); `None` when either class is absent.
    """
    scores, positives = np.asarray(scores).ravel(), np.asarray(positives, dtype=bool).ravel()
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    boundaries = np.r_[0, np.flatnonzero(np.diff(scores[order])) + 1, len(scores)]
    for low, high in zip(boundaries[:-1], boundaries[1:]):
        ranks[order[low:high]] = (low + high + 1) / 2
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def shift_auroc(score_maps, shift_masks) -> dict:
    """AUROC of per-image score maps against boolean shift masks: pooled over all pixels, and the per-image mean."""
    scores, masks = (
        [np.asarray(s).ravel() for s in score_maps],
        [np.asarray(m, dtype=bool).ravel() for m in shift_masks],
    )
    per_image = [value for value in map(binary_auroc, scores, masks) if value is not None]
    return {
        "pooled": binary_auroc(np.concatenate(scores), np.concatenate(masks)),
        "per_image": float(np.mean(per_image)) if per_image else None,
    }
