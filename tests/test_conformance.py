"""Behaviours that transformers' common model tests expect of a ViT-derived model, checked with our own code."""

import logging

import pytest
import torch
from conftest import run_without_tmt_hf, tiny_acte_config, tiny_tmt_config, vit_twin
from PIL import Image
from transformers import pipeline

from tmt_hf import ACTEModel, TMTForSemanticSegmentation, TMTImageProcessor, TMTModel


def segmenter(attn_implementation="sdpa", **kwargs):
    config = tiny_tmt_config(tma_init=1.0, **kwargs)
    config._attn_implementation = attn_implementation
    return TMTForSemanticSegmentation(config).eval()


def test_mask_token_replaces_masked_patches_like_vit():
    config = tiny_tmt_config()
    model = TMTModel(config, use_mask_token=True).eval()
    vit = vit_twin(model, use_mask_token=True)
    pixels = torch.randn(2, 3, 64, 64)
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[:, ::3] = True
    out = model(pixels, bool_masked_pos=masked).last_hidden_state
    assert torch.allclose(out, vit(pixels, bool_masked_pos=masked).last_hidden_state, atol=1e-5)
    assert not torch.allclose(out, model(pixels).last_hidden_state, atol=1e-3)
    with pytest.raises(ValueError, match="use_mask_token=True"):
        TMTModel(config).eval()(pixels, bool_masked_pos=masked)


def test_config_output_attentions_is_honoured():
    model = segmenter("eager")
    model.config.output_attentions = True
    out = model(torch.randn(1, 3, 32, 48), transferability_map=torch.rand(1, 2, 3))
    assert out.attentions is not None and len(out.attentions) == model.config.num_hidden_layers
    assert out.attentions[0].shape == (1, 2, 7, 7)  # heads, CLS + 2x3 patches
    assert model(torch.randn(1, 3, 32, 48), output_attentions=False).attentions is None


def test_selected_hidden_states():
    model = segmenter()
    pixels, focus = torch.randn(1, 3, 32, 48), torch.rand(1, 2, 3)
    reference = model(pixels, transferability_map=focus)
    assert reference.hidden_states is None
    everything = model(pixels, transferability_map=focus, output_hidden_states=True).hidden_states
    assert len(everything) == 3 and all(state is not None for state in everything)
    selected = model(pixels, transferability_map=focus, output_hidden_states=[0, -1])
    assert [state is not None for state in selected.hidden_states] == [True, False, True]
    assert torch.equal(selected.hidden_states[-1], everything[-1])
    assert torch.equal(selected.logits, reference.logits)  # the decode head still gets its layers
    model.config.output_hidden_states = True
    assert len(model(pixels).hidden_states) == 3


def test_every_segmenter_parameter_gets_a_gradient_also_with_checkpointing():
    model = segmenter()
    assert model.vit.layernorm is None and not any(k.startswith("vit.layernorm") for k in model.state_dict())
    model.train()
    pixels, labels, focus = torch.randn(2, 3, 32, 48), torch.randint(0, 5, (2, 32, 48)), torch.rand(2, 8, 12)
    torch.manual_seed(0)
    model(pixels, labels=labels, transferability_map=focus).loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    missing = [name for name, grad in grads.items() if grad is None or not grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"
    model.zero_grad()
    model.activation_checkpointing_enable()
    torch.manual_seed(0)
    model(pixels, labels=labels, transferability_map=focus).loss.backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-5), name


def test_torch_export_and_compile_with_a_map():
    model = segmenter()
    pixels, focus = torch.randn(2, 3, 32, 48), torch.rand(2, 8, 12)
    with torch.no_grad():
        reference = model(pixel_values=pixels, transferability_map=focus).logits
        exported = torch.export.export(model, (), {"pixel_values": pixels, "transferability_map": focus})
        assert torch.allclose(
            exported.module()(pixel_values=pixels, transferability_map=focus)["logits"], reference, atol=1e-5
        )
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        assert torch.allclose(compiled(pixels, transferability_map=focus).logits, reference, atol=1e-5)
    # Eager calls still check their values.
    with pytest.raises(ValueError, match="must lie in"):
        model(pixels, transferability_map=focus + 1)


def test_acte_returns_encoder_hidden_states():
    config = tiny_acte_config()
    model = ACTEModel(config).eval()
    pixels = torch.randn(2, 3, 32, 48)
    assert model(pixels).hidden_states is None
    states = model(pixels, output_hidden_states=True).hidden_states
    assert [tuple(s.shape) for s in states] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, config.feature_dim, 8, 12)]
    config.output_hidden_states = True
    assert len(model(pixels).hidden_states) == 3


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flex_attention"])
def test_unsupported_attention_is_refused_clearly(implementation):
    model = segmenter()
    with pytest.raises(ValueError, match="does not support"):
        model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == "sdpa"


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_pipeline_accepts_the_segmenter_without_a_not_supported_error(tmp_path):
    model = TMTForSemanticSegmentation(tiny_tmt_config(num_labels=19))
    model.save_pretrained(tmp_path / "tmt")
    TMTImageProcessor(size={"height": 32, "width": 48}).save_pretrained(tmp_path / "tmt")
    records = Records()
    logging.getLogger("transformers").addHandler(records)
    try:
        segment = pipeline("image-segmentation", model=str(tmp_path / "tmt"), trust_remote_code=True)
    finally:
        logging.getLogger("transformers").removeHandler(records)
    assert segment(Image.new("RGB", (40, 30)))
    assert not [m for m in records.messages if "not supported" in m], records.messages
    # The same from the Hub's side: a fresh interpreter that only has the repo's code files.
    out = run_without_tmt_hf(
        f"""
        import logging
        from PIL import Image
        from transformers import pipeline
        messages = []
        handler = logging.Handler()
        handler.emit = lambda record: messages.append(record.getMessage())
        logging.getLogger("transformers").addHandler(handler)
        segment = pipeline("image-segmentation", model={str(tmp_path / "tmt")!r}, trust_remote_code=True)
        assert segment(Image.new("RGB", (40, 30)))
        print("NOT-SUPPORTED" if any("not supported" in m for m in messages) else "CLEAN")
        """,
        tmp_path,
    )
    assert "CLEAN" in out


def test_acte_has_a_pipeline_task_that_fits(tmp_path):
    acte = ACTEModel(tiny_acte_config()).eval()
    acte.save_pretrained(tmp_path / "acte")
    TMTImageProcessor(size={"height": 32, "width": 48}).save_pretrained(tmp_path / "acte")
    estimate = pipeline("transferability-estimation", model=str(tmp_path / "acte"), trust_remote_code=True)
    image = Image.new("RGB", (50, 30), (90, 120, 60))
    maps = estimate(image)
    assert maps["transferability"].size == (50, 30) and maps["focus_map"].mode == "L"
    pixels = TMTImageProcessor(size={"height": 32, "width": 48})(image, return_tensors="pt")["pixel_values"]
    expected = acte(pixels).transferability.mean().item()  # 32x48 is already a multiple of ACTE's cell: no padding
    assert maps["mean_transferability"] == pytest.approx(expected, abs=0.02)
    with pytest.raises(ValueError, match="takes no parameters"):
        estimate(image, threshold=0.5)
