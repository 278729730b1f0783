"""ACTE (Adaptive Cluster-based Transferability Estimator) configuration."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

# Per-image input standardisations of the encoder and the local discriminator (see `ACTEConfig.input_normalization`).
NORMALIZATIONS = ("instance", "image", "local", "image+local", "none")


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
            Per-image standardisation before the clustering encoder: `"instance"` standardises every channel by its
            own mean and standard deviation, which removes global illumination and colour-cast differences between
            domains; `"image"` standardises all channels jointly (removes brightness and contrast, keeps colour);
            `"local"` standardises each pixel jointly over channels against its 15 x 15 neighbourhood (also removes
            a veil that varies across the image, such as haze thickening with depth; keeps colour and texture);
            `"image+local"` stacks the `"image"` and `"local"` versions (twice the channels); `"none"` feeds the
            pixels as they are.
        discriminator_input_normalization (`str`, *optional*, defaults to `"image"`):
            The same choice for the local discriminator's input (`discriminator_input="local"`). `"image"` keeps
            the colour of each local patch (orange leaves against green ones) while removing brightness and contrast
            (night, fog); per-channel standardisation would erase that colour difference.
        discriminator_hidden_size (`int`, *optional*, defaults to 128):
            Width of the domain discriminator MLP on region features.
        discriminator_input (`str`, *optional*, defaults to `"local"`):
            What the domain discriminator reads. `"local"`: its own small convolutional stack on the image, with a
            receptive field of `2 ** (len(encoder_channels) + 1) - 1` pixels, whose per-position logits are averaged
            over each region by the soft assignments; it sees colour and texture, not layout or class frequencies.
            `"regions"`: the region features `f(r)` of the clustering encoder.
        class_conditional_discriminator (`bool`, *optional*, defaults to `False`):
            With `discriminator_input="local"`: also give the discriminator the auxiliary head's class probabilities
            at each position (detached), so that it judges appearance *given the class* (brown on terrain against
            brown on a building). Needs `num_semantic_classes > 0`.
        center_region_features (`bool`, *optional*, defaults to `True`):
            With `discriminator_input="regions"`: feed the discriminator `f(r) - mean_r f(r)`, each region relative
            to its image, so that a domain-wide signature does not make every region look equally shifted.
        detach_discriminator_input (`bool`, *optional*, defaults to `True`):
            With `discriminator_input="regions"`: train the discriminator on region features it cannot shape: its
            gradient does not reach the encoder, which learns from the semantic loss only. The encoder then has no incentive to find image-wide domain cues
            (noise, layout), and the discriminator can only separate regions whose *semantic* features look new.
        transferability_score (`str`, *optional*, defaults to `"density_ratio"`):
            How a region's discriminator output becomes its transferability `t(r)` in [0, 1]. `"density_ratio"`:
            `t = min(1, (1 - p) / p)` with `p = p_target(r)`, the source/target density ratio clipped at 1, so a
            region that looks like source (or that the discriminator cannot place) scores 1 and only target-like
            regions score low. `"entropy"`: `t = H(p) / ln 2`, which also scores confidently *source*-like regions 0.
        relative_scoring (`bool`, *optional*, defaults to `True`):
            Score each region against its own image: the discriminator logit minus the image's median region logit.
            An image-wide domain signature then moves no region; what remains is which regions look *more*
            target-like than the rest of their image.
        focus_mixing (`str`, *optional*, defaults to `"sum"`):
            How transferability and semantic uncertainty form the focus map. `"sum"`: `m = α (1 - t) + (1 - α) u`, so
            a region the source-trained head is unsure of is focused on even where the discriminator does not flag it
            (on the embedded benchmark this finds the wet road's shift better than `"gated"`, and the other shifts as
            well). `"gated"`: `m = (1 - t) (α + (1 - α) u)`, uncertainty only re-weights regions that do not transfer.
        num_semantic_classes (`int`, *optional*, defaults to 19):
            Number of semantic classes of the auxiliary segmentation head; 0 disables the head, and the focus map is
            then `1 - transferability`.
        focus_alpha (`float`, *optional*, defaults to 0.5):
            `α` of the focus map (see `focus_mixing`); 1 ignores the semantic uncertainty.
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
    discriminator_input_normalization: str = "image"
    discriminator_hidden_size: int = 128
    discriminator_input: str = "local"
    class_conditional_discriminator: bool = False
    center_region_features: bool = True
    detach_discriminator_input: bool = True
    transferability_score: str = "density_ratio"
    relative_scoring: bool = True
    focus_mixing: str = "sum"
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
        for name in ("input_normalization", "discriminator_input_normalization"):
            if getattr(self, name) not in NORMALIZATIONS:
                raise ValueError(f"{name} must be one of {NORMALIZATIONS}, got {getattr(self, name)!r}")
        if self.transferability_score not in ("density_ratio", "entropy"):
            raise ValueError(
                f"transferability_score must be 'density_ratio' or 'entropy', got {self.transferability_score!r}"
            )
        if self.discriminator_input not in ("local", "regions"):
            raise ValueError(f"discriminator_input must be 'local' or 'regions', got {self.discriminator_input!r}")
        if self.class_conditional_discriminator and (
            self.num_semantic_classes < 1 or self.discriminator_input != "local"
        ):
            raise ValueError(
                "class_conditional_discriminator needs discriminator_input='local' and the semantic head "
                "(num_semantic_classes > 0)"
            )
        if self.focus_mixing not in ("gated", "sum"):
            raise ValueError(f"focus_mixing must be 'gated' or 'sum', got {self.focus_mixing!r}")
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
