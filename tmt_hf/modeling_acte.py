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
            Per-position transferability in [0, 1]; 1 where the region looks like source (it transfers).
        focus_map (`torch.FloatTensor` of shape `(batch_size, h, w)`):
            Per-position focus map `m` in [0, 1], the input of TMA.
        region_assignments (`torch.FloatTensor` of shape `(batch_size, 9, h, w)`):
            Soft assignment of each position to the 9 region centres around its cell, in row-major order of the
            offsets (-1, -1), (-1, 0), ..., (1, 1). Non-negative, summing to 1 over the 9.
        region_transferability (`torch.FloatTensor` of shape `(batch_size, gh, gw)`):
            Per-region transferability `t(r)` in [0, 1] (see `ACTEConfig.transferability_score`); 1 for regions
            that look like source.
        region_focus (`torch.FloatTensor` of shape `(batch_size, gh, gw)`):
            Per-region focus `m(r)` (see `ACTEConfig.focus_mixing`).
        region_uncertainty (`torch.FloatTensor` of shape `(batch_size, gh, gw)`, *optional*):
            Normalised class entropy `u(r)` of the auxiliary head; `None` when the head is disabled.
        domain_logits (`torch.FloatTensor` of shape `(batch_size, gh, gw)`):
            Discriminator logits of `p_target` per region.
        semantic_logits (`torch.FloatTensor` of shape `(batch_size, num_semantic_classes, gh, gw)`, *optional*):
            Auxiliary head logits per region.
        region_features (`torch.FloatTensor` of shape `(batch_size, feature_dim, gh, gw)`):
            Region features `f(r)` after the last iteration.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            The encoder's stage outputs (one per entry of `encoder_channels`, each halving the resolution) followed
            by the feature map χ, when `output_hidden_states=True`.
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
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def normalize_input(pixel_values: torch.Tensor, mode: str, window: int = 15) -> torch.Tensor:
    """
    Per-image standardisation: `"instance"` per channel, `"image"` jointly over channels, `"none"` not at all.
    `"local"`: each pixel against the mean and standard deviation, joint over channels, of the `window` x `window`
    pixels around it (the deviation floored at a tenth of the image's), which removes a spatially varying veil such as
    haze that thickens with depth while keeping colour and texture. `"image+local"`: both, stacked on channels.
    """
    if mode == "none":
        return pixel_values
    if mode == "image+local":
        return torch.cat([normalize_input(pixel_values, "image"), normalize_input(pixel_values, "local", window)], 1)
    if mode == "local":
        pool = lambda x: F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)  # noqa: E731
        mean = pool(pixel_values.mean(dim=1, keepdim=True))
        variance = (pool(pixel_values.pow(2).mean(dim=1, keepdim=True)) - mean.pow(2)).clamp_min(0.0)
        floor = 0.1 * pixel_values.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        return (pixel_values - mean) / (variance.sqrt() + floor)
    dims = (2, 3) if mode == "instance" else (1, 2, 3)
    mean = pixel_values.mean(dim=dims, keepdim=True)
    return (pixel_values - mean) / pixel_values.std(dim=dims, keepdim=True).clamp_min(1e-3)


def normalized_channels(mode: str, num_channels: int) -> int:
    """Channels of `normalize_input(pixel_values, mode)` for images with `num_channels` channels."""
    return 2 * num_channels if mode == "image+local" else num_channels


class ACTEConvEncoder(nn.Module):
    """Small convolutional encoder: one stride-2 conv-BN-ReLU block pair per stage, then a 1x1 projection to χ."""

    def __init__(self, config: ACTEConfig):
        super().__init__()
        self.stages = nn.ModuleList()
        in_channels = normalized_channels(config.input_normalization, config.num_channels)
        for out_channels in config.encoder_channels:
            self.stages.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = out_channels
        self.input_normalization = config.input_normalization
        self.projection = nn.Conv2d(in_channels, config.feature_dim, 1)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Returns χ (B, feature_dim, h, w) and every stage's output."""
        hidden_states = normalize_input(pixel_values, self.input_normalization)
        stage_outputs = []
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            stage_outputs.append(hidden_states)
        return self.projection(hidden_states), tuple(stage_outputs)


