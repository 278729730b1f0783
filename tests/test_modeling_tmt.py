import json
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import run_without_tmt_hf, tiny_tmt_config, vit_twin
from PIL import Image
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation, ViTConfig, ViTModel

from tmt_hf import TMT_PRESETS, TMTConfig, TMTForSemanticSegmentation, TMTImageProcessor, TMTModel
from tmt_hf.modeling_tmt import TMTAttention


def build(model_class, config, attn_implementation="sdpa"):
    config._attn_implementation = attn_implementation
    return model_class(config).eval()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_lambda_zero_equals_vit(attn_implementation):
    model = build(TMTModel, tiny_tmt_config(), attn_implementation)
    vit = vit_twin(model, attn_implementation)
    pixels = torch.randn(2, 3, 64, 96)
    reference = vit(pixels, interpolate_pos_encoding=True).last_hidden_state
    no_map = model(pixels).last_hidden_state
    with_map = model(pixels, transferability_map=torch.rand(2, 37, 41)).last_hidden_state
    assert (no_map - reference).abs().max() < 1e-5
    assert (with_map - reference).abs().max() < 1e-5


def test_nonzero_lambda_changes_output_and_backends_agree():
    pixels, focus = torch.randn(2, 3, 64, 96), torch.rand(2, 16, 24)
    outputs = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = build(TMTModel, tiny_tmt_config(tma_init=1.5), implementation)
        outputs[implementation] = (
            model(pixels).last_hidden_state,
            model(pixels, transferability_map=focus).last_hidden_state,
        )
    assert (outputs["sdpa"][1] - outputs["sdpa"][0]).abs().max() > 1e-3
    assert (outputs["sdpa"][1] - outputs["eager"][1]).abs().max() < 1e-5


def test_training_route_gradients_match_eager():
    """Training on CPU, SDPA carries the bias in an extra head dimension; values and gradients equal eager's mask."""
    pixels, focus = torch.randn(2, 3, 64, 96), torch.rand(2, 16, 24)
    config = tiny_tmt_config(
        tma_form="key_bias", tma_init=0.7, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    outputs, grads = {}, {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = build(TMTModel, TMTConfig(**config.to_dict()), implementation).train()
        route = mock.patch.object(
            TMTAttention, "forward_bias_in_head_dim", autospec=True, side_effect=TMTAttention.forward_bias_in_head_dim
        )
        with route as calls:
            outputs[implementation] = model(pixels, transferability_map=focus).last_hidden_state
        outputs[implementation].square().mean().backward()
        assert calls.call_count == (config.num_hidden_layers if implementation == "sdpa" else 0)
        grads[implementation] = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert (outputs["sdpa"] - outputs["eager"]).abs().max() < 1e-5
    assert set(grads["sdpa"]) == set(grads["eager"]) and any("tma_lambda" in name for name in grads["sdpa"])
    for name, grad in grads["sdpa"].items():
        torch.testing.assert_close(grad, grads["eager"][name], atol=1e-5, rtol=1e-4, msg=name)


def test_bias_matches_explicit_attention():
    """One TMA layer computed by hand: softmax(QK^T/sqrt(d) + λ_h m_j) V."""
    config = tiny_tmt_config(num_hidden_layers=1, tma_init=0.0, tma_form="key_bias")
    model = build(TMTModel, config)
    attention = model.layers[0].attention
    attention.tma_lambda.data = torch.tensor([2.0, -1.0])
    hidden = torch.randn(1, 5, 32)
    focus = torch.tensor([[0.0, 1.0, 0.5, 0.0, 0.25]])
    out, _ = attention(hidden, focus_tokens=focus)
    q = attention.q_proj(hidden).view(1, 5, 2, 16).transpose(1, 2)
    k = attention.k_proj(hidden).view(1, 5, 2, 16).transpose(1, 2)
    v = attention.v_proj(hidden).view(1, 5, 2, 16).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / 4.0 + attention.tma_lambda.view(1, 2, 1, 1) * focus.view(1, 1, 1, 5)
    expected = attention.o_proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, 32))
    assert (out - expected).abs().max() < 1e-5


