"""
A transfer method of your own, registered from a file: fine-tuning with label smoothing.

    accelerate launch examples/train.py --method_file examples/custom_method.py --method finetune finetune_smoothed

`train.py` imports this file before it checks `--method`, so `finetune_smoothed` runs beside the built-in methods on the
same data, steps and seeds, and is saved with its own model card. Subclass the nearest `tmt_hf.methods` method and
override what differs: here only the loss.
"""

from dataclasses import dataclass

import torch.nn.functional as F

from tmt_hf.methods import FineTune, register_method


@register_method
@dataclass
class FineTuneSmoothed(FineTune):
    name = "finetune_smoothed"
    description = "a segmenter fine-tuned with label smoothing"  # its model card's "This model is ..."
    label_smoothing: float = 0.1

    def loss(self, model, batch, auxiliary=None):
        logits = model(pixel_values=batch["pixel_values"]).logits
        logits = F.interpolate(logits, size=batch["labels"].shape[-2:], mode="bilinear")
        loss = F.cross_entropy(logits, batch["labels"], ignore_index=255, label_smoothing=self.label_smoothing)
        return loss, {"loss": loss.item()}
