"""Streaming mean IoU on a confusion matrix, with the result keys of `evaluate`'s `mean_iou`."""

import numpy as np
import torch


class MeanIoU:
    """
    Accumulates a `num_labels` x `num_labels` confusion matrix with `torch.bincount`.

    `update(predictions, references)` takes integer tensors (or arrays) of equal shape; pixels whose reference equals
    `ignore_index` are skipped. With Accelerate, pass `accelerator.gather_for_metrics((predictions, references))`, so
    that N processes count each pixel once. `compute()` returns `mean_iou`, `mean_accuracy`, `overall_accuracy`,
    `per_category_iou` and `per_category_accuracy`; classes absent from both predictions and references are NaN and
    left out of the means.
    """

    def __init__(self, num_labels: int, ignore_index: int = 255):
        self.num_labels, self.ignore_index = num_labels, ignore_index
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
        total = confusion.sum().item()
        return {
            "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan"),
            "overall_accuracy": float(true_positive.sum().item() / total) if total else float("nan"),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