def test_tma_layers_selects_layers():
    model = TMTModel(tiny_tmt_config(num_hidden_layers=3, tma_layers=[1]))
    assert [layer.attention.tma_lambda is not None for layer in model.layers] == [False, True, False]
    off = TMTModel(tiny_tmt_config(tma_layers=[], tma_init=1.0)).eval()
    pixels = torch.randn(1, 3, 32, 32)
    assert torch.equal(
        off(pixels).last_hidden_state, off(pixels, transferability_map=torch.rand(1, 2, 2)).last_hidden_state
    )


def test_gradients_reach_lambda_and_map():
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=0.5))
    focus = torch.rand(2, 4, 6, requires_grad=True)
    out = model(torch.randn(2, 3, 64, 96), labels=torch.randint(0, 5, (2, 64, 96)), transferability_map=focus)
    out.loss.backward()
    for layer in model.vit.layers:
        assert layer.attention.tma_lambda.grad is not None and layer.attention.tma_lambda.grad.abs().sum() > 0
    assert focus.grad is not None and focus.grad.abs().sum() > 0


def test_segmentation_output_shapes_any_size():
    model = TMTForSemanticSegmentation(tiny_tmt_config()).eval()
    out = model(
        torch.randn(2, 3, 70, 101),
        labels=torch.randint(0, 5, (2, 70, 101)),
        transferability_map=torch.rand(2, 9, 9),
        output_hidden_states=True,
    )
    assert out.logits.shape == (2, 5, 70, 101)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.focus_map.shape == (2, 5, 7)  # padded to 80x112, patch grid 5x7
    assert len(out.hidden_states) == 3
    assert model(torch.randn(1, 3, 64, 64)).focus_map is None


def test_loss_ignores_index():
    model = TMTForSemanticSegmentation(tiny_tmt_config()).eval()
    pixels = torch.randn(1, 3, 32, 32)
    labels = torch.full((1, 32, 32), 255)
    labels[0, :16] = 1
    loss = model(pixels, labels=labels).loss
    logits = model(pixels).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :, :16], labels[:, :16])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_attentions_with_eager():
    model = build(TMTForSemanticSegmentation, tiny_tmt_config(), "eager")
    out = model(torch.randn(1, 3, 32, 48), output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (1, 2, 7, 7)


def test_save_and_reload_reproduces_logits(tmp_path):
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=0.3)).eval()
    pixels, focus = torch.randn(1, 3, 64, 64), torch.rand(1, 8, 8)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)
    assert {"configuration_tmt.py", "modeling_tmt.py", "modeling_acte.py", "configuration_acte.py"} <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSemanticSegmentation"}
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, TMTForSemanticSegmentation)
    assert torch.equal(
        model(pixels, transferability_map=focus).logits, reloaded(pixels, transferability_map=focus).logits
    )
    assert isinstance(AutoModel.from_pretrained(tmp_path), TMTModel)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "tmt"


