"""TMT (Transferable Mask Transformer) configuration."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import SubConfigSpec
from transformers.models.vit.configuration_vit import ViTConfig

from .configuration_acte import ACTEConfig

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

TMA_FORMS = ("key_bias", "query_temperature", "output_gate", "value_reweight", "output_film")

# Backbone sizes. "tiny" is for CPU tests and demos; "small" is ViT-S/16; "base" is ViT-B/16.
TMT_PRESETS = {
    "tiny": {
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "intermediate_size": 384,
        "image_size": 256,
        "decoder_hidden_size": 96,
    },
    "small": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "intermediate_size": 1536,
        "image_size": 224,
        "decoder_hidden_size": 256,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "image_size": 224,
        "decoder_hidden_size": 256,
    },
}


@strict
class TMTConfig(ViTConfig):
    r"""
    Configuration of [`TMTModel`] and [`TMTForSemanticSegmentation`]: a ViT configuration plus the TMA attention
    bias, the decode head and an optional frozen ACTE estimator. All ViT fields keep their meaning, so a stock ViT
    configuration converts by `TMTConfig(**vit_config.to_dict())`.

    Args:
        tma_layers (`list[int]`, *optional*):
            Indices of the encoder layers whose self-attention gets TMA. `None` (the default) means every layer; `[]`
            switches TMA off.
        tma_form (`str`, *optional*, defaults to `"output_gate"`):
            How the focus map `m` enters the attention (see `TMTAttention`): `"key_bias"` adds `λ · m[key]` to the
            logits; `"query_temperature"` scales each query by `exp(λ · m[query])`; `"output_gate"` scales each
            head's output by `1 + λ · m[query]`; `"value_reweight"` weights each value by `1 + λ · m[key]` after the
            softmax (TVT-style, not renormalised); `"output_film"` is the gate plus a learned per-head offset
            `m[query] · β`.
        tma_init (`float`, *optional*, defaults to 0.0):
            Initial value of every learnable `λ[layer, head]`. With 0 every form is exactly the underlying ViT.
        tma_map_normalization (`str`, *optional*, defaults to `"none"`):
            How the focus map is rescaled per image after pooling to the patch grid: `"none"` keeps `m` as given;
            `"minmax"` stretches each image's map to span [0, 1]. Softmax ignores a constant added to every key, so
            only the contrast of `m` within an image can move attention; `"minmax"` restores that contrast when
            ACTE's map is nearly uniform.
        decode_layers (`list[int]`, *optional*):
            1-based indices of the encoder layers whose patch tokens the decode head fuses. `None` (the default)
            takes four evenly spaced layers ending with the last, as in SETR-MLA and DPT.
        decoder_hidden_size (`int`, *optional*, defaults to 256):
            Width of the decode head: each fused layer is projected to this size before the fusion convolution.
        decoder_dropout (`float`, *optional*, defaults to 0.1):
            Dropout before the decode head's classifier.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value ignored by the segmentation loss.
        acte_config (`ACTEConfig` or `dict`, *optional*):
            Configuration of the frozen ACTE estimator carried by [`TMTForSemanticSegmentation`]. `None` means the
            model carries none and takes its focus map as an input (or runs without one).

    By default `num_labels` is 19 with the Cityscapes train-ID `id2label`.

    Example:

    ```python
    >>> from tmt_hf import TMTConfig, TMTForSemanticSegmentation
    >>> config = TMTConfig.from_preset("tiny")
    >>> model = TMTForSemanticSegmentation(config)
    ```"""

    model_type = "tmt"
    sub_configs_defaults = {"acte_config": SubConfigSpec(config_class=ACTEConfig, optional=True)}

    tma_layers: list[int] | tuple[int, ...] | None = None
    tma_form: str = "output_gate"
    tma_init: float | int = 0.0
    tma_map_normalization: str = "none"
    decode_layers: list[int] | tuple[int, ...] | None = None
    decoder_hidden_size: int = 256
    decoder_dropout: float | int = 0.1
    semantic_loss_ignore_index: int = 255
    acte_config: dict | ACTEConfig | None = None

    def __post_init__(self, **kwargs):
        if self.id2label is None and "num_labels" not in kwargs:
            self.id2label = dict(enumerate(CITYSCAPES_CLASSES))
            self.label2id = {name: index for index, name in self.id2label.items()}
        super().__post_init__(**kwargs)
        if self.tma_form not in TMA_FORMS:
            raise ValueError(f"tma_form must be one of {TMA_FORMS}, got {self.tma_form!r}")
        if self.tma_map_normalization not in ("none", "minmax"):
            raise ValueError(f"tma_map_normalization must be 'none' or 'minmax', got {self.tma_map_normalization!r}")
        depth = self.num_hidden_layers
        self.tma_layers = list(range(depth)) if self.tma_layers is None else sorted(set(self.tma_layers))
        if any(not 0 <= index < depth for index in self.tma_layers):
            raise ValueError(f"tma_layers must be layer indices in [0, {depth}), got {self.tma_layers}")
        if self.decode_layers is None:
            self.decode_layers = sorted({max(1, round(depth * k / 4)) for k in (1, 2, 3, 4)})
        self.decode_layers = list(self.decode_layers)
        if any(not 1 <= index <= depth for index in self.decode_layers):
            raise ValueError(f"decode_layers must be 1-based layer indices in [1, {depth}], got {self.decode_layers}")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "TMTConfig":
        """`PreTrainedConfig.from_dict`; TMT checkpoints saved before `tma_form` existed were trained with the key bias."""
        if "tma_form" not in config_dict and "tma_init" in config_dict:
            config_dict = {**config_dict, "tma_form": "key_bias"}
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "TMTConfig":
        """Builds a configuration from a named size preset ("tiny", "small" or "base"); `kwargs` override fields."""
        if name not in TMT_PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(TMT_PRESETS)}")
        return cls(**{**TMT_PRESETS[name], **kwargs})


__all__ = ["TMTConfig", "TMT_PRESETS", "CITYSCAPES_CLASSES"]
