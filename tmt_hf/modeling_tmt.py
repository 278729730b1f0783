"""PyTorch TMT (Transferable Mask Transformer): a ViT whose self-attention is modulated by a transferability focus map.

TMA (Transferable Masked Attention) feeds the focus map `m` (pooled to the patch grid; 0 for CLS) into the attention of
the layers in `config.tma_layers`, in the form `config.tma_form` (see `TMTAttention`), scaled by a learnable
`λ[layer, head]`. With λ = 0 every form is exactly the underlying ViT.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_outputs import BaseModelOutputWithPooling, SemanticSegmenterOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
from transformers.models.vit.modeling_vit import (
    ViTAttention,
    ViTEmbeddings,
    ViTLayer,
    ViTModel,
    ViTPooler,
    ViTPreTrainedModel,
    eager_attention_forward,
)
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_tmt import TMTConfig
from .modeling_acte import ACTEModel, check_labels, check_pixel_values, checking_values, finite_range

# Stock ViT checkpoints (e.g. google/vit-base-patch16-224-in21k) use the old `encoder.layer.N.attention.attention.query`
# key layout. transformers renames it only for its own ViT classes, so the same renaming is registered for TMTModel;
# TMTForSemanticSegmentation picks it up for its `vit` sub-model. It runs at import, also under trust_remote_code.
register_checkpoint_conversion_mapping("TMTModel", get_checkpoint_conversion_mapping("ViTModel"), overwrite=True)

# The image-segmentation pipeline checks the model's class name against transformers' static name tables only (it
# never consults classes registered with AutoModelForSemanticSegmentation), and logs "not supported" for any other.
# Listing the segmenter there (a name only: the lazy auto mapping skips model types without a built-in config) lets
# the pipeline accept it, also when the class comes from a Hub repo under trust_remote_code.
MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault("tmt", "TMTForSemanticSegmentation")

_MAP_CAPABLE_ATTENTION = ("eager", "sdpa")
# Whichever TMT class is saved, a directory loads as the base model and as the segmenter.
_TMT_AUTO_MAP = {
    "AutoModel": "modeling_tmt.TMTModel",
    "AutoModelForSemanticSegmentation": "modeling_tmt.TMTForSemanticSegmentation",
}


@dataclass
class TMTSemanticSegmenterOutput(SemanticSegmenterOutput):
    """
    [`SemanticSegmenterOutput`] plus the focus map that biased the attention.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of `logits` against `labels`, when labels are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Class scores at the input resolution, in fp32 (also under autocast or a half-precision model).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Encoder hidden states, when `output_hidden_states=True`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights, when `output_attentions=True` (needs `attn_implementation="eager"`).
        focus_map (`torch.FloatTensor` of shape `(batch_size, grid_height, grid_width)`, *optional*):
            The focus map used by TMA, pooled to the patch grid; `None` when no map was used.
    """

    focus_map: torch.FloatTensor | None = None


@dataclass
class TMTModelOutput(BaseModelOutputWithPooling):
    """
    [`BaseModelOutputWithPooling`] plus the focus map used by TMA.

    Args:
        focus_map (`torch.FloatTensor` of shape `(batch_size, grid_height, grid_width)`, *optional*):
            The focus map pooled to the patch grid; `None` when no map was given.
    """

    focus_map: torch.FloatTensor | None = None


class TMTAttention(ViTAttention):
    """
    ViT self-attention with TMA. With `f` the focus of each token and `λ` one learnable value per head, the forms
    (`config.tma_form`) are:

    - `"key_bias"`: `logits[i, j] += λ · f[j]`, an additive bias per key. It re-weights which keys every query reads
      but cannot tell a token that *it* is shifted, and a map constant over an image cancels in the softmax.
    - `"query_temperature"`: `q[i] *= exp(λ · f[i])`, a per-token temperature: shifted queries attend more sharply
      (λ > 0) or more broadly (λ < 0).
    - `"output_gate"`: `out[i] *= 1 + λ · f[i]`, a per-token gate on each head's output.
    - `"value_reweight"`: `out[i] = Σ_j A[i, j] (1 + λ · f[j]) v[j]`, TVT-style multiplicative transferable attention
      on the attention weights, without renormalisation, so that attending to shifted tokens changes the output.
    - `"output_film"`: `out[i] = out[i] (1 + λ · f[i]) + f[i] · β`, the gate plus a learned offset `β` per head (a
      head-dim vector, initialised to 0): FiLM conditioning of each head's output on the token's own focus.

    The key bias enters eager and SDPA attention through the 4-D additive `attention_mask`. Training on CPU with SDPA
    takes another, equal route: PyTorch's fused CPU kernels cannot differentiate an `attn_mask`, and a mask that needs
    a gradient sends SDPA to its O(tokens²) math path, about twice as slow. There the bias is folded into one extra
    head dimension instead, `[q, λ/scale] · [k, m] · scale = q·k·scale + λ·m`, which the fused kernel differentiates
    like any query and key (at the precision of the queries and keys). The other forms need no mask at all.

    Under `torch.autocast` the temperature, the gate and the offset are computed in fp32 and the result cast back to
    the attention's dtype: in half precision `1 + λ·m` rounds a small `λ·m` away.
    """

    def __init__(self, config: TMTConfig, layer_idx: int):
        super().__init__(config)
        self.layer_idx = layer_idx
        self.tma_lambda = self.tma_offset = None
        if layer_idx in config.tma_layers:
            self.tma_lambda = nn.Parameter(torch.full((config.num_attention_heads,), float(config.tma_init)))
            if config.tma_form == "output_film":
                self.tma_offset = nn.Parameter(torch.zeros(config.num_attention_heads, self.head_dim))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        focus_tokens: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        focus_tokens (`torch.FloatTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Focus value of every token (0 for CLS). `None` leaves the attention unmodulated.
        """
        form = self.config.tma_form
        active = focus_tokens is not None and self.tma_lambda is not None
        if active:
            implementation = self.config._attn_implementation
            if implementation not in _MAP_CAPABLE_ATTENTION:
                raise ValueError(
                    f"TMA modulates the attention with a per-token map, which attn_implementation={implementation!r} "
                    "cannot take. Load the model with attn_implementation='sdpa' or 'eager', or run without a map."
                )
        if active and form == "key_bias":
            if (
                self.config._attn_implementation == "sdpa"
                and attention_mask is None
                and hidden_states.device.type == "cpu"
                and torch.is_grad_enabled()
                and self.tma_lambda.requires_grad
            ):
                return self.forward_bias_in_head_dim(hidden_states, focus_tokens)
            lam = self.tma_lambda.to(focus_tokens.dtype)
            bias = lam[None, :, None, None] * focus_tokens[:, None, None, :]
            attention_mask = bias if attention_mask is None else attention_mask + bias

        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        if active and form == "query_temperature":
            exponent = self.tma_lambda.float()[None, :, None, None] * focus_tokens.float()[:, None, :, None]
            query = (query.float() * torch.exp(exponent)).to(query.dtype)
        elif active and form == "value_reweight":  # both sums in one attention call: values [v, f v]
            value = torch.cat([value, focus_tokens.to(value.dtype)[:, None, :, None] * value], dim=-1)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        if active and form in ("value_reweight", "output_gate", "output_film"):
            attn_output = self.modulate_output(attn_output, focus_tokens)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights

    def modulate_output(self, attn_output: torch.Tensor, focus_tokens: torch.Tensor) -> torch.Tensor:
        """The output forms on `attn_output` (batch, tokens, heads, value dim), computed in fp32, in its dtype."""
        lam = self.tma_lambda.float()[None, None, :, None]
        if self.config.tma_form == "value_reweight":
            return (attn_output[..., : self.head_dim] + lam * attn_output[..., self.head_dim :]).to(attn_output.dtype)
        focus = focus_tokens.float()[:, :, None, None]
        output = attn_output * (1 + lam * focus)
        if self.config.tma_form == "output_film":
            output = output + focus * self.tma_offset.float()
        return output.to(attn_output.dtype)

    def forward_bias_in_head_dim(self, hidden_states: torch.Tensor, focus_tokens: torch.Tensor):
        """SDPA with the TMA bias carried by an extra query/key dimension (see the class docstring)."""
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        batch_size, heads, tokens, _ = query.shape
        extra = (batch_size, heads, tokens, 1)
        query = torch.cat(
            [query, (self.tma_lambda / self.scaling).to(query.dtype)[None, :, None, None].expand(extra)], -1
        )
        key = torch.cat([key, focus_tokens.to(key.dtype)[:, None, :, None].expand(extra)], -1)
        value = torch.cat([value, value.new_zeros(extra)], -1)
        attn_output = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.attention_dropout if self.training else 0.0, scale=self.scaling
        )[..., :-1]
        attn_output = attn_output.transpose(1, 2).reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), None


