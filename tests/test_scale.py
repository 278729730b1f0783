"""Training and evaluating at scale: gradient checkpointing, mixed precision, full-resolution evaluation."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_acte_config, tiny_tmt_config
from PIL import Image

from tmt_hf import CITYSCAPES_CLASSES, ACTEModel, TMTForSemanticSegmentation, TMTImageProcessor
from tmt_hf.cli import main as cli_main
from tmt_hf.inference import segment_logits, sliding_windows
from tmt_hf.modeling_tmt import TMTAttention

REPO = Path(__file__).resolve().parents[1]
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, decoder_dropout=0.0)


def record_tma_calls(monkeypatch) -> list:
    """Patches TMTAttention to record (layer, whether it got focus tokens) for every call."""
    calls, forward = [], TMTAttention.forward

    def recording_forward(self, hidden_states, attention_mask=None, focus_tokens=None, **kwargs):
        calls.append((self.layer_idx, focus_tokens is not None))
        return forward(self, hidden_states, attention_mask, focus_tokens, **kwargs)

    monkeypatch.setattr(TMTAttention, "forward", recording_forward)
    return calls


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("form", ["output_gate", "key_bias"])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(monkeypatch, use_reentrant, form):
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=0.8, tma_form=form, **NO_DROPOUT)).train()
    pixels, labels, focus = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 64, 96)), torch.rand(2, 16, 24)
    calls = record_tma_calls(monkeypatch)

    def step():
        model.zero_grad()
        calls.clear()
        focus_map = focus.clone().requires_grad_()
        out = model(pixels, labels=labels, transferability_map=focus_map)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        return out.logits.detach(), grads, focus_map.grad, list(calls)

    logits, grads, map_grad, plain_calls = step()
    model.activation_checkpointing_enable({"use_reentrant": use_reentrant})
    assert all(layer.gradient_checkpointing for layer in model.vit.layers)
    checkpointed_logits, checkpointed_grads, checkpointed_map_grad, checkpointed_calls = step()

    layers = list(range(model.config.num_hidden_layers))
    assert plain_calls == [(index, True) for index in layers]
    # Checkpointed: every layer runs again in the backward pass, with the map.
    assert sorted(checkpointed_calls) == sorted(2 * plain_calls)
    torch.testing.assert_close(checkpointed_logits, logits)
    torch.testing.assert_close(checkpointed_map_grad, map_grad)
    for name in ("vit.layers.0.attention.tma_lambda", "vit.embeddings.patch_embeddings.projection.weight"):
        assert grads[name].abs().sum() > 0, name
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


def test_gradient_checkpointing_enable_is_the_hf_entry_point():
    model = TMTForSemanticSegmentation(tiny_tmt_config())
    assert model.supports_gradient_checkpointing
    with pytest.warns(FutureWarning):  # transformers 5 names it activation_checkpointing_enable, keeping this alias
        model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing and all(layer.gradient_checkpointing for layer in model.vit.layers)
    model.gradient_checkpointing_disable()
    assert not any(layer.gradient_checkpointing for layer in model.vit.layers)


def bf16_and_fp32(model, inputs: dict):
    """(outputs, parameter gradients) of one forward+backward in fp32 and one under CPU bf16 autocast."""
    results = []
    for autocast in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(**inputs)
        out.loss.backward()
        results.append((out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    return results


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.detach().float() - reference.detach()).norm() / reference.detach().norm())


@pytest.mark.parametrize("form", ["output_gate", "key_bias", "query_temperature", "value_reweight", "output_film"])
def test_tmt_under_bf16_autocast_is_close_to_fp32(form):
    """bf16 carries 8 significant bits (0.4%): a two-layer model stays within 2% of fp32, the loss within 0.5%."""
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=0.5, tma_form=form, **NO_DROPOUT)).train()
    pixels, labels, focus = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 64, 96)), torch.rand(2, 16, 24)
    inputs = dict(pixel_values=pixels, labels=labels, transferability_map=focus)
    (reference, reference_grads), (out, grads) = bf16_and_fp32(model, inputs)
    assert out.logits.dtype == out.loss.dtype == out.focus_map.dtype == torch.float32
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(reference.loss.item(), rel=5e-3)
    assert relative_error(out.logits, reference.logits) < 2e-2
    torch.testing.assert_close(out.focus_map, reference.focus_map)  # pooled in fp32
    assert set(grads) == set(reference_grads)
    for name in ("vit.layers.0.attention.tma_lambda", "vit.embeddings.patch_embeddings.projection.weight"):
        assert torch.isfinite(grads[name]).all() and relative_error(grads[name], reference_grads[name]) < 5e-2, name


def test_acte_under_bf16_autocast_keeps_its_clustering_in_fp32():
    model = ACTEModel(tiny_acte_config(kappa=20.0))
    pixels = torch.randn(2, 3, 32, 48)
    inputs = dict(pixel_values=pixels, domain_labels=torch.tensor([0, 1]), labels=torch.randint(0, 5, (2, 32, 48)))
    (reference, _), (out, grads) = bf16_and_fp32(model.train(), inputs)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(reference.loss.item(), rel=2e-2)
    assert all(torch.isfinite(grad).all() for grad in grads.values())
    for name in ("loss", "region_assignments", "focus_map", "transferability", "domain_logits", "region_features"):
        assert getattr(out, name).dtype == torch.float32, name
    # Assignments are a distribution over the 3x3 centres, to fp32 precision (bf16 would be off by ~1e-3).
    assert (out.region_assignments.sum(dim=1) - 1).abs().max() < 1e-5
    # Batch statistics aside: bf16 features (0.5% off) move κ·cos by about 0.1 at κ = 20, the assignments by a few
    # hundredths at most, the maps by less.
    model.eval()
    with torch.no_grad():
        reference = model(pixels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(pixels)
    for name, tolerance in (("region_assignments", 0.1), ("focus_map", 0.05), ("transferability", 0.05)):
        assert (getattr(out, name) - getattr(reference, name)).abs().max() < tolerance, name
    features = model.encoder(pixels)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same features cluster as in fp32
        assignments, _ = model.clustering(features.bfloat16())
    torch.testing.assert_close(assignments, model.clustering(features.bfloat16().float())[0])


def tmt_with_acte() -> TMTForSemanticSegmentation:
    """A TMT with an ACTE; initialised wider than usual, so that its logits are of order 1, as a trained model's."""
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=1.0, initializer_range=0.2))
    return model.attach_acte(ACTEModel(tiny_acte_config()).eval()).eval()


