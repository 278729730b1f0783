"""PyTorch ACTE: the Adaptive Cluster-based Transferability Estimator of TMT.

The clustering recurrence (`ACTEClustering`) follows the TMT paper. The feature encoder, the domain discriminator,
the semantic-uncertainty head and the focus-map mixing are this project's reconstruction; each choice is a field of
[`ACTEConfig`].
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_acte import ACTEConfig


@dataclass
class ACTEOutput(ModelOutput):
    """
    Output of [`ACTEModel`]. Position maps are at the feature resolution `(h, w) = (H, W) / feature_stride`;
    region tensors are on the seed grid `(gh, gw) = (h, w) / cell_size`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Weighted sum of `domain_loss` and `semantic_loss`, when `domain_labels` or `labels` are given.
        domain_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Discriminator binary cross-entropy over every region (source 0, target 1).
        semantic_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of the auxiliary head on the given labels, pixels equal to the ignore index skipped.
        transferability (`torch.FloatTensor` of shape `(batch_size, h, w)`):
            Per-position transferability in [0, 1]; 1 where the discriminator cannot tell the domains apart.
        focus_map (`torch.FloatTensor` of shape `(batch_size, h, w)`):
            Per-position focus map `m` in [0, 1], the input of TMA.
        region_assignments (`torch.FloatTensor` of shape `(batch_size, 9, h, w)`):
            Soft assignment of each position to the 9 region centres around its cell, in row-major order of the
            offsets (-1, -1), (-1, 0), ..., (1, 1). Non-negative, summing to 1 over the 9.
        region_transferability (`torch.FloatTensor` of shape `(batch_size, gh, gw)`):
            Per-region transferability `t(r) = H(p_target(r)) / ln 2`.
        region_focus (`torch.FloatTensor` of shape `(batch_size, gh, gw)`):
            Per-region focus `m(r) = α (1 - t(r)) + (1 - α) u(r)`.
        region_uncertainty (`torch.FloatTensor` of shape `(batch_size, gh, gw)`, *optional*):
            Normalised class entropy `u(r)` of the auxiliary head; `None` when the head is disabled.
        domain_logits (`torch.FloatTensor` of shape `(batch_size, gh, gw)`):
            Discriminator logits of `p_target` per region.
        semantic_logits (`torch.FloatTensor` of shape `(batch_size, num_semantic_classes, gh, gw)`, *optional*):
            Auxiliary head logits per region.
        region_features (`torch.FloatTensor` of shape `(batch_size, feature_dim, gh, gw)`):
            Region features `f(r)` after the last iteration.
    """

    loss: torch.FloatTensor | None = None
    domain_loss: torch.FloatTensor | None = None
    semantic_loss: torch.FloatTensor | None = None
    transferability: torch.FloatTensor | None = None
    focus_map: torch.FloatTensor | None = None
    region_assignments: torch.FloatTensor | None = None
    region_transferability: torch.FloatTensor | None = None
    region_focus: torch.FloatTensor | None = None
    region_uncertainty: torch.FloatTensor | None = None
    domain_logits: torch.FloatTensor | None = None
    semantic_logits: torch.FloatTensor | None = None
    region_features: torch.FloatTensor | None = None


class ACTEConvEncoder(nn.Module):
    """Small convolutional encoder: one stride-2 conv-BN-ReLU block per stage, then a 1x1 projection to χ."""

    def __init__(self, config: ACTEConfig):
        super().__init__()
        stages = []
        in_channels = config.num_channels
        for out_channels in config.encoder_channels:
            stages += [
                nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.input_normalization = config.input_normalization
        self.stages = nn.Sequential(*stages)
        self.projection = nn.Conv2d(in_channels, config.feature_dim, 1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.input_normalization == "instance":
            mean = pixel_values.mean(dim=(2, 3), keepdim=True)
            std = pixel_values.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
            pixel_values = (pixel_values - mean) / std
        return self.projection(self.stages(pixel_values))


def gather_neighbours(region_values: torch.Tensor, cell_size: int) -> torch.Tensor:
    """
    For every position, the values of the 3x3 region centres around its cell.

    `region_values` (B, C, gh, gw) becomes (B, C, 9, gh * c, gw * c); centres outside the grid give 0.
    """
    batch, channels, grid_h, grid_w = region_values.shape
    neighbours = F.unfold(region_values, kernel_size=3, padding=1).view(batch, channels * 9, grid_h, grid_w)
    neighbours = neighbours.repeat_interleave(cell_size, dim=2).repeat_interleave(cell_size, dim=3)
    return neighbours.view(batch, channels, 9, grid_h * cell_size, grid_w * cell_size)


def scatter_to_regions(position_values: torch.Tensor, cell_size: int) -> torch.Tensor:
    """
    Adjoint of `gather_neighbours`: sums (B, C, 9, h, w) position contributions into their regions (B, C, gh, gw).
    """
    batch, channels, _, height, width = position_values.shape
    grid_h, grid_w = height // cell_size, width // cell_size
    per_cell = position_values.reshape(batch, channels * 9, grid_h, cell_size, grid_w, cell_size).sum(dim=(3, 5))
    return F.fold(per_cell.flatten(2), (grid_h, grid_w), kernel_size=3, padding=1)


class ACTEClustering(nn.Module):
    """
    The paper's differentiable clustering. Seeds are the cells of a c x c grid; each position starts in its own
    cell. Each of the L iterations computes region features `f(r) = Σ_p a(p,r) χ(p) / Σ_p a(p,r)`, similarities
    `s(p,r) = exp(κ cos(f(r), χ(p)))` to the 3x3 centres around p's cell only, and `a(p,r) = s(p,r) / Σ_π s(p,π)`.

    Memory and time are O(h · w · 9 · d): the 3x3 neighbourhood is gathered with unfold and summed back with fold;
    no positions x regions matrix is formed.
    """

    def __init__(self, config: ACTEConfig):
        super().__init__()
        self.cell_size = config.cell_size
        self.num_iterations = config.num_iterations
        self.kappa = config.kappa

    def region_features(self, features: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
        weighted = scatter_to_regions(assignments.unsqueeze(1) * features.unsqueeze(2), self.cell_size)
        mass = scatter_to_regions(assignments.unsqueeze(1), self.cell_size)
        return weighted / mass.clamp_min(1e-6)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`features` (B, d, h, w) -> soft assignments (B, 9, h, w) and region features (B, d, gh, gw)."""
        batch, _, height, width = features.shape
        c = self.cell_size
        # Out-of-grid neighbours: unfold pads them with zeros, so mark them once with a ones map.
        valid = gather_neighbours(features.new_ones(1, 1, height // c, width // c), c)[:, 0] > 0.5
        # a(p, r) at the start: each position belongs to its own cell, the centre (index 4) of its 3x3 neighbourhood.
        assignments = torch.zeros(batch, 9, height, width, dtype=features.dtype, device=features.device)
        assignments[:, 4] = 1.0
        unit_features = F.normalize(features, dim=1)
        for _ in range(self.num_iterations):
            centres = F.normalize(self.region_features(features, assignments), dim=1)
            cosine = (gather_neighbours(centres, c) * unit_features.unsqueeze(2)).sum(dim=1)
            logits = (self.kappa * cosine).masked_fill(~valid, float("-inf"))
            assignments = logits.softmax(dim=1)
        return assignments, self.region_features(features, assignments)


def spread_to_positions(region_values: torch.Tensor, assignments: torch.Tensor, cell_size: int) -> torch.Tensor:
    """`m(p) = Σ_r a(p, r) m(r)`: region values (B, C, gh, gw) -> position values (B, C, h, w)."""
    return (gather_neighbours(region_values, cell_size) * assignments.unsqueeze(1)).sum(dim=2)


class ACTEPreTrainedModel(PreTrainedModel):
    config: ACTEConfig
    config_class = ACTEConfig
    base_model_prefix = "acte"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module):
        """Kaiming initialisation for the convolutions (a ResNet-style encoder trained from scratch)."""
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ACTEModel(ACTEPreTrainedModel):
    """
    ACTE: clusters an image into adaptive regions and scores each region's transferability.

    The output carries per-position transferability and focus maps in [0, 1], the soft region assignments, the
    per-region scores and the discriminator logits; a loss is returned when `domain_labels` or `labels` are given.
    """

    def __init__(self, config: ACTEConfig):
        super().__init__(config)
        self.encoder = ACTEConvEncoder(config)
        self.clustering = ACTEClustering(config)
        self.discriminator = nn.Sequential(
            nn.Conv2d(config.feature_dim, config.discriminator_hidden_size, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(config.discriminator_hidden_size, 1, 1),
        )
        classes = config.num_semantic_classes
        self.semantic_head = nn.Conv2d(config.feature_dim, classes, 1) if classes > 0 else None
        self.post_init()

    def _check_inputs(self, pixel_values, domain_labels, labels):
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            raise ValueError(
                "pixel_values must be a tensor of shape (batch_size, num_channels, height, width), got "
                f"{getattr(pixel_values, 'shape', type(pixel_values))}"
            )
        batch, channels, height, width = pixel_values.shape
        if channels != self.config.num_channels:
            raise ValueError(f"pixel_values must have {self.config.num_channels} channels, got {channels}")
        multiple = self.config.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"ACTE needs height and width divisible by cell_size * feature_stride = {multiple} "
                f"({self.config.cell_size} * {self.config.feature_stride}), got {height}x{width}. Resize or pad the "
                "image, e.g. with the image processor."
            )
        if domain_labels is not None:
            domain_labels = torch.as_tensor(domain_labels, device=pixel_values.device)
            if domain_labels.shape != (batch,):
                raise ValueError(
                    f"domain_labels must have shape ({batch},), one label per image, got {tuple(domain_labels.shape)}"
                )
            if not torch.isin(domain_labels, torch.tensor([0, 1], device=domain_labels.device)).all():
                raise ValueError(
                    f"domain_labels must be 0 (source) or 1 (target), got values {domain_labels.unique().tolist()}"
                )
        if labels is not None:
            if self.semantic_head is None:
                raise ValueError(
                    "labels were given but the auxiliary semantic head is disabled (num_semantic_classes=0)"
                )
            if labels.shape != (batch, height, width):
                raise ValueError(
                    f"labels must have shape (batch_size, height, width) = {(batch, height, width)} to match "
                    f"pixel_values, got {tuple(labels.shape)}"
                )
        return domain_labels

    def forward(
        self,
        pixel_values: torch.Tensor,
        domain_labels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ACTEOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Images; height and width must be multiples of `config.size_multiple`.
        domain_labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            0 for source images, 1 for target images; gives the discriminator loss.
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Semantic labels (source images) for the auxiliary head; `config.semantic_loss_ignore_index` is ignored.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        domain_labels = self._check_inputs(pixel_values, domain_labels, labels)
        config = self.config
        cell = config.cell_size

        features = self.encoder(pixel_values)
        assignments, region_features = self.clustering(features)

        discriminator_input = region_features
        if config.center_region_features:
            discriminator_input = region_features - region_features.mean(dim=(2, 3), keepdim=True)
        domain_logits = self.discriminator(discriminator_input)[:, 0]
        p_target = domain_logits.sigmoid()
        region_transferability = binary_entropy(p_target) / math.log(2)

        semantic_logits = region_uncertainty = None
        if self.semantic_head is not None:
            semantic_logits = self.semantic_head(region_features)
            log_probs = semantic_logits.log_softmax(dim=1)
            region_uncertainty = -(log_probs.exp() * log_probs).sum(dim=1) / math.log(
                max(config.num_semantic_classes, 2)
            )
            region_uncertainty = region_uncertainty.clamp(0.0, 1.0)
            region_focus = (
                config.focus_alpha * (1 - region_transferability) + (1 - config.focus_alpha) * region_uncertainty
            )
        else:
            region_focus = 1 - region_transferability

        region_maps = torch.stack([region_transferability, region_focus], dim=1)
        position_maps = spread_to_positions(region_maps, assignments, cell).clamp(0.0, 1.0)

        domain_loss = semantic_loss = loss = None
        if domain_labels is not None:
            targets = domain_labels.to(domain_logits.dtype)[:, None, None].expand_as(domain_logits)
            domain_loss = F.binary_cross_entropy_with_logits(domain_logits, targets)
            loss = config.domain_loss_weight * domain_loss
        if labels is not None:
            semantic_loss = self._semantic_loss(semantic_logits, assignments, labels)
            weighted = config.semantic_loss_weight * semantic_loss
            loss = weighted if loss is None else loss + weighted

        output = ACTEOutput(
            loss=loss,
            domain_loss=domain_loss,
            semantic_loss=semantic_loss,
            transferability=position_maps[:, 0],
            focus_map=position_maps[:, 1],
            region_assignments=assignments,
            region_transferability=region_transferability,
            region_focus=region_focus,
            region_uncertainty=region_uncertainty,
            domain_logits=domain_logits,
            semantic_logits=semantic_logits,
            region_features=region_features,
        )
        return output if return_dict else output.to_tuple()

    def _semantic_loss(self, semantic_logits, assignments, labels):
        """NLL of the labels under the class distribution spread from regions to positions (SSN-style)."""
        probabilities = spread_to_positions(semantic_logits.softmax(dim=1), assignments, self.config.cell_size)
        height, width = probabilities.shape[-2:]
        small_labels = F.interpolate(labels[:, None].float(), size=(height, width), mode="nearest")[:, 0].long()
        if not (small_labels != self.config.semantic_loss_ignore_index).any():
            return probabilities.sum() * 0.0  # every pixel ignored (e.g. a batch of target images)
        return F.nll_loss(
            probabilities.clamp_min(1e-8).log(), small_labels, ignore_index=self.config.semantic_loss_ignore_index
        )

    @staticmethod
    def hard_regions(region_assignments: torch.Tensor, cell_size: int) -> torch.Tensor:
        """Argmax of the soft assignments as global region ids on the seed grid: (B, 9, h, w) -> (B, h, w)."""
        _, _, height, width = region_assignments.shape
        grid_w = width // cell_size
        offset = region_assignments.argmax(dim=1)
        cell_y = torch.arange(height, device=offset.device)[:, None] // cell_size
        cell_x = torch.arange(width, device=offset.device)[None, :] // cell_size
        return (cell_y + offset // 3 - 1) * grid_w + (cell_x + offset % 3 - 1)


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of a Bernoulli variable, safe at 0 and 1."""
    p = probability.clamp(1e-7, 1 - 1e-7)
    return -(p * p.log() + (1 - p) * (1 - p).log())


__all__ = ["ACTEModel", "ACTEPreTrainedModel", "ACTEOutput"]
