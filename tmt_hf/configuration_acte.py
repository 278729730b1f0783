"""ACTE (Adaptive Cluster-based Transferability Estimator) configuration."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig


@strict
class ACTEConfig(PreTrainedConfig):
    r"""
    Configuration of [`ACTEModel`]. Section 1.1 of the design (the clustering recurrence) follows the TMT paper;
    the encoder, the discriminator, the semantic head and the focus-map mixing are reconstructions, and each of
    their choices is a field here so that it can be ablated.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Number of input image channels.
        encoder_channels (`list[int]`, *optional*, defaults to `[32, 64, 96]`):
            Output channels of the convolutional feature encoder's stages. Every stage halves the resolution, so the
            feature stride is `2 ** len(encoder_channels)` (8 by default).
        feature_dim (`int`, *optional*, defaults to 64):
            Dimension of the clustered feature map χ.
        cell_size (`int`, *optional*, defaults to 4):
            The paper's `c`: the side, in feature positions, of the grid cells that seed the regions. Images must
            have height and width divisible by `cell_size * feature_stride`.
        num_iterations (`int`, *optional*, defaults to 5):
            The paper's `L`: number of clustering iterations. 0 keeps the seed grid: every region is an equal-sized
            c x c patch (the paper's "equal-sized patch" ablation).
        kappa (`float`, *optional*, defaults to 10.0):
            The paper's `κ`: sharpness of the cosine similarity `exp(κ · cos)`.
        input_normalization (`str`, *optional*, defaults to `"instance"`):
            `"instance"` standardises every image channel by its own mean and standard deviation before the encoder,
            which removes global illumination and colour-cast differences between domains, so that the
            discriminator scores local appearance; `"none"` feeds the pixels as they are.
        discriminator_hidden_size (`int`, *optional*, defaults to 128):
            Width of the domain discriminator MLP on region features.
        center_region_features (`bool`, *optional*, defaults to `True`):
            Feed the discriminator `f(r) - mean_r f(r)`, each region relative to its image, so that a domain-wide
            signature does not make every region look equally shifted.
        num_semantic_classes (`int`, *optional*, defaults to 19):
            Number of semantic classes of the auxiliary segmentation head; 0 disables the head, and the focus map is
            then `1 - transferability`.
        focus_alpha (`float`, *optional*, defaults to 0.5):
            `α` in the focus map `m = α (1 - t) + (1 - α) u`.
        domain_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the discriminator binary cross-entropy in the loss.
        semantic_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the auxiliary head's cross-entropy on source labels in the loss.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value ignored by the auxiliary cross-entropy.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialiser of linear layers.
    """

    model_type = "acte"

    num_channels: int = 3
    encoder_channels: list[int] | tuple[int, ...] = (32, 64, 96)
    feature_dim: int = 64
    cell_size: int = 4
    num_iterations: int = 5
    kappa: float | int = 10.0
    input_normalization: str = "instance"
    discriminator_hidden_size: int = 128
    center_region_features: bool = True
    num_semantic_classes: int = 19
    focus_alpha: float | int = 0.5
    domain_loss_weight: float | int = 1.0
    semantic_loss_weight: float | int = 1.0
    semantic_loss_ignore_index: int = 255
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.encoder_channels = list(self.encoder_channels)
        super().__post_init__(**kwargs)
        if self.cell_size < 1 or self.num_iterations < 0:
            raise ValueError(
                f"cell_size must be >= 1 and num_iterations >= 0, got {self.cell_size}, {self.num_iterations}"
            )
        if self.input_normalization not in ("instance", "none"):
            raise ValueError(f"input_normalization must be 'instance' or 'none', got {self.input_normalization!r}")
        if not 0.0 <= self.focus_alpha <= 1.0:
            raise ValueError(f"focus_alpha must lie in [0, 1], got {self.focus_alpha}")

    @property
    def feature_stride(self) -> int:
        """Stride of the feature map χ relative to the input image."""
        return 2 ** len(self.encoder_channels)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this: one clustering cell in pixels."""
        return self.feature_stride * self.cell_size


__all__ = ["ACTEConfig"]
