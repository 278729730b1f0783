"""
Adaptation objectives for cross-domain segmentation, for `examples/train.py` and for your own training loop.

- Adversarial alignment (DANN; Ganin & Lempitsky, 2015): `GradientReversal`, `dann_coefficient`, `AdversarialAlignment`
  (a domain discriminator on a segmenter's last-layer tokens, image-level, token-level, or token-level weighted by a
  focus map: the paper-faithful transfer stage's region-level alignment, our reconstruction).
- Weighted losses: `weighted_cross_entropy`.
- Self-training (mean teacher, DACS, MIC): `ema_update`, `pseudo_labels`, `class_mix_masks`, `mix`, `block_masks`,
  and `SelfTraining`, the training wrapper that puts them together.

Every function works on plain tensors; none needs Accelerate.
"""

import copy
import math
from collections.abc import Callable

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
        # Checkpointed with the wrapper, so the ramp resumes.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, pixel_values, labels, domain_labels, transferability_map=None):
        """`domain_labels`: (batch,) 0 for source images, 1 for target images. Returns (loss, logs)."""
        last = self.segmenter.config.num_hidden_layers
        out = self.segmenter(
            pixel_values=pixel_values,
            labels=labels,
            transferability_map=transferability_map,
            output_hidden_states=[last],
        )
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
    logits: torch.Tensor, threshold: float, gate: torch.Tensor | None = None, class_quantile: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Pseudo-labels of a teacher's `logits` (batch, classes, H, W) and their weights (batch, H, W). By default as in
    DACS: every pixel gets its argmax, and every pixel of an image the same weight, the share of that image's pixels
    whose confidence exceeds `threshold`. With `class_quantile` q, class-balanced per-pixel selection as in CBST (Zou
    et al., 2018): a pixel weighs 1 if its confidence reaches its class's threshold, the smaller of `threshold` and the
    q-quantile of the confidences of the batch's pixels given that class, else 0, so that every predicted class keeps
    at least a share 1 − q of its pixels (rare classes are not drowned by frequent confident ones). `gate` (batch, H,
    W) in [0, 1], optional, multiplies the weights pixel by pixel (a trust map: 0 removes a pixel from the loss).
    """
    probabilities = logits.softmax(dim=1)
    confidence, labels = probabilities.max(dim=1)
    if class_quantile is None:
        quality = (confidence > threshold).float().mean(dim=(1, 2), keepdim=True)
        weights = quality.expand_as(confidence).clone()
    else:
        if not 0 <= class_quantile <= 1:
            raise ValueError(f"class_quantile must lie in [0, 1], got {class_quantile}")
        thresholds = torch.full((logits.shape[1],), threshold, dtype=confidence.dtype, device=confidence.device)
        for cls in labels.unique():
            values = confidence[labels == cls]
            thresholds[cls] = torch.minimum(thresholds[cls], values.quantile(class_quantile))
        weights = (confidence >= thresholds[labels]).to(confidence.dtype)
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
    blocks = torch.rand((batch, *grid), generator=generator) < ratio
    return _blocks_to_pixels(blocks, block_size, height, width)


def _blocks_to_pixels(blocks: torch.Tensor, block_size: int, height: int, width: int) -> torch.Tensor:
    """(B, h, w) boolean blocks -> (B, height, width) boolean pixel masks, each block `block_size` pixels wide."""
    return F.interpolate(blocks[:, None].float(), scale_factor=block_size, mode="nearest")[:, 0, :height, :width].bool()


class SelfTraining(torch.nn.Module):
    """
    Mean-teacher self-training on unlabelled target images (DACS, Tranheden et al., 2021; MIC, Hoyer et al., 2023) as
    a training wrapper around a `TMTForSemanticSegmentation` (the student, `segmenter`; the wrapper is not saved).

    The teacher is an exponential moving average of the student, starting from it, updated at the start of every
    training call from the student's weights of the previous step (`ema_decay`). Each call, on top of the labelled
    target batch:
      - source images with their labels;
      - the teacher's pseudo-labels on the unlabelled target images (its weak view: the images as given), weighted per
        image by the share of pixels above `threshold` (or selected per class, `class_quantile`; `pseudo_labels`),
        times a per-pixel `trust` map if given;
      - DACS: half of each source image's classes pasted onto a target image (`class_mix_masks`, `mix`), then
        `strong_augmentation`; the student learns source labels on the pasted pixels, pseudo-labels elsewhere;
      - MIC (with `mask_ratio` > 0): the student sees the target images with random `mask_block` × `mask_block` blocks
        hidden (`block_masks`; more blocks where `mask_weights` is high, if given) and learns the teacher's
        pseudo-labels of the whole image.

    Args:
        segmenter: the student.
        ema_decay: the teacher's EMA decay per step.
        threshold: the confidence above which a pseudo-labelled pixel counts towards its image's weight.
        strong_augmentation: a function of a (B, 3, H, W) batch of normalised images (and a `torch.Generator`) that
            returns the student's strong view; `None`: no change.
        mask_ratio, mask_block: MIC's share of hidden blocks and their side in pixels (0: no masking loss).
        class_quantile: `None`, DACS's image-level pseudo-label weight; a quantile q, class-balanced per-pixel
            selection (see `pseudo_labels`).
    """

    def __init__(
        self,
        segmenter,
        ema_decay: float = 0.99,
        threshold: float = 0.968,
        strong_augmentation: Callable | None = None,
        mask_ratio: float = 0.0,
        mask_block: int = 16,
        class_quantile: float | None = None,
    ):
        super().__init__()
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        self.segmenter = segmenter
        self.teacher = copy.deepcopy(segmenter).requires_grad_(False).eval()
        self.ema_decay, self.threshold = ema_decay, threshold
        self.strong_augmentation = strong_augmentation
        self.mask_ratio, self.mask_block = mask_ratio, mask_block
        self.class_quantile = class_quantile

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher predicts without dropout, always
        return self

    def forward(
        self,
        labelled_pixels,
        labelled_labels,
        source_pixels,
        source_labels,
        target_pixels,
        maps: dict | None = None,
        trust=None,
        mask_weights=None,
        generator=None,
    ):
        """
        Returns (loss, logs). `maps` (optional) holds the focus maps TMA receives, keyed `labelled`, `source` and
        `target` like the images; `trust` (B_target, H, W) in [0, 1] gates each pseudo-labelled pixel's weight;
        `mask_weights` (B_target, H, W), non-negative, makes MIC hide blocks in proportion to their mean weight.
        """
        maps = maps or {}
        if self.training:
            ema_update(self.teacher, self.segmenter, self.ema_decay)
        with torch.no_grad():
            teacher_logits = self.teacher(pixel_values=target_pixels, transferability_map=maps.get("target")).logits
        labels, weights = pseudo_labels(teacher_logits, self.threshold, trust, self.class_quantile)
        paste = class_mix_masks(source_labels, generator)
        mixed_pixels = mix(source_pixels, target_pixels, paste)
        if self.strong_augmentation is not None:
            mixed_pixels = self.strong_augmentation(mixed_pixels, generator)
        mixed_labels = mix(source_labels, labels, paste)
        mixed_weights = mix(torch.ones_like(weights), weights, paste)
        mixed_map = None
        if maps.get("source") is not None and maps.get("target") is not None:
            mixed_map = mix(maps["source"], maps["target"], paste)

        count = [len(labelled_pixels), len(source_pixels)]
        pixels = torch.cat([labelled_pixels, source_pixels, mixed_pixels])
        supervised = torch.cat([labelled_labels, source_labels])
        student_map = None
        if maps.get("labelled") is not None and mixed_map is not None:
            student_map = torch.cat([maps["labelled"], maps["source"], mixed_map])
        logits = self.segmenter(pixel_values=pixels, transferability_map=student_map).logits
        supervised_loss = weighted_cross_entropy(logits[: sum(count)], supervised)
        mixed_loss = weighted_cross_entropy(logits[sum(count) :], mixed_labels, mixed_weights)
        loss = supervised_loss + mixed_loss
        logs = {
            "supervised_loss": supervised_loss.item(),
            "mixed_loss": mixed_loss.item(),
            "pseudo_label_weight": weights.mean().item(),
        }
        if self.mask_ratio > 0:
            if mask_weights is not None:
                hidden = weighted_block_masks(mask_weights, self.mask_block, self.mask_ratio, generator)
            else:
                shape = target_pixels.shape[:1] + target_pixels.shape[2:]
                hidden = block_masks(shape, self.mask_block, self.mask_ratio, generator).to(target_pixels.device)
            masked = target_pixels * ~hidden[:, None]
            masked_logits = self.segmenter(pixel_values=masked, transferability_map=maps.get("target")).logits
            masked_loss = weighted_cross_entropy(masked_logits, labels, weights)
            loss = loss + masked_loss
            logs["masked_loss"] = masked_loss.item()
        return loss, logs


def weighted_block_masks(weights: torch.Tensor, block_size: int, ratio: float, generator=None) -> torch.Tensor:
    """
    Like `block_masks`, but each block is hidden with a probability proportional to its mean weight (scaled so that
    `ratio` of the blocks are hidden on average, each probability clipped at 1): (B, H, W) non-negative weights ->
    (B, H, W) boolean masks. Uniform weights give `block_masks`' distribution.
    """
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    batch, height, width = weights.shape
    pad = (0, -width % block_size, 0, -height % block_size)
    block_weights = F.avg_pool2d(F.pad(weights[:, None].float(), pad), block_size)[:, 0]
    mean = block_weights.flatten(1).mean(1).clamp_min(1e-6)[:, None, None]
    probability = (ratio * block_weights / mean).clamp(max=1.0)
    blocks = torch.rand(probability.shape, generator=generator).to(probability.device) < probability
    return _blocks_to_pixels(blocks, block_size, height, width)
