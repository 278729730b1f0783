"""The ViT fine-tuning recipe of every stage that starts from a pretrained checkpoint (BEiT, MAE): parameter groups with
layer-wise learning-rate decay, and a warm-up then cosine schedule."""

import math
from dataclasses import dataclass

import torch


@dataclass
class FineTuningRecipe:
    """
    The recipe's settings (BEiT/MAE defaults for a ViT): the new decode head learns at `head_learning_rate_scale` ×
    the learning rate, encoder layer i of L at `layer_decay`^(L - 1 - i) × it, and every stage warms up linearly over
    `warmup_ratio` of its steps, then decays on a cosine.
    """

    head_learning_rate_scale: float = 10.0
    layer_decay: float = 0.75
    warmup_ratio: float = 0.05

    def __post_init__(self):
        if self.head_learning_rate_scale <= 0 or self.layer_decay <= 0:
            raise ValueError(
                f"head_learning_rate_scale and layer_decay must be > 0, got {self.head_learning_rate_scale} and "
                f"{self.layer_decay}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")


def fine_tuning_parameter_groups(model, learning_rate: float, layer_decay: float, head_scale: float) -> list[dict]:
    """
    AdamW parameter groups of a `TMTForSemanticSegmentation`: encoder layer i of L learns at learning_rate *
    layer_decay^(L - 1 - i), the embeddings at layer_decay^L, the new decode head at head_scale * learning_rate; biases,
    norms, the CLS token and position embeddings get no weight decay. Frozen parameters are left out.
    """
    depth = model.config.num_hidden_layers
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("vit.layers."):
            scale = layer_decay ** (depth - 1 - int(name.split(".")[2]))
        elif name.startswith("vit."):
            scale = layer_decay**depth
        else:
            scale = head_scale
        no_decay = param.ndim == 1 or name.endswith(("cls_token", "position_embeddings", "mask_token"))
        if (scale, no_decay) not in groups:
            groups[scale, no_decay] = {"params": [], "lr": learning_rate * scale}
            if no_decay:
                groups[scale, no_decay]["weight_decay"] = 0.0
        groups[scale, no_decay]["params"].append(param)
    return list(groups.values())


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """
    Linear warm-up over `warmup_ratio` of `steps` (the first step already at 1/warm-up, not 0), then a cosine decay to
    0 at `steps`. Unlike `transformers.get_cosine_schedule_with_warmup`, no step is spent at a learning rate of 0.
    """
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must lie in [0, 1), got {warmup_ratio}")
    warmup = max(1, int(steps * warmup_ratio))

    def scale(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