@pytest.mark.parametrize("size", [(64, 96), (70, 101)])
def test_one_window_covering_the_image_equals_whole_image_evaluation(size):
    model = tmt_with_acte()
    pixels = torch.randn(2, 3, *size)
    whole = segment_logits(model, pixels)
    assert whole.shape == (2, 5, *size) and torch.equal(whole, model(pixels).logits)
    for crop_size in (size, (size[0] + 30, size[1] + 7)):  # windows are clipped to a smaller image
        torch.testing.assert_close(
            segment_logits(model, pixels, "slide", crop_size=crop_size), whole, atol=1e-5, rtol=0
        )
    given = torch.rand(2, 9, 13)  # a given map at another resolution is resized to the image in both modes
    whole = segment_logits(model, pixels, transferability_map=given)
    sliding = segment_logits(model, pixels, "slide", crop_size=size, transferability_map=given)
    torch.testing.assert_close(sliding, whole, atol=1e-5, rtol=0)
    assert (whole - model(pixels).logits).abs().max() > 1e-2  # the given map, not ACTE's, was used


def test_overlapping_windows_are_averaged():
    model = tmt_with_acte()
    pixels, given = torch.randn(1, 3, 64, 96), torch.rand(1, 64, 96)
    assert sliding_windows((64, 96), (64, 64), (32, 32)) == [(0, 0, 64, 64), (0, 32, 64, 96)]
    for focus in (None, given):
        maps = [{} if focus is None else {"transferability_map": focus[..., left : left + 64]} for left in (0, 32)]
        left_window, right_window = (
            model(pixels[..., left : left + 64], **window_map).logits for left, window_map in zip((0, 32), maps)
        )
        expected = torch.cat(
            [left_window[..., :32], (left_window[..., 32:] + right_window[..., :32]) / 2, right_window[..., 32:]], -1
        )
        logits = segment_logits(model, pixels, "slide", crop_size=(64, 64), stride=(32, 32), transferability_map=focus)
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
        assert (logits - segment_logits(model, pixels, transferability_map=focus)).abs().max() > 1e-2


