"""
Adaptation objectives for cross-domain segmentation, for `examples/train.py` and for your own training loop.

- Adversarial alignment (DANN; Ganin & Lempitsky, 2015): `GradientReversal`, `dann_coefficient`, `AdversarialAlignment`
  (a domain discriminator on a segmenter's last-layer tokens, image-level, token-level, or token-level weighted by a
  focus map: the paper-faithful transfer stage's region-level alignment, our reconstruction).
- Weighted losses: `weighted_cross_entropy`.
- Self-training (mean teacher, DACS, MIC): `ema_update`, `pseudo_labels`, `class_mix_masks`, `mix`, `block_masks`.

Every function works on plain tensors; none needs Accelerate.
"""

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by `-coefficient` (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coefficient * grad, None


def dann_coefficient(progress: float) -> float:
    """DANN's reversal schedule, 2 / (1 + exp(-10 p)) - 1: 0 at the start of training (p = 0), close to 1 at its end."""
    return 2 / (1 + math.exp(-10 * min(max(progress, 0.0), 1.0))) - 1


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """
    Pixel cross-entropy, each labelled pixel's term multiplied by `weights` (same shape as `labels`; `None`: 1), summed
    and divided by the number of labelled pixels. An all-ignored batch gives 0, not NaN.
    """
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    if weights is not None:
        if weights.shape != labels.shape:
            raise ValueError(f"weights {tuple(weights.shape)} must have the labels' shape {tuple(labels.shape)}")
        pixel_losses = weights * pixel_losses
    return pixel_losses.sum() / (labels != ignore_index).sum().clamp_min(1)


class AdversarialAlignment(torch.nn.Module):
    """
    A training wrapper around a `TMTForSemanticSegmentation` (not saved with it): the segmentation loss on the labelled
    pixels of a batch that mixes source and target images, plus `weight` × a domain discriminator's loss on the last
    encoder layer's patch tokens behind a gradient reversal, so that the encoder learns features the discriminator
    cannot tell apart. The reversal coefficient follows `dann_coefficient` over `steps` calls.

    Args:
        segmenter: the model; its `config.hidden_size` sizes the discriminator (Linear-GELU-Linear).
        level: `"global"` (one mean token per image), `"patch"` (every token, equally weighted) or `"focus"` (every
            token weighted by the focus map the segmenter's TMA receives: the paper-faithful region-level alignment).
        weight: weight of the domain loss.
        steps: calls over which the reversal coefficient ramps up (the stage's optimizer steps).
    """

    LEVELS = ("global", "patch", "focus")

    def __init__(self, segmenter, level: str, weight: float, steps: int):
        super().__init__()
        if level not in self.LEVELS:
            raise ValueError(f"level must be one of {self.LEVELS}, got {level!r}")
        self.segmenter, self.level, self.weight, self.steps = segmenter, level, weight, steps
        hidden = segmenter.config.hidden_size
        self.discriminator = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # checkpointed with the wrapper: the ramp resumes

    def forward(self, pixel_values, labels, domain_labels, transferability_map=None):
        """`domain_labels`: (batch,) 0 for source images, 1 for target images. Returns (loss, logs)."""
        last = self.segmenter.config.num_hidden_layers
        out = self.segmenter(pixel_values=pixel_values, labels=labels, transferability_map=transferability_map,
                             output_hidden_states=[last])  # fmt: skip
        coefficient = dann_coefficient(self.step.item() / self.steps)
        self.step += 1
        tokens = GradientReversal.apply(out.hidden_states[last][:, 1:], coefficient)
        domains = domain_labels.float()[:, None].expand(tokens.shape[:2])
        weights = torch.ones_like(domains)
        if self.level == "global":
            tokens, domains, weights = tokens.mean(1, keepdim=True), domains[:, :1], weights[:, :1]
        elif self.level == "focus":
            if out.focus_map is None:
                raise ValueError("focus alignment needs a focus map: pass transferability_map or attach an ACTE")
            weights = out.focus_map.flatten(1).detach().to(tokens.dtype)
        domain_logits = self.discriminator(tokens)[..., 0]
        domain_loss = F.binary_cross_entropy_with_logits(domain_logits, domains, reduction="none")
        domain_loss = (weights * domain_loss).sum() / weights.sum().clamp_min(1e-6)
        logs = {"segmentation_loss": out.loss.item(), "domain_loss": domain_loss.item()}
        return out.loss + self.weight * domain_loss, logs


# ---- Self-training ---------------------------------------------------------------------------------------------


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """Mean teacher: every floating-point parameter and buffer of `teacher` becomes decay × itself + (1 − decay) × the
    student's; other buffers are copied. The two models must have the same structure."""
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    if teacher_state.keys() != student_state.keys():
        raise ValueError("teacher and student must have the same parameters and buffers")
    for name, value in teacher_state.items():
        if value.is_floating_point():
            value.mul_(decay).add_(student_state[name].detach(), alpha=1 - decay)
        else:
            value.copy_(student_state[name])


@torch.no_grad()
def pseudo_labels(
    logits: torch.Tensor, threshold: float, gate: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Pseudo-labels of a teacher's `logits` (batch, classes, H, W) and their weights (batch, H, W), as in DACS: every
    pixel gets its argmax, and every pixel of an image the same weight, the share of that image's pixels whose
    confidence exceeds `threshold`. `gate` (batch, H, W) in [0, 1], optional, multiplies the weights pixel by pixel
    (a trust map: 0 removes a pixel from the loss).
    """
    probabilities = logits.softmax(dim=1)
    confidence, labels = probabilities.max(dim=1)
    quality = (confidence > threshold).float().mean(dim=(1, 2), keepdim=True)
    weights = quality.expand_as(confidence).clone()
    if gate is not None:
        if gate.shape != weights.shape:
            raise ValueError(f"gate {tuple(gate.shape)} must have the shape of the pixels {tuple(weights.shape)}")
        weights = weights * gate.to(weights.dtype)
    return labels, weights


def class_mix_masks(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """
    ClassMix/DACS masks: for each (H, W) label map of `labels` (batch, H, W), a random half of the classes present
    (255 ignored) and a boolean mask of their pixels. Pasting these pixels of a source image onto a target image mixes
    the domains along class boundaries.
    """
    masks = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for index, label_map in enumerate(labels):
        classes = label_map.unique()
        classes = classes[classes != IGNORE_INDEX]
        if len(classes) == 0:
            continue
        order = torch.randperm(len(classes), generator=generator)[: (len(classes) + 1) // 2]
        masks[index] = torch.isin(label_map, classes[order.to(classes.device)])
    return masks


def mix(pasted: torch.Tensor, background: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """`pasted` where `masks` (batch, H, W) is True, `background` elsewhere; images (batch, C, H, W) or maps
    (batch, H, W)."""
    if masks.shape != pasted.shape[:1] + pasted.shape[-2:]:
        raise ValueError(f"masks {tuple(masks.shape)} do not fit tensors of shape {tuple(pasted.shape)}")
    where = masks[:, None] if pasted.ndim == 4 else masks
    return torch.where(where, pasted, background)


def block_masks(
    shape: tuple[int, int, int], block_size: int, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """
    MIC's masks (Hoyer et al., 2023): for a (batch, H, W) shape, a boolean mask per image that is True on a random
    `ratio` of the `block_size` × `block_size` blocks (the pixels to hide from the student).
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    batch, height, width = shape
    grid = (math.ceil(height / block_size), math.ceil(width / block_size))
    blocks = torch.rand((batch, 1, *grid), generator=generator) < ratio
    return F.interpolate(blocks.float(), scale_factor=block_size, mode="nearest")[:, 0, :height, :width].bool()