def checking_values() -> bool:
    """Value checks (NaN, ranges) run in eager calls only: under `torch.compile` or `torch.export` they would break
    the graph on data-dependent branches."""
    return not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing())


def finite_range(values: torch.Tensor) -> tuple[float, float] | None:
    """`(min, max)` of a non-empty floating-point tensor, or `None` if it holds NaN or infinity: one reduction, where
    `torch.isfinite(values).all()` makes several passes and a boolean copy (min and max propagate NaN)."""
    low, high = torch.aminmax(values)
    low, high = low.item(), high.item()
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def check_pixel_values(pixel_values, num_channels: int) -> None:
    """Refuses what is not a non-empty, finite, floating-point (batch, channels, height, width) image tensor."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values must have shape (batch_size, {num_channels}, height, width), got {tuple(pixel_values.shape)}"
        )
    if pixel_values.shape[0] == 0 or pixel_values.shape[2] == 0 or pixel_values.shape[3] == 0:
        raise ValueError(f"pixel_values is empty: got shape {tuple(pixel_values.shape)}, expected at least one image")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be normalised floating-point images, got dtype {pixel_values.dtype}. Convert raw "
            "images with the image processor (TMTImageProcessor), which rescales and normalises them."
        )
    if checking_values() and finite_range(pixel_values) is None:
        raise ValueError("pixel_values contains NaN or infinite values")


def check_labels(labels, shape: tuple[int, ...], num_labels: int, ignore_index: int, device) -> torch.Tensor:
    """
    Returns `labels` as a long tensor after checking its shape, that it holds integers (integral floats and NumPy
    arrays are accepted), and that every value is a class index in [0, num_labels) or `ignore_index`.
    """
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"labels must be a tensor of class indices, got {type(labels).__name__}") from error
    labels = labels.to(device)
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"labels must have shape (batch_size, height, width) = {tuple(shape)} to match pixel_values, got "
            f"{tuple(labels.shape)}"
        )
    if labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if not checking_values():
        return labels.long()
    if labels.is_floating_point():
        if not (torch.isfinite(labels).all() and (labels == labels.round()).all()):
            raise ValueError("labels must hold integer class indices; got non-integer values (e.g. 1.7)")
    labels = labels.long()
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_labels))
    if bad.any():
        values = labels[bad].unique()[:10].tolist()
        raise ValueError(f"labels must be class indices in [0, {num_labels}) or {ignore_index} (ignored), got {values}")
    return labels


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


def neighbour_dot(region_values: torch.Tensor, position_values: torch.Tensor, cell_size: int) -> torch.Tensor:
    """
    `Σ_C region_values[:, C, r] · position_values[:, C, p]` for every position p and each of the 3x3 region centres r
    around its cell: (B, C, gh, gw) and (B, C, gh * c, gw * c) -> (B, 9, gh * c, gw * c). The same as
    `(gather_neighbours(region_values, c) * position_values.unsqueeze(2)).sum(dim=1)`, as one batched matrix product
    per cell instead of a (B, C, 9, h, w) intermediate.
    """
    batch, channels, grid_h, grid_w = region_values.shape
    c = cell_size
    neighbours = F.unfold(region_values, kernel_size=3, padding=1).view(batch, channels, 9, grid_h, grid_w)
    positions = position_values.reshape(batch, channels, grid_h, c, grid_w, c)
    return torch.einsum("bckij,bciujv->bkiujv", neighbours, positions).reshape(batch, 9, grid_h * c, grid_w * c)


def assignment_weighted_sum(assignments: torch.Tensor, position_values: torch.Tensor, cell_size: int) -> torch.Tensor:
    """
    `Σ_p a(p, r) · v(p)` for every region r, over the positions whose 3x3 neighbourhood holds r: assignments
    (B, 9, h, w) and values (B, C, h, w) -> (B, C, gh, gw). The same as
    `scatter_to_regions(assignments.unsqueeze(1) * position_values.unsqueeze(2), c)`, without the (B, C, 9, h, w)
    intermediate.
    """
    batch, channels, height, width = position_values.shape
    c = cell_size
    grid_h, grid_w = height // c, width // c
    per_cell = torch.einsum(
        "bkiujv,bciujv->bckij",
        assignments.reshape(batch, 9, grid_h, c, grid_w, c),
        position_values.reshape(batch, channels, grid_h, c, grid_w, c),
    )
    return F.fold(per_cell.reshape(batch, channels * 9, grid_h * grid_w), (grid_h, grid_w), kernel_size=3, padding=1)


class ACTEClustering(nn.Module):
    """
    The paper's differentiable clustering. Seeds are the cells of a c x c grid; each position starts in its own
    cell. Each of the L iterations computes region features `f(r) = Σ_p a(p,r) χ(p) / Σ_p a(p,r)`, similarities
    `s(p,r) = exp(κ cos(f(r), χ(p)))` to the 3x3 centres around p's cell only, and `a(p,r) = s(p,r) / Σ_π s(p,π)`.

    Memory and time are O(h · w · 9 · d): the 3x3 neighbourhood is gathered with unfold and summed back with fold;
    no positions x regions matrix is formed. It runs in fp32, also under autocast: in half precision `κ · cos` is off
    by about κ / 256 and the assignments no longer sum to 1.
    """

    def __init__(self, config: ACTEConfig):
        super().__init__()
        self.cell_size = config.cell_size
        self.num_iterations = config.num_iterations
        self.kappa = config.kappa

    def region_features(self, features: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
        weighted = assignment_weighted_sum(assignments, features, self.cell_size)
        mass = scatter_to_regions(assignments.unsqueeze(1), self.cell_size)
        return weighted / mass.clamp_min(1e-6)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`features` (B, d, h, w) -> fp32 soft assignments (B, 9, h, w) and region features (B, d, gh, gw)."""
        with torch.autocast(features.device.type, enabled=False):
            features = features.float()
            batch, _, height, width = features.shape
            c = self.cell_size
            # Out-of-grid neighbours: unfold pads them with zeros, so mark them once with a ones map.
            valid = gather_neighbours(features.new_ones(1, 1, height // c, width // c), c)[:, 0] > 0.5
            # a(p, r) at the start: each position in its own cell, the centre (index 4) of its 3x3 neighbourhood.
            assignments = torch.zeros(batch, 9, height, width, dtype=features.dtype, device=features.device)
            assignments[:, 4] = 1.0
            unit_features = F.normalize(features, dim=1)
            for _ in range(self.num_iterations):
                centres = F.normalize(self.region_features(features, assignments), dim=1)
                cosine = neighbour_dot(centres, unit_features, c)
                logits = (self.kappa * cosine).masked_fill(~valid, float("-inf"))
                assignments = logits.softmax(dim=1)
            return assignments, self.region_features(features, assignments)


class ACTELocalDiscriminator(nn.Module):
    """
    Domain logits per feature position from a small receptive field: one stride-2 3x3 conv per encoder stage (15
    pixels wide for three stages) on the image standardised by `discriminator_input_normalization`, then a 1x1 MLP.
    It sees local colour and texture only, not layout, object scale or class frequencies, so it cannot separate the
    domains by image-wide cues.
    """

    def __init__(self, config: ACTEConfig):
        super().__init__()
        layers, in_channels = [], normalized_channels(config.discriminator_input_normalization, config.num_channels)
        for out_channels in config.encoder_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.local_features = nn.Sequential(*layers)
        if config.class_conditional_discriminator:
            in_channels += config.num_semantic_classes
        self.classifier = nn.Sequential(
            nn.Conv2d(in_channels, config.discriminator_hidden_size, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(config.discriminator_hidden_size, 1, 1),
        )
        self.input_normalization = config.discriminator_input_normalization

    def forward(self, pixel_values: torch.Tensor, class_probabilities: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) images, and optionally (B, classes, h, w) class probabilities -> (B, 1, h, w) logits."""
        features = self.local_features(normalize_input(pixel_values, self.input_normalization))
        if class_probabilities is not None:
            features = torch.cat([features, class_probabilities], dim=1)
        return self.classifier(features)


def spread_to_positions(region_values: torch.Tensor, assignments: torch.Tensor, cell_size: int) -> torch.Tensor:
    """`m(p) = Σ_r a(p, r) m(r)`: region values (B, C, gh, gw) -> position values (B, C, h, w)."""
    batch, channels, grid_h, grid_w = region_values.shape
    c = cell_size
    neighbours = F.unfold(region_values, kernel_size=3, padding=1).view(batch, channels, 9, grid_h, grid_w)
    spread = torch.einsum("bckij,bkiujv->bciujv", neighbours, assignments.reshape(batch, 9, grid_h, c, grid_w, c))
    return spread.reshape(batch, channels, grid_h * c, grid_w * c)


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
        if config.discriminator_input == "local":
            self.discriminator = ACTELocalDiscriminator(config)
        else:
            self.discriminator = nn.Sequential(
                nn.Conv2d(config.feature_dim, config.discriminator_hidden_size, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(config.discriminator_hidden_size, 1, 1),
            )
        classes = config.num_semantic_classes
        self.semantic_head = nn.Conv2d(config.feature_dim, classes, 1) if classes > 0 else None
        self.post_init()

    def _check_inputs(self, pixel_values, domain_labels, labels):
        check_pixel_values(pixel_values, self.config.num_channels)
        batch, _, height, width = pixel_values.shape
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
            labels = check_labels(
                labels,
                (batch, height, width),
                self.config.num_semantic_classes,
                self.config.semantic_loss_ignore_index,
                pixel_values.device,
            )
        return domain_labels, labels

    def forward(
        self,
        pixel_values: torch.Tensor,
        domain_labels: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
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
        output_hidden_states (`bool`, *optional*):
            Return the encoder's stage outputs and χ as `hidden_states` (default: `config.output_hidden_states`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        domain_labels, labels = self._check_inputs(pixel_values, domain_labels, labels)
        config = self.config
        cell = config.cell_size

        features, stage_outputs = self.encoder(pixel_values.to(self.dtype))
        assignments, region_features = self.clustering(features)

        # The convolutions run in the model's (or autocast's) dtype; what follows them in fp32.
        if config.discriminator_input == "local":
            class_probabilities = None
            if config.class_conditional_discriminator:  # what the semantic encoder sees there, as fixed context
                class_probabilities = self.semantic_head(features.detach()).softmax(dim=1).detach()
            position_logits = self.discriminator(pixel_values.to(self.dtype), class_probabilities).float()
        else:
            discriminator_input = region_features.detach() if config.detach_discriminator_input else region_features
            if config.center_region_features:
                discriminator_input = discriminator_input - discriminator_input.mean(dim=(2, 3), keepdim=True)
            domain_logits = self.discriminator(discriminator_input.to(self.dtype))[:, 0].float()
        semantic_logits = None
        if self.semantic_head is not None:
            semantic_logits = self.semantic_head(region_features.to(self.dtype)).float()
        with torch.autocast(features.device.type, enabled=False):
            if config.discriminator_input == "local":
                domain_logits = (
                    assignment_weighted_sum(assignments, position_logits, cell)
                    / scatter_to_regions(assignments.unsqueeze(1), cell).clamp_min(1e-6)
                )[:, 0]
            region_transferability = self.transferability(domain_logits)

            region_uncertainty = None
            if semantic_logits is not None:
                log_probs = semantic_logits.log_softmax(dim=1)
                region_uncertainty = -(log_probs.exp() * log_probs).sum(dim=1) / math.log(
                    max(config.num_semantic_classes, 2)
                )
                region_uncertainty = region_uncertainty.clamp(0.0, 1.0)
                alpha = config.focus_alpha
                if config.focus_mixing == "gated":
                    region_focus = (1 - region_transferability) * (alpha + (1 - alpha) * region_uncertainty)
                else:
                    region_focus = alpha * (1 - region_transferability) + (1 - alpha) * region_uncertainty
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
            hidden_states=(*stage_outputs, features) if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()

    def transferability(self, domain_logits: torch.Tensor, relative: bool | None = None) -> torch.Tensor:
        """
        Per-region transferability in [0, 1] from discriminator logits (B, gh, gw); see `ACTEConfig`. `relative`
        overrides `config.relative_scoring`.
        """
        if self.config.relative_scoring if relative is None else relative:
            domain_logits = domain_logits - domain_logits.flatten(1).median(dim=1).values[:, None, None]
        if self.config.transferability_score == "density_ratio":
            return torch.exp(-domain_logits.clamp_min(0.0))  # min(1, (1 - p) / p) = min(1, exp(-logit))
        return binary_entropy(domain_logits.sigmoid()) / math.log(2)

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