class Echo(torch.nn.Module):
    """A stub segmenter whose logits are its input: averaging over any windows must give the input back."""

    def forward(self, pixel_values):
        return SimpleNamespace(logits=pixel_values.clone())


def test_windows_cover_the_image_and_the_count_map_divides_the_sum():
    windows = sliding_windows((70, 100), (32, 48), (24, 40))
    assert {(bottom - top, right - left) for top, left, bottom, right in windows} == {(32, 48)}
    assert max(bottom for _, _, bottom, _ in windows) == 70 and max(right for *_, right in windows) == 100
    covered = torch.zeros(70, 100)
    for top, left, bottom, right in windows:
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1 and covered.max() == 4  # overlaps in both directions
    pixels = torch.randn(2, 3, 70, 100)
    torch.testing.assert_close(segment_logits(Echo(), pixels, "slide", crop_size=(32, 48), stride=(24, 40)), pixels)


@pytest.mark.parametrize(
    "mode, crop_size, stride, message",
    [
        ("tiles", None, None, "mode must be one of"),
        ("slide", None, None, "needs crop_size"),
        ("whole", (32, 32), None, "are for mode='slide'"),
        ("slide", (32, 32), (48, 16), "would leave gaps"),
        ("slide", (0, 32), None, "must be positive"),
        ("slide", 512, None, "two integers"),
        ("slide", (32.5, 32), None, "two integers"),
        ("slide", (32, 32), (8, 8, 8), "two integers"),
    ],
)
def test_bad_evaluation_arguments_are_refused_clearly(mode, crop_size, stride, message):
    with pytest.raises(ValueError, match=message):
        segment_logits(Echo(), torch.randn(1, 3, 32, 32), mode, crop_size=crop_size, stride=stride)


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "tmt"
    id2label = dict(enumerate(CITYSCAPES_CLASSES))
    label2id = {name: index for index, name in id2label.items()}
    config = tiny_tmt_config(num_labels=19, id2label=id2label, label2id=label2id, tma_init=1.0)
    acte = ACTEModel(tiny_acte_config(num_semantic_classes=19))
    TMTForSemanticSegmentation(config).attach_acte(acte).save_pretrained(path)
    TMTImageProcessor(size={"height": 64, "width": 96}).save_pretrained(path)
    return path


def test_evaluate_reports_split_resolution_and_mode(cityscapes_model, monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from evaluate import main as evaluate_main

    common = ["--model", str(cityscapes_model), "--data", "synthetic/night", "--num_samples", "2", "--batch_size", "2"]
    whole = evaluate_main(common)
    assert (whole["split"], whole["resolution"], whole["eval_mode"], whole["eval_crop"]) == (
        "validation",
        "64x96",
        "whole",
        None,
    )
    slide = ["--eval_mode", "slide", "--eval_crop", "64", "96"]
    one_window = evaluate_main([*common, *slide, "--output", str(tmp_path / "eval.json")])
    assert one_window["mean_iou"] == pytest.approx(whole["mean_iou"], abs=1e-9)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert (written["eval_mode"], written["eval_crop"], written["eval_stride"]) == ("slide", [64, 96], [64, 96])
    slide = ["--eval_mode", "slide", "--eval_crop", "48", "48", "--eval_stride", "32", "32"]
    native = evaluate_main([*common, "--native_resolution", *slide])
    assert native["resolution"] == "native" and 0 <= native["mean_iou"] <= 1
    with pytest.raises(SystemExit):
        evaluate_main([*common, "--eval_mode", "slide"])
    assert "needs crop_size" in capsys.readouterr().err


def test_predict_slides_over_an_image_at_its_own_size(cityscapes_model, tmp_path):
    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 150, 3), dtype=np.uint8)).save(image)
    predict = ["predict", str(image), "--model", str(cityscapes_model), "--out", str(tmp_path / "out")]
    cli_main([*predict, *"--native_resolution --eval_mode slide --eval_crop 64 64 --eval_stride 48 48".split()])
    for name in ("frame_segmentation.png", "frame_focus.png"):
        assert Image.open(tmp_path / "out" / name).size == (150, 90)
    with pytest.raises(SystemExit, match="would leave gaps"):
        cli_main([*predict, "--eval_mode", "slide", "--eval_crop", "32", "32", "--eval_stride", "64", "64"])