def test_fresh_interpreter_loads_with_trust_remote_code(tmp_path):
    model_dir = tmp_path / "model"
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=0.3)).eval()
    model.save_pretrained(model_dir)
    TMTImageProcessor(size={"height": 64, "width": 96}).save_pretrained(model_dir)
    pixels = torch.randn(1, 3, 64, 96)
    torch.save({"pixels": pixels, "logits": model(pixels).logits}, tmp_path / "reference.pt")
    Image.fromarray(np.random.randint(0, 255, (50, 120, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    out = run_without_tmt_hf(
        f"""
        import torch
        from PIL import Image
        from transformers import AutoModel, AutoModelForSemanticSegmentation, pipeline
        try:
            import tmt_hf
            raise SystemExit("tmt_hf must not be importable here")
        except ImportError:
            pass
        base = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
        assert type(base).__name__ == "TMTModel", type(base)
        seg = AutoModelForSemanticSegmentation.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert type(seg).__name__ == "TMTForSemanticSegmentation"
        assert type(seg).__module__.startswith("transformers_modules"), type(seg).__module__
        reference = torch.load({str(tmp_path / "reference.pt")!r})
        assert torch.equal(seg(reference["pixels"]).logits, reference["logits"])
        segmenter = pipeline("image-segmentation", model={str(model_dir)!r}, trust_remote_code=True)
        results = segmenter(Image.open({str(tmp_path / "street.png")!r}))
        assert results and all(r["mask"].size == (120, 50) for r in results), [r["mask"].size for r in results]
        print("OK", len(results))
        """,
        tmp_path,
    )
    assert out.startswith("OK")


def test_stock_vit_checkpoint_maps_every_backbone_weight(tmp_path):
    vit = ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64)
    ).eval()
    vit.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:  # the google/vit-*-in21k key layout
        assert any(key.startswith("encoder.layer.0.attention.attention.query") for key in f.keys())
    pixels, focus = torch.randn(1, 3, 64, 64), torch.rand(1, 4, 4)
    expected = vit(pixels).last_hidden_state

    base, info = TMTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == {f"layers.{i}.attention.tma_lambda" for i in range(2)}
    assert not info["unexpected_keys"]
    assert (base.eval()(pixels, transferability_map=focus).last_hidden_state - expected).abs().max() < 1e-5

    seg, info = TMTForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    backbone_missing = [k for k in info["missing_keys"] if k.startswith("vit.") and "tma_lambda" not in k]
    assert backbone_missing == []
    # The segmenter's decode head normalises the layers it reads, so its encoder has no final layernorm.
    assert {k for k in info["unexpected_keys"] if k.startswith("vit.")} <= {
        "vit.layernorm.weight",
        "vit.layernorm.bias",
    }
    unnormalised = vit(pixels, output_hidden_states=True).hidden_states[-1]
    assert (seg.eval().vit(pixels).last_hidden_state - unnormalised).abs().max() < 1e-5


def test_position_embeddings_resampled_to_a_non_square_crop(tmp_path):
    # A 64x64 checkpoint (4x4 grid) fine-tuned at 48x80 crops (3x5): resampled once, it computes what ViT computes by
    # interpolating on every forward pass; the model keeps the 3x5 grid through save and reload.
    vit = ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64)
    ).eval()
    vit.save_pretrained(tmp_path / "vit")
    model = TMTForSemanticSegmentation.from_pretrained(tmp_path / "vit").eval()
    pixels, wide = torch.randn(2, 3, 48, 80), torch.randn(1, 3, 64, 128)
    expected = vit(pixels, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states[-1]
    model.vit.resize_position_embeddings((48, 80))
    assert model.config.image_size == [48, 80] and model.vit.embeddings.position_embeddings.shape == (1, 16, 32)
    assert (model.vit(pixels).last_hidden_state - expected).abs().max() < 1e-5
    embeddings = model.vit.embeddings  # at the crop size the stored grid is used as it is
    assert embeddings.interpolate_pos_encoding(None, 48, 80) is embeddings.position_embeddings
    model.save_pretrained(tmp_path / "tmt")
    reloaded = TMTForSemanticSegmentation.from_pretrained(tmp_path / "tmt").eval()
    assert reloaded.config.image_size == [48, 80]
    assert (reloaded.vit(pixels).last_hidden_state - expected).abs().max() < 1e-5
    # Other sizes resample the non-square grid; the logits keep the input size.
    assert reloaded(wide).logits.shape[-2:] == (64, 128)
    with pytest.raises(ValueError, match="multiples of the patch size 16, got 50x80"):
        reloaded.vit.resize_position_embeddings((50, 80))


def test_bad_inputs_give_clear_errors():
    model = TMTForSemanticSegmentation(tiny_tmt_config()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="batch_size=2"):
        model(pixels, transferability_map=torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(pixels, transferability_map=torch.full((2, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(pixels, transferability_map=torch.full((2, 4, 4), float("inf")))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        model(pixels, transferability_map=torch.full((2, 4, 4), 1.5))
    with pytest.raises(ValueError, match=r"\(batch_size, 3, height, width\)"):
        model(torch.randn(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"labels must have shape"):
        model(pixels, labels=torch.zeros(2, 16, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(pixels.numpy())
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model.vit(torch.randn(1, 3, 30, 32))


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flex_attention"])
def test_unsupported_attention_backends_refuse_the_bias(implementation):
    model = TMTModel(tiny_tmt_config(tma_init=1.0)).eval()
    model.config._attn_implementation = implementation
    with pytest.raises(ValueError, match="attn_implementation='sdpa' or 'eager'"):
        model(torch.randn(1, 3, 32, 32), transferability_map=torch.rand(1, 2, 2))


def test_presets():
    for name, fields in TMT_PRESETS.items():
        config = TMTConfig.from_preset(name)
        assert config.hidden_size == fields["hidden_size"]
        assert config.num_labels == 19 and config.id2label[0] == "road" and config.id2label[18] == "bicycle"
        assert config.semantic_loss_ignore_index == 255
        assert config.tma_layers == list(range(config.num_hidden_layers)) and config.tma_init == 0.0
    assert TMTConfig.from_preset("base").decode_layers == [3, 6, 9, 12]
    with pytest.raises(ValueError, match="Unknown preset"):
        TMTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="tma_layers"):
        TMTConfig(num_hidden_layers=2, tma_layers=[5])


def test_image_processor_post_processing():
    processor = TMTImageProcessor(size={"height": 32, "width": 64})
    assert list(processor.image_mean) == [0.5, 0.5, 0.5] and list(processor.image_std) == [0.5, 0.5, 0.5]
    image = Image.fromarray(np.random.randint(0, 255, (40, 90, 3), dtype=np.uint8))
    inputs = processor(image, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 64)
    model = TMTForSemanticSegmentation(tiny_tmt_config()).eval()
    maps = processor.post_process_semantic_segmentation(model(**inputs), target_sizes=[(40, 90)])
    assert maps[0].shape == (40, 90)


def test_minmax_map_normalization_stretches_each_image():
    model = TMTModel(tiny_tmt_config(tma_map_normalization="minmax")).eval()
    focus = 0.4 + 0.1 * torch.rand(2, 8, 8)
    pooled = model(torch.randn(2, 3, 64, 64), transferability_map=focus).focus_map
    assert torch.allclose(pooled.amin(dim=(1, 2)), torch.zeros(2)) and torch.allclose(
        pooled.amax(dim=(1, 2)), torch.ones(2)
    )
    with pytest.raises(ValueError, match="tma_map_normalization"):
        tiny_tmt_config(tma_map_normalization="zscore")


@pytest.mark.parametrize("form", ["key_bias", "query_temperature", "output_gate", "value_reweight", "output_film"])
def test_tma_forms_start_as_vit_agree_across_backends_and_learn(form):
    pixels, focus = torch.randn(2, 3, 64, 96), torch.rand(2, 16, 24)
    model = build(TMTModel, tiny_tmt_config(tma_form=form))
    reference = vit_twin(model, "sdpa")(pixels, interpolate_pos_encoding=True).last_hidden_state
    assert (model(pixels, transferability_map=focus).last_hidden_state - reference).abs().max() < 1e-5
    outputs = {}
    for implementation in ("sdpa", "eager"):
        torch.manual_seed(0)
        model = build(TMTModel, tiny_tmt_config(tma_form=form, tma_init=0.8), implementation)
        outputs[implementation] = model(pixels, transferability_map=focus).last_hidden_state
    assert (outputs["sdpa"] - outputs["eager"]).abs().max() < 1e-5
    assert (outputs["sdpa"] - model(pixels).last_hidden_state).abs().max() > 1e-4  # the map changes the output
    model.train()
    model(pixels, transferability_map=focus).last_hidden_state.pow(2).mean().backward()
    assert all(layer.attention.tma_lambda.grad.abs().sum() > 0 for layer in model.layers)


def test_checkpoints_saved_before_tma_form_keep_the_key_bias(tmp_path):
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=1.0))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tma_form"] == "output_gate"
    del config["tma_form"]  # as written by v0.1
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert TMTForSemanticSegmentation.from_pretrained(tmp_path).config.tma_form == "key_bias"
    assert AutoConfig.from_pretrained(tmp_path).tma_form == "key_bias"
    vit_like = {k: v for k, v in config.items() if not k.startswith(("tma_", "decode"))}
    assert TMTConfig.from_dict(vit_like).tma_form == "output_gate"  # a stock ViT config gets the default