class TMTLayer(ViTLayer):
    """
    [`ViTLayer`] with [`TMTAttention`]. The focus tokens are a positional argument, so that gradient checkpointing
    (`model.gradient_checkpointing_enable()`, also with `use_reentrant=True`) recomputes every layer with the map and
    passes the map's gradient back.
    """

    def __init__(self, config: TMTConfig, layer_idx: int):
        super().__init__(config)
        self.attention = TMTAttention(config, layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        focus_tokens: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        r"""
        focus_tokens (`torch.FloatTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Focus value of every token (0 for CLS), passed to the attention.
        """
        return super().forward(hidden_states, attention_mask, focus_tokens=focus_tokens, **kwargs)


class TMTPreTrainedModel(ViTPreTrainedModel):
    config: TMTConfig
    config_class = TMTConfig
    base_model_prefix = "vit"
    # TMA's per-token map needs eager or SDPA attention (see TMTAttention); flash and flex are refused at load time.
    _supports_flash_attn = False
    _supports_flex_attn = False
    _no_split_modules = ["TMTEmbeddings", "TMTLayer"]
    _can_record_outputs = {"hidden_states": TMTLayer, "attentions": TMTAttention}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; registered classes also record both TMT auto classes in `auto_map`."""
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **_TMT_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TMTAttention) and module.tma_lambda is not None:
            init.constant_(module.tma_lambda, self.config.tma_init)
            if module.tma_offset is not None:
                init.zeros_(module.tma_offset)


def resample_position_grid(
    patch_positions: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Bicubic resampling of (1, h·w, dim) patch position embeddings from an h×w grid to `new_grid`, as in ViT."""
    dim = patch_positions.shape[-1]
    patch_positions = patch_positions.reshape(1, *grid, dim).permute(0, 3, 1, 2)
    patch_positions = F.interpolate(patch_positions, size=new_grid, mode="bicubic", align_corners=False)
    return patch_positions.permute(0, 2, 3, 1).reshape(1, -1, dim)


class TMTEmbeddings(ViTEmbeddings):
    """
    ViT's embeddings, with a stored position grid that may be non-square: `config.image_size` = [height, width] (e.g.
    a 15x20 grid for 240x320 crops, after `TMTModel.resize_position_embeddings`). Inputs of another size get the
    grid resampled bicubically, as in ViT.
    """

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        grid = (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)
        new_grid = (height // self.patch_size, width // self.patch_size)
        if new_grid == grid:
            return self.position_embeddings
        patch_positions = resample_position_grid(self.position_embeddings[:, 1:], grid, new_grid)
        return torch.cat([self.position_embeddings[:, :1], patch_positions], dim=1)


class TMTModel(TMTPreTrainedModel, ViTModel):
    """
    The ViT encoder with TMA in the layers listed in `config.tma_layers`. Position embeddings are interpolated, so any
    height and width that are multiples of the patch size work.

    Args:
        config ([`TMTConfig`]): The model configuration.
        add_pooling_layer (`bool`, *optional*, defaults to `True`): Build ViT's pooler on the CLS token.
        use_mask_token (`bool`, *optional*, defaults to `False`): Build a mask token, so that `bool_masked_pos` can
            replace patches (masked image modelling), as in [`ViTModel`].
        add_final_layernorm (`bool`, *optional*, defaults to `True`): Normalise `last_hidden_state`. The segmenter
            builds its encoder without it, because its decode head normalises every layer it reads.
    """

    def __init__(
        self,
        config: TMTConfig,
        add_pooling_layer: bool = True,
        use_mask_token: bool = False,
        add_final_layernorm: bool = True,
    ):
        super(ViTModel, self).__init__(config)
        self.config = config
        self.embeddings = TMTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([TMTLayer(config, index) for index in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_layernorm else None
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    @torch.no_grad()
    def resize_position_embeddings(self, image_size: tuple[int, int]) -> None:
        """
        Resamples the stored position embeddings (bicubic, the CLS position kept) to the patch grid of `image_size` =
        (height, width) and records it in `config.image_size`, as when fine-tuning a pretrained ViT at a new
        resolution (e.g. a 224x224 checkpoint for 240x320 crops): inputs of that size then use them as stored.
        """
        height, width = image_size
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(f"image_size must be multiples of the patch size {patch}, got {height}x{width}")
        embeddings = self.embeddings
        resized = embeddings.interpolate_pos_encoding(embeddings.position_embeddings, height, width)
        embeddings.position_embeddings = nn.Parameter(resized.detach().clone())
        embeddings.image_size = embeddings.patch_embeddings.image_size = (height, width)
        embeddings.patch_embeddings.num_patches = (height // patch) * (width // patch)
        self.config.image_size = [height, width]

    def pool_focus_map(self, transferability_map: torch.Tensor, batch_size: int, grid: tuple[int, int]) -> torch.Tensor:
        """Checks a focus map (B, h, w) in [0, 1] at any resolution and area-pools it to the patch grid."""
        if not isinstance(transferability_map, torch.Tensor):
            raise TypeError(f"transferability_map must be a torch.Tensor, got {type(transferability_map).__name__}")
        if transferability_map.ndim == 4 and transferability_map.shape[1] == 1:
            transferability_map = transferability_map[:, 0]
        if transferability_map.ndim != 3 or transferability_map.shape[0] != batch_size:
            raise ValueError(
                f"transferability_map must have shape (batch_size, height, width) with batch_size={batch_size}, "
                f"got {tuple(transferability_map.shape)}"
            )
        transferability_map = transferability_map.float()
        if checking_values():
            value_range = finite_range(transferability_map)
            if value_range is None:
                raise ValueError("transferability_map contains NaN or infinite values; expected a focus map in [0, 1]")
            low, high = value_range
            if low < 0 or high > 1:
                raise ValueError(f"transferability_map must lie in [0, 1], got values in [{low:.4g}, {high:.4g}]")
        with torch.autocast(transferability_map.device.type, enabled=False):  # fp32 also under autocast
            pooled = F.adaptive_avg_pool2d(transferability_map[:, None], grid)[:, 0]
        if self.config.tma_map_normalization == "minmax":
            low = pooled.amin(dim=(1, 2), keepdim=True)
            high = pooled.amax(dim=(1, 2), keepdim=True)
            pooled = (pooled - low) / (high - low).clamp_min(1e-6)
        return pooled

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        transferability_map: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> TMTModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Images; height and width must be multiples of the patch size.
        transferability_map (`torch.FloatTensor` of shape `(batch_size, h, w)`, *optional*):
            The focus map `m` in [0, 1] at any resolution; it is area-pooled to the patch grid. `None` means no bias.
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
            Positions replaced by the mask token (only for models built with one).
        interpolate_pos_encoding (`bool`, *optional*, defaults to `True`):
            Interpolate the position embeddings to the input size. `False` requires `config.image_size` inputs.
        """
        check_pixel_values(pixel_values, self.config.num_channels)
        batch_size, _, height, width = pixel_values.shape
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(
                f"height and width must be multiples of the patch size {patch}, got {height}x{width}; "
                "TMTForSemanticSegmentation pads such inputs itself"
            )
        if bool_masked_pos is not None and self.embeddings.mask_token is None:
            raise ValueError(
                "bool_masked_pos was given but this model has no mask token: build it with "
                "TMTModel(config, use_mask_token=True)"
            )
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states = self.embeddings(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            interpolate_pos_encoding=True if interpolate_pos_encoding is None else interpolate_pos_encoding,
        )

        focus_map = focus_tokens = None
        if transferability_map is not None:
            focus_map = self.pool_focus_map(transferability_map, batch_size, (height // patch, width // patch))
            if self.config.tma_layers:
                cls_focus = focus_map.new_zeros(batch_size, 1)
                focus_tokens = torch.cat([cls_focus, focus_map.flatten(1)], dim=1).to(hidden_states.dtype)

        for layer in self.layers:
            hidden_states = layer(hidden_states, None, focus_tokens, **kwargs)

        sequence_output = self.layernorm(hidden_states) if self.layernorm is not None else hidden_states
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return TMTModelOutput(last_hidden_state=sequence_output, pooler_output=pooled_output, focus_map=focus_map)


class TMTDecodeHead(nn.Module):
    """
    Multi-level fusion head (SETR-MLA / SegFormer-MLP style): the patch tokens of the layers in
    `config.decode_layers` are layer-normalised, projected to `decoder_hidden_size`, concatenated, fused by a 1x1
    conv-BN-ReLU and classified per patch.
    """

    def __init__(self, config: TMTConfig):
        super().__init__()
        width = config.decoder_hidden_size
        self.norms = nn.ModuleList(
            [nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) for _ in config.decode_layers]
        )
        self.projections = nn.ModuleList([nn.Linear(config.hidden_size, width) for _ in config.decode_layers])
        self.fuse = nn.Conv2d(width * len(config.decode_layers), width, kernel_size=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(width)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(config.decoder_dropout)
        self.classifier = nn.Conv2d(width, config.num_labels, kernel_size=1)

    def forward(self, layer_states: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        batch_size = layer_states[0].shape[0]
        projected = [
            projection(norm(states[:, 1:])).transpose(1, 2).reshape(batch_size, -1, *grid)
            for states, norm, projection in zip(layer_states, self.norms, self.projections)
        ]
        fused = self.activation(self.batch_norm(self.fuse(torch.cat(projected, dim=1))))
        return self.classifier(self.dropout(fused))


class TMTForSemanticSegmentation(TMTPreTrainedModel):
    """
    TMT for semantic segmentation: [`TMTModel`], a multi-level decode head and, optionally, a frozen [`ACTEModel`]
    that computes the focus map from the image when none is passed. Any height and width work: inputs are padded to
    the patch size (and ACTE's cell size) and the logits are cropped back.

    Attach a trained ACTE with `TMTForSemanticSegmentation.from_pretrained(path, acte=ACTEModel.from_pretrained(dir))`
    or `model.attach_acte(acte)`; its weights are then saved inside the TMT checkpoint.

    At scale: `model.gradient_checkpointing_enable()` (transformers 5 also names it `activation_checkpointing_enable`)
    recomputes every encoder layer, with its map, in the backward pass; under `torch.autocast` (bf16 or fp16) the TMA
    gate, ACTE's clustering, the logits and the loss stay fp32. `tmt_hf.inference.segment_logits` evaluates whole
    frames or sliding windows at full resolution.
    """

    def __init__(self, config: TMTConfig):
        super().__init__(config)
        self.vit = TMTModel(config, add_pooling_layer=False, add_final_layernorm=False)
        self.decode_head = TMTDecodeHead(config)
        self.acte = None
        if config.acte_config is not None:
            self._set_acte(ACTEModel(config.acte_config))
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, acte: ACTEModel | None = None, **kwargs):
        """`PreTrainedModel.from_pretrained`, plus `acte`: a trained [`ACTEModel`] to attach (frozen)."""
        model = super().from_pretrained(*args, **kwargs)
        if acte is not None:
            model.attach_acte(acte)
        return model

    def _set_acte(self, acte: ACTEModel) -> None:
        acte.requires_grad_(False)
        self.acte = acte.eval()

    def attach_acte(self, acte: ACTEModel) -> "TMTForSemanticSegmentation":
        """Attaches a trained ACTE (frozen, in eval mode) and records its configuration in `config.acte_config`."""
        if not isinstance(acte, ACTEModel) and type(acte).__name__ != "ACTEModel":
            raise TypeError(f"acte must be an ACTEModel, got {type(acte).__name__}")
        if acte.config.num_channels != self.config.num_channels:
            raise ValueError(
                f"ACTE takes {acte.config.num_channels}-channel images but this model takes {self.config.num_channels}"
            )
        self.config.acte_config = acte.config
        param = next(self.parameters())
        self._set_acte(acte.to(device=param.device))
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.acte is not None:
            self.acte.eval()
        return self

    @property
    def size_multiple(self) -> int:
        """Inputs are padded to multiples of this: the patch size, and ACTE's cell size in pixels if present."""
        multiple = self.config.patch_size
        if self.acte is not None:
            multiple = math.lcm(multiple, self.acte.config.size_multiple)
        return multiple

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        transferability_map: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> TMTSemanticSegmenterOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Ground-truth class indices at the input resolution; `config.semantic_loss_ignore_index` is ignored.
        transferability_map (`torch.FloatTensor` of shape `(batch_size, h, w)`, *optional*):
            Focus map in [0, 1] at any resolution. When `None` and the model carries an ACTE, ACTE computes it;
            when `None` without an ACTE, the attention is unmodulated (vanilla ViT).
        output_attentions (`bool`, *optional*):
            Return every layer's attention weights (eager attention). Defaults to `config.output_attentions`.
        output_hidden_states (`bool` or `list[int]`, *optional*):
            `True` returns every hidden state (embeddings first); a list of indices returns those only (the others
            are `None`). Defaults to `config.output_hidden_states`.
        """
        check_pixel_values(pixel_values, self.config.num_channels)
        batch_size, _, height, width = pixel_values.shape
        if labels is not None:
            labels = check_labels(
                labels,
                (batch_size, height, width),
                self.config.num_labels,
                self.config.semantic_loss_ignore_index,
                pixel_values.device,
            )

        multiple = self.size_multiple
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))
            if transferability_map is not None and isinstance(transferability_map, torch.Tensor):
                if transferability_map.ndim == 4:
                    transferability_map = transferability_map[:, 0]
                if transferability_map.ndim == 3:
                    with torch.autocast(pixel_values.device.type, enabled=False):
                        resized = F.interpolate(transferability_map[:, None].float(), (height, width), mode="bilinear")
                    transferability_map = F.pad(resized, (0, pad_w, 0, pad_h))[:, 0]

        if transferability_map is None and self.acte is not None and self.config.tma_layers:
            with torch.no_grad():
                transferability_map = self.acte(pixel_values.to(self.acte.dtype)).focus_map

        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        # The decode head needs its layers' states; the caller gets all, a selection (indices), or none of them.
        num_states = self.config.num_hidden_layers + 1
        if isinstance(output_hidden_states, bool):
            returned = set(range(num_states)) if output_hidden_states else set()
        else:
            selection = [output_hidden_states] if isinstance(output_hidden_states, int) else output_hidden_states
            returned = {index % num_states for index in selection if -num_states <= index < num_states}
        outputs = self.vit(
            pixel_values,
            transferability_map=transferability_map,
            output_attentions=output_attentions,
            output_hidden_states=sorted(returned | set(self.config.decode_layers)),
            return_dict=True,
            **kwargs,
        )
        patch = self.config.patch_size
        grid = (pixel_values.shape[2] // patch, pixel_values.shape[3] // patch)
        # hidden_states[0] is the embedding output, hidden_states[i] the output of layer i.
        layer_states = [outputs.hidden_states[index] for index in self.config.decode_layers]
        logits = self.decode_head(layer_states, grid)
        # The upsampled logits and the loss are fp32, also under autocast.
        with torch.autocast(pixel_values.device.type, enabled=False):
            logits = F.interpolate(logits.float(), size=pixel_values.shape[2:], mode="bilinear", align_corners=False)
            logits = logits[:, :, :height, :width]

            loss = None
            if labels is not None:
                ignore_index = self.config.semantic_loss_ignore_index
                valid = (labels != ignore_index).sum()
                # Summed and divided by the labelled pixel count: an all-ignored batch gives a zero loss (not NaN)
                # that still reaches every trainable parameter, with no data-dependent branch for compile/export.
                loss = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / valid.clamp_min(1)

        hidden_states = None
        if returned:
            hidden_states = tuple(
                state if index in returned else None for index, state in enumerate(outputs.hidden_states)
            )
        return TMTSemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=hidden_states,
            attentions=outputs.attentions,
            focus_map=outputs.focus_map,
        )


__all__ = [
    "TMTModel",
    "TMTForSemanticSegmentation",
    "TMTPreTrainedModel",
    "TMTAttention",
    "TMTSemanticSegmenterOutput",
]
