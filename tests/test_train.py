"""End-to-end tests of examples/train.py on tiny settings (seconds per stage on a CPU)."""

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_without_tmt_hf
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import ViTConfig, ViTModel

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "examples" / "train.py")
TINY = ["--image_size", "64", "128", "--crop_size", "64", "128", "--num_source_train", "16", "--num_target_unlabeled",
        "8", "--num_eval", "8", "--target_train_samples", "8", "--source_steps", "4", "--acte_steps", "3",
        "--transfer_steps", "3", "--batch_size", "4", "--eval_batch_size", "4"]  # fmt: skip


def launch_command(args, num_processes=1):
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN, *args]  # fmt: skip


LAUNCH_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def launch(args, num_processes=1, timeout=600, check=True):
    command = launch_command(args, num_processes)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=LAUNCH_ENV, cwd=REPO)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output = tmp_path_factory.mktemp("run") / "out"
    result = launch(["--output_dir", str(output), *TINY])
    return output, result.stdout


def test_all_stages_produce_reloadable_models(trained, tmp_path):
    output, stdout = trained
    assert "| source-only |" in stdout and "| tmt         |" in stdout and "| finetune    |" in stdout
    results = json.loads((output / "results.json").read_text())
    for key in ("source", "acte", "tmt", "finetune"):
        assert (output / key / "model.safetensors").is_file()
        assert (output / key / "preprocessor_config.json").is_file()
        assert (output / key / "README.md").is_file()
    for method in ("tmt", "finetune"):
        assert 0.0 <= results[method]["target_val"]["mean_iou"] <= 1.0
    assert 0.0 <= results["acte"]["discriminator_accuracy"] <= 1.0
    assert 0.0 <= results["acte"]["focus_shift_auroc"] <= 1.0  # the generated target's shift masks are known
    config = json.loads((output / "tmt" / "config.json").read_text())
    assert config["acte_config"]["model_type"] == "acte"  # the TMT checkpoint carries its ACTE
    assert any(k.startswith("acte.") for k in load_file(output / "tmt" / "model.safetensors"))

    Image.fromarray(np.random.randint(0, 255, (50, 90, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    out = run_without_tmt_hf(
        f"""
        from PIL import Image
        from transformers import AutoModel, pipeline
        for name in ("source", "finetune", "tmt"):
            segmenter = pipeline("image-segmentation", model={str(output)!r} + "/" + name, trust_remote_code=True)
            masks = segmenter(Image.open({str(tmp_path / "street.png")!r}))
            assert masks and masks[0]["mask"].size == (90, 50), name
        acte = AutoModel.from_pretrained({str(output / "acte")!r}, trust_remote_code=True)
        assert type(acte).__name__ == "ACTEModel"
        print("OK")
        """,
        tmp_path,
    )
    assert out.strip() == "OK"


def test_oracle_ablation_feeds_the_generators_shift_mask(trained, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import domain_split, parse_args

    from tmt_hf.data import DOMAINS, GENERATOR_VERSION, generate_scene, scene_seed

    args = parse_args(["--source", "synthetic/clear", "--target", "synthetic/night", "--output_dir", str(tmp_path),
                       "--image_size", "64", "128", "--crop_size", "64", "128"])  # fmt: skip
    target = domain_split("synthetic/night", "train", 3, args, oracle_maps=True)
    source = domain_split("synthetic/clear", "train", 3, args, oracle_maps=True)
    for index in range(3):
        scene = generate_scene(scene_seed("night", "train", index), "night", 64, 128)
        np.testing.assert_array_equal(np.asarray(target[index]["focus"]) > 0, scene["shift_mask"])
        label = np.asarray(source[index]["label"])  # no shift on source images: the classes the target restyles
        np.testing.assert_array_equal(np.asarray(source[index]["focus"]) > 0, np.isin(label, DOMAINS["night"].restyled))
    assert not np.array_equal(scene["shift_mask"], np.isin(scene["label"], DOMAINS["night"].restyled))  # glare

    output, _ = trained
    launch(["--stage", "transfer", "--method", "oracle", "--tma_form", "output_film", "--source_model",
            str(output / "source"), "--output_dir", str(tmp_path / "oracle"), *TINY])  # fmt: skip
    results = json.loads((tmp_path / "oracle" / "results.json").read_text())
    assert 0.0 <= results["oracle"]["target_val"]["mean_iou"] <= 1.0
    assert results["generator_version"] == GENERATOR_VERSION  # the summaries split gaps by that version's classes
    assert min(results["oracle"]["mean_abs_lambda"]) > 0  # λ starts at 0 and learns from the oracle map
    config = json.loads((tmp_path / "oracle" / "oracle" / "config.json").read_text())
    assert config["tma_form"] == "output_film"


def test_acte_stage_on_a_target_without_local_shifts(tmp_path):
    # synthetic/clear has no local shifts: the focus map has nothing to be scored against, the stage still finishes
    result = launch(["--stage", "acte", "--source", "synthetic/fog", "--target", "synthetic/clear",
                     "--output_dir", str(tmp_path), *TINY])  # fmt: skip
    acte = json.loads((tmp_path / "results.json").read_text())["acte"]
    assert 0.0 <= acte["discriminator_accuracy"] <= 1.0 and "focus_shift_auroc" not in acte
    assert "[acte] held-out discriminator accuracy" in result.stdout and "AUROC" not in result.stdout


def test_acte_stage_stops_on_the_monitor_accuracy(tmp_path):
    args = ["--stage", "acte", *TINY, "--acte_steps", "8", "--checkpointing_steps", "2"]
    launch(["--output_dir", str(tmp_path / "full"), *args])
    result = launch(["--output_dir", str(tmp_path / "stopped"), *args, "--acte_stop_accuracy", "0.01",
                     "--acte_min_steps", "4", "--acte_check_every", "2"])  # fmt: skip
    stopping = json.loads((tmp_path / "stopped" / "results.json").read_text())["acte"]["stopping"]
    # Checked at steps 2 and 4; step 2 is before --acte_min_steps, so the rule stops at 4 of at most 8.
    assert [check["step"] for check in stopping["checks"]] == [2, 4] and stopping["steps"] == 4
    assert all(0.01 <= check["monitor_discriminator_accuracy"] <= 1 for check in stopping["checks"])
    assert "[acte] early stop at step 4 of 8" in result.stdout
    # The stopped ACTE is exactly the uninterrupted run's iterate at step 4 (same cosine schedule over 8 steps).
    stopped = load_file(tmp_path / "stopped" / "acte" / "model.safetensors")
    iterate = load_file(tmp_path / "full" / "checkpoints" / "acte" / "step_4" / "model.safetensors")
    full = load_file(tmp_path / "full" / "acte" / "model.safetensors")
    assert stopped.keys() == iterate.keys()
    assert all(torch.equal(stopped[key], iterate[key]) for key in stopped)
    assert not all(torch.equal(stopped[key], full[key]) for key in stopped)
    card = ModelCard.load(tmp_path / "stopped" / "acte" / "README.md")
    assert "- steps: 4" in card.text
    table = subprocess.run([sys.executable, str(REPO / "examples" / "summarise_runs.py"), str(tmp_path / "full"),
                            str(tmp_path / "stopped")], capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "| full | synthetic/night | 42 | 8 |" in table and "| stopped | synthetic/night | 42 | 4 |" in table
    assert "**mean of 2** | synthetic/night" in table


def test_acte_monitor_needs_held_out_train_images(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / "data" / "train" / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "train" / "images" / f"{index}.png"
        )
        Image.fromarray(rng.integers(0, 19, (64, 128), dtype=np.uint8)).save(
            tmp_path / "data" / "train" / "labels" / f"{index}.png"
        )
    result = launch(["--stage", "acte", *TINY, "--source", str(tmp_path / "data"), "--eval_split", "train",
                     "--num_source_train", "4", "--acte_stop_accuracy", "0.7", "--output_dir", str(tmp_path / "out")],
                    check=False)  # fmt: skip
    assert result.returncode != 0
    assert "holds out --acte_num_monitor 40" in result.stderr and "split has 6" in result.stderr


def test_too_few_images_for_one_batch_fail_clearly(trained, tmp_path):
    output, _ = trained
    result = launch(["--stage", "transfer", "--method", "finetune", "--source_model", str(output / "source"),
                     "--output_dir", str(tmp_path / "small"), *TINY, "--target_train_samples", "3"], check=False)  # fmt: skip
    assert result.returncode != 0
    assert "3 training images do not fill one batch of --batch_size 4" in result.stderr


def test_model_cards_carry_measured_metrics(trained):
    output, _ = trained
    results = json.loads((output / "results.json").read_text())
    card = ModelCard.load(output / "tmt" / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-segmentation"
    assert {"semantic-segmentation", "domain-adaptation", "vision-transformer"} <= set(data.tags)
    assert data.eval_results[0].metric_value == pytest.approx(round(results["tmt"]["target_val"]["mean_iou"], 4))
    assert "trust_remote_code=True" in card.text and "AutoModelForSemanticSegmentation" in card.text
    # A local run links no Hub repo that does not exist: no widget URL, no ACTE base model; the folder has the image.
    assert not card.data.widget and not card.data.base_model and (output / "tmt" / "widget.png").is_file()
    assert "huggingface.co/" not in card.text.split("## Usage")[0]
    assert "ACTE estimator's weights are included" in card.text
    assert card.data.datasets == ["synthetic/clear", "synthetic/night"]
    acte_card = ModelCard.load(output / "acte" / "README.md")
    assert acte_card.data.pipeline_tag is None and "not a segmenter" in acte_card.text


def test_two_process_evaluation_equals_one_process(tmp_path):
    output = tmp_path / "ddp"
    launch(["--stage", "source", "--output_dir", str(output), *TINY], num_processes=2)
    two_process = json.loads((output / "results.json").read_text())["source"]["target_val"]["mean_iou"]
    command = [sys.executable, str(REPO / "examples" / "evaluate.py"), "--model", str(output / "source"),
               "--data", "synthetic/night", "--num_samples", "8", "--output", str(tmp_path / "eval.json")]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    one_process = json.loads((tmp_path / "eval.json").read_text())["mean_iou"]
    assert one_process == pytest.approx(two_process, abs=1e-9)


def test_evaluate_reports_confusions_and_takes_the_shift_mask_as_map(trained, monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from evaluate import main as evaluate_main

    from tmt_hf.data import load_domain

    output, _ = trained
    model = str(output / "tmt")
    common = ["--model", model, "--data", "synthetic/night", "--num_samples", "4"]
    report = evaluate_main([*common, "--confusions", "car", "0"])
    labels = np.stack([np.asarray(x) for x in load_domain("synthetic/night", "validation", num_samples=4,
                                                           synthetic_size=(64, 128))["label"]])  # fmt: skip
    for name, class_id in (("car", 13), ("road", 0)):
        row = report["confusions"][name]
        assert row.pop("pixels") == (labels == class_id).sum()
        shares = list(row.values())
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-6
    with_mask = evaluate_main([*common, "--shift_mask_as_map"])
    assert with_mask["mean_iou"] != report["mean_iou"]  # the tmt model's TMA reads the given map, not ACTE's
    for folder in ("images", "labels"):
        (tmp_path / "data" / "validation" / folder).mkdir(parents=True)
    Image.new("RGB", (128, 64)).save(tmp_path / "data" / "validation" / "images" / "0.png")
    Image.new("L", (128, 64)).save(tmp_path / "data" / "validation" / "labels" / "0.png")
    for bad, message in ((["--confusions", "tram"], "--confusions tram: not classes of the model"),
                         (["--shift_mask_as_map", "--data", str(tmp_path / "data")], "needs a generated dataset")):  # fmt: skip
        with pytest.raises(SystemExit):
            evaluate_main([*common, *bad])
        assert message in capsys.readouterr().err


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = [
        "--stage",
        "source",
        *TINY,
        "--source_steps",
        "24",
        "--checkpointing_steps",
        "4",
        "--num_source_train",
        "12",
    ]
    launch(["--output_dir", str(tmp_path / "straight"), *args])

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(launch_command(["--output_dir", str(interrupted), *args]), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=REPO, env=LAUNCH_ENV, start_new_session=True)  # fmt: skip
    checkpoints = interrupted / "checkpoints" / "source"
    deadline = time.time() + 300
    while time.time() < deadline and not (
        checkpoints.is_dir() and any(p.name == "step_8" for p in checkpoints.iterdir())
    ):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its training process
    process.wait()
    assert not (interrupted / "source" / "model.safetensors").exists(), "the run finished before it was killed"
    launch(["--output_dir", str(interrupted), *args, "--resume_from_checkpoint", "latest"])

    straight = load_file(tmp_path / "straight" / "source" / "model.safetensors")
    resumed = load_file(interrupted / "source" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_adversarial_alignment_reverses_the_domain_gradient(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import AdversarialAlignment

    from tmt_hf import TMTConfig, TMTForSemanticSegmentation

    torch.manual_seed(0)
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32)).eval()
    pixel_values = torch.randn(4, 3, 32, 32)
    unlabelled = torch.full((4, 32, 32), 255)  # no segmentation loss: only the domain loss has gradients
    domains = torch.tensor([1, 1, 0, 0])
    focus = torch.zeros(4, 32, 32)
    focus[:, :16] = 1.0  # the top half of every image

    wrapper = AdversarialAlignment(model, "focus", weight=0.5, steps=10)
    wrapper.step.fill_(10)  # the end of the ramp: reversal coefficient 2 / (1 + e^-10) - 1
    loss, logs = wrapper(pixel_values, unlabelled, domains, focus)
    loss.backward()
    encoder_grad = model.vit.embeddings.patch_embeddings.projection.weight.grad.clone()
    discriminator_grad = wrapper.discriminator[0].weight.grad.clone()
    assert wrapper.step.item() == 11 and "domain_loss" in logs

    model.zero_grad()
    wrapper.discriminator.zero_grad()
    tokens = model(pixel_values, output_hidden_states=[4]).hidden_states[4][:, 1:].unflatten(1, (2, 2))
    logits = wrapper.discriminator(tokens[:, :1])[..., 0]  # the focused (top) tokens only
    expected = F.binary_cross_entropy_with_logits(logits, domains.float()[:, None, None].expand_as(logits))
    (0.5 * expected).backward()
    assert logs["domain_loss"] == pytest.approx(expected.item(), rel=1e-5)
    coefficient = 2 / (1 + math.exp(-10)) - 1
    torch.testing.assert_close(discriminator_grad, wrapper.discriminator[0].weight.grad)
    torch.testing.assert_close(
        encoder_grad, -coefficient * model.vit.embeddings.patch_embeddings.projection.weight.grad
    )

    with pytest.raises(ValueError, match="focus alignment needs a focus map"):
        wrapper(pixel_values, unlabelled, domains)


def test_class_conditional_alignment_conditions_each_token_on_its_class_probabilities(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import AdversarialAlignment

    from tmt_hf import TMTConfig, TMTForSemanticSegmentation

    torch.manual_seed(0)
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32)).eval()
    pixel_values = torch.randn(4, 3, 32, 32)
    unlabelled = torch.full((4, 32, 32), 255)
    domains = torch.tensor([1, 1, 0, 0])
    wrapper = AdversarialAlignment(model, "patch", weight=0.5, steps=10, class_conditional=True)
    assert wrapper.discriminator[0].in_features == model.config.hidden_size * model.config.num_labels
    wrapper.step.fill_(10)
    loss, logs = wrapper(pixel_values, unlabelled, domains)
    loss.backward()
    encoder_grad = model.vit.embeddings.patch_embeddings.projection.weight.grad.clone()

    model.zero_grad()
    out = model(pixel_values, output_hidden_states=[4])
    tokens = out.hidden_states[4][:, 1:]  # a 2 x 2 grid of 16-px patches
    probabilities = out.logits.detach().softmax(1).unflatten(2, (2, 16)).unflatten(4, (2, 16)).mean((3, 5))
    probabilities = probabilities.flatten(2).transpose(1, 2)  # each patch's mean class probabilities
    joint = torch.einsum("bnd,bnc->bndc", tokens, probabilities).flatten(2)
    logits = wrapper.discriminator(joint)[..., 0]
    expected = F.binary_cross_entropy_with_logits(logits, domains.float()[:, None].expand_as(logits))
    (0.5 * expected).backward()
    assert logs["domain_loss"] == pytest.approx(expected.item(), rel=1e-5)
    coefficient = 2 / (1 + math.exp(-10)) - 1  # reversed through the features only: the probabilities are detached
    torch.testing.assert_close(
        encoder_grad, -coefficient * model.vit.embeddings.patch_embeddings.projection.weight.grad
    )

    # An input the segmenter pads (40 -> 48 px, 3 x 3 tokens): padded pixels count as no class.
    padded_input = torch.randn(2, 3, 40, 40)
    _, logs = wrapper(padded_input, torch.full((2, 40, 40), 255), torch.tensor([1, 0]))
    out = model(padded_input, output_hidden_states=[4])
    probabilities = F.pad(out.logits.softmax(1), (0, 8, 0, 8)).unflatten(2, (3, 16)).unflatten(4, (3, 16)).mean((3, 5))
    joint = torch.einsum("bnd,bnc->bndc", out.hidden_states[4][:, 1:], probabilities.flatten(2).transpose(1, 2))
    logits = wrapper.discriminator(joint.flatten(2))[..., 0]
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0.0])[:, None].expand_as(logits))
    assert logs["domain_loss"] == pytest.approx(expected.item(), rel=1e-5)

    with pytest.raises(ValueError, match="needs the patch or focus level"):
        AdversarialAlignment(model, "global", weight=0.5, steps=10, class_conditional=True)


def test_pixel_weights_weight_each_labelled_pixels_loss(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import AdversarialAlignment

    from tmt_hf import TMTConfig, TMTForSemanticSegmentation

    torch.manual_seed(0)
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32)).eval()
    wrapper = AdversarialAlignment(model, None, weight=0.5, steps=10)
    pixel_values = torch.randn(2, 3, 32, 32)
    labels = torch.randint(19, (2, 32, 32))
    labels[:, :8] = 255
    loss, _ = wrapper(pixel_values, labels, torch.tensor([1, 0]))
    unit, _ = wrapper(pixel_values, labels, torch.tensor([1, 0]), pixel_weights=torch.ones(2, 32, 32))
    torch.testing.assert_close(unit, loss)  # weights of 1: the segmenter's own loss

    weights = torch.rand(2, 32, 32)
    weighted, _ = wrapper(pixel_values, labels, torch.tensor([1, 0]), pixel_weights=weights)
    pixel_losses = F.cross_entropy(model(pixel_values).logits, labels, ignore_index=255, reduction="none")
    torch.testing.assert_close(weighted, (weights * pixel_losses).sum() / (labels != 255).sum())


@pytest.mark.parametrize(
    "source_labels, target_focus_weight",
    [("all", 0.0), ("none", 0.0), ("focused", 0.0), ("focused_shuffled", 0.0), ("all", 2.0), ("focused", 2.0)],
)
def test_alignment_batches_keep_target_and_source_labels_only(monkeypatch, source_labels, target_focus_weight):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import alignment_loss

    from tmt_hf.data import IGNORE_INDEX, collate

    # Every image's label map is filled with its domain + 1 (source 1, target 2), the labelled target batch with 3.
    # Every focus map is 0 on the left half and 0.5 on the right half, except the second source image's (0.5 on the
    # left, 0 on the right).
    focus = torch.cat([torch.zeros(8, 4), torch.full((8, 4), 0.5)], dim=1)
    auxiliary = [{"pixel_values": torch.zeros(3, 8, 8), "labels": torch.full((8, 8), 1 + d), "domain_labels": d,
                  "focus": focus.flip(1) if i == 1 else focus} for i, d in enumerate((0, 0, 1, 1, 1))]  # fmt: skip

    class Auxiliary(list):
        def __getitem__(self, key):
            return [e["domain_labels"] for e in self] if key == "domain_labels" else super().__getitem__(key)

    args = argparse.Namespace(batch_size=4, source_labels=source_labels, target_focus_weight=target_focus_weight)
    accelerator = argparse.Namespace(process_index=0, num_processes=1)
    compute_loss = alignment_loss(Auxiliary(auxiliary), argparse.Namespace(set_epoch=lambda epoch: None), args,
                                  accelerator)  # fmt: skip
    batch = collate([{"pixel_values": torch.zeros(3, 8, 8), "labels": torch.full((8, 8), 3), "focus": focus}] * 4)
    torch.manual_seed(0)  # draws source images 0 and 1, in this order
    labels, domains, maps, weights = compute_loss(lambda *inputs: inputs[1:], batch)
    assert domains.tolist() == [1, 1, 1, 1, 0, 0, 1, 1]  # labelled target, then 2 source, then 2 unlabelled target
    assert torch.equal(maps[4:6], torch.stack([focus, focus.flip(1)]))
    assert (labels[:4] == 3).all() and (labels[6:] == IGNORE_INDEX).all()
    assert (labels[4:6] == (IGNORE_INDEX if source_labels == "none" else 1)).all()
    if not source_labels.startswith("focused") and not target_focus_weight:
        assert weights is None
        return
    assert (weights[6:] == 1).all()
    if source_labels.startswith("focused"):  # source pixels weighted by focus / its mean over them (0.25)
        own = torch.stack([focus, focus.flip(1)]) * 4
        torch.testing.assert_close(weights[4:6], own if source_labels == "focused" else own.flip(0))
    else:
        assert (weights[4:6] == 1).all()
    # Labelled target pixels: 1 + 2 × focus (1 on the left, 2 on the right) over its mean 1.5.
    expected = (1 + target_focus_weight * focus) / 1.5 if target_focus_weight else torch.ones(8, 8)
    torch.testing.assert_close(weights[:4], expected.expand(4, 8, 8))


def test_focus_weighted_segmentation_loss(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import focus_weighted_segmentation_loss, segmentation_loss

    from tmt_hf import TMTConfig, TMTForSemanticSegmentation

    torch.manual_seed(0)
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32, tma_init=0.5)).eval()
    focus = torch.rand(2, 32, 32)
    labels = torch.randint(19, (2, 32, 32))
    labels[0, :4] = 255
    batch = {"pixel_values": torch.randn(2, 3, 32, 32), "labels": labels, "focus": focus}
    plain, _ = segmentation_loss(model, batch)
    unweighted, _ = focus_weighted_segmentation_loss(0.0)(model, batch)
    torch.testing.assert_close(unweighted, plain)  # strength 0: the segmenter's own loss
    weighted, _ = focus_weighted_segmentation_loss(3.0)(model, batch)
    logits = model(pixel_values=batch["pixel_values"], transferability_map=focus).logits
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    weights = (1 + 3 * focus) / (1 + 3 * focus)[labels != 255].mean()
    torch.testing.assert_close(weighted, (weights * pixel_losses).sum() / (labels != 255).sum())


def test_cached_focus_maps_are_actes_maps(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import with_focus_maps

    from tmt_hf import ACTEConfig, ACTEModel
    from tmt_hf.data import SegmentationTransform, collate, load_domain

    torch.manual_seed(0)
    acte = ACTEModel(ACTEConfig(focus_alpha=1.0)).eval()  # m = 1 - t: structured even untrained
    dataset = load_domain("synthetic/night", "train", num_samples=3, synthetic_size=(64, 128))
    cached = with_focus_maps(dataset.select_columns(["image", "label"]), acte,
                             argparse.Namespace(image_size=[64, 128], eval_batch_size=2))  # fmt: skip
    cached.set_transform(SegmentationTransform(train=False, size=(64, 128)))
    batch = collate([cached[i] for i in range(3)])
    with torch.no_grad():
        expected = F.interpolate(acte(batch["pixel_values"]).focus_map[:, None], size=(64, 128), mode="bilinear")
    assert expected.std() > 0.01  # a map with structure, not a constant
    torch.testing.assert_close(batch["focus"], expected[:, 0], atol=0.5 / 255 + 1e-6, rtol=0)


def test_alignment_methods_resume_exactly(trained, tmp_path):
    output, _ = trained
    run = tmp_path / "aligned"
    args = ["--stage", "transfer", "--method", "align_patch", "oracle", "--alignment", "focus", "--source_model",
            str(output / "source"), "--output_dir", str(run), *TINY, "--transfer_steps", "6",
            "--checkpointing_steps", "2", "--resume_from_checkpoint", "latest"]  # fmt: skip
    stdout = launch(args).stdout
    assert "| align_patch |" in stdout and "| oracle      |" in stdout
    results = json.loads((run / "results.json").read_text())
    assert min(results["oracle"]["mean_abs_lambda"]) > 0
    straight = {m: load_file(run / m / "model.safetensors") for m in ("align_patch", "oracle")}
    assert not any(key.startswith("discriminator") for key in straight["oracle"])  # training-only, not saved

    # A run killed after step 4 of each method: its outputs and later checkpoints are gone, step_4 is left.
    for method in ("align_patch", "oracle"):
        shutil.rmtree(run / method)
        shutil.rmtree(run / "checkpoints" / method / "step_6")
    launch(args)
    for method, weights in straight.items():
        resumed = load_file(run / method / "model.safetensors")
        for key in weights:
            assert torch.equal(weights[key], resumed[key]), (method, key)


def test_push_to_hub_commits_both_repos(trained, tmp_path, monkeypatch):
    import shutil

    import httpx2
    import huggingface_hub
    from huggingface_hub import constants

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train
    finally:
        sys.path.remove(str(REPO / "examples"))

    output = tmp_path / "out"
    shutil.copytree(trained[0], output)
    commits = {}

    def handler(request):
        url = str(request.url)
        if url.endswith("/api/repos/create"):
            name = json.loads(request.content)["name"]
            return httpx2.Response(200, json={"url": f"https://huggingface.co/org/{name}", "name": f"org/{name}"})
        if "/preupload/" in url:
            files = json.loads(request.content)["files"]
            mode = lambda p: "lfs" if p.endswith(".safetensors") else "regular"  # noqa: E731
            return httpx2.Response(
                200,
                json={
                    "files": [{"path": f["path"], "uploadMode": mode(f["path"]), "shouldIgnore": False} for f in files]
                },
            )
        if url.endswith("/info/lfs/objects/batch"):
            objects = json.loads(request.content)["objects"]
            return httpx2.Response(200, json={"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": f"https://lfs.mock/{o['oid']}"}}} for o in objects]})  # fmt: skip
        if url.endswith("/api/validate-yaml"):  # the Hub checks the card metadata before the commit
            return httpx2.Response(200, json={})
        if url.startswith("https://lfs.mock/"):
            return httpx2.Response(200)
        if "/commit/" in url:
            repo = url.split("/api/models/")[1].split("/commit/")[0]
            lines = [json.loads(line) for line in request.content.decode().splitlines()]
            commits[repo] = {
                line["value"]["path"]: line["value"] for line in lines if line["key"] in ("file", "lfsFile")
            }
            return httpx2.Response(
                200, json={"commitUrl": f"https://huggingface.co/{repo}/commit/1", "commitOid": "1" * 40}
            )
        return httpx2.Response(404, json={"error": f"not mocked: {url}"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))
    try:
        train.main(["--output_dir", str(output), *TINY, "--resume_from_checkpoint", "latest", "--push_to_hub",
                    "--hub_model_id", "org/tmt-clear2night", "--hub_acte_model_id", "org/acte-clear2night",
                    "--hub_token", "hf_mock"])  # fmt: skip
    finally:
        huggingface_hub.set_client_factory(lambda: httpx2.Client())
    expected = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "configuration_acte.py",
                "modeling_acte.py", "image_processing_tmt.py"}  # fmt: skip
    assert "widget.png" in commits["org/tmt-clear2night"]
    assert expected <= set(commits["org/acte-clear2night"])
    assert expected | {"configuration_tmt.py", "modeling_tmt.py"} <= set(commits["org/tmt-clear2night"])
    import base64

    readme = base64.b64decode(commits["org/tmt-clear2night"]["README.md"]["content"]).decode()
    card = ModelCard(readme)
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-segmentation"
    assert "org/acte-clear2night" in card.data.base_model
    assert card.data.widget[0]["src"] == "https://huggingface.co/org/tmt-clear2night/resolve/main/widget.png"


def test_stock_vit_initialisation(tmp_path):
    vit = ViTModel(
        ViTConfig(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=384, image_size=64)
    )
    vit.save_pretrained(tmp_path / "stock-vit")
    launch(
        [
            "--stage",
            "source",
            "--output_dir",
            str(tmp_path / "out"),
            *TINY,
            "--model_name_or_path",
            str(tmp_path / "stock-vit"),
        ]
    )
    from tmt_hf import TMTForSemanticSegmentation

    model = TMTForSemanticSegmentation.from_pretrained(tmp_path / "out" / "source")
    assert model.config.num_hidden_layers == 4 and model.config.num_labels == 19


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "transfer"], "needs a trained source model"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (["--push_to_hub", "--hub_model_id", "o/t"], "--hub_acte_model_id"),
        (["--target_train_samples", "3", "--target_train_fraction", "0.5"], "not both"),
        (["--target_train_fraction", "1.5"], "must lie in"),
        (["--method", "oracle", "--target", "bdd100k"], "--method oracle needs a generated target"),
        (["--acte_overrides", "kapa=5"], "not ACTEConfig fields"),
        (["--acte_overrides", "kappa"], "KEY=VALUE"),
        (["--method", "finetune", "--alignment", "focus"], "applies to the TMA methods"),
        (["--alignment_weight", "-1"], "--alignment_weight must be >= 0"),
        (["--method", "align_global", "--class_conditional_alignment"], "conditions the patch or focus alignment"),
        (["--method", "finetune", "--class_conditional_alignment"], "conditions the patch or focus alignment"),
        (["--acte_stop_accuracy", "0"], "--acte_stop_accuracy must lie in (0, 1]"),
        (["--acte_check_every", "0"], "--acte_check_every must be >= 1"),
        (["--method", "finetune", "--source_labels", "none"], "--source_labels none applies"),
        (["--method", "tmt", "--alignment", "none", "--source_labels", "none"], "--source_labels none applies"),
        (["--method", "source_replay", "tmt", "--source_labels", "none"], "--source_labels none applies"),
        (["--method", "align_patch", "tmt", "--source_labels", "focused"], "--source_labels focused needs a focus"),
        (["--method", "finetune", "oracle", "--target_focus_weight", "1"], "--target_focus_weight needs a focus map"),
        (["--method", "oracle", "--target_focus_weight", "-1"], "--target_focus_weight must be >= 0"),
    ],
)
def test_bad_flag_combinations_fail_before_work(tmp_path, args, message):
    result = subprocess.run([sys.executable, TRAIN, "--output_dir", str(tmp_path / "x"), *args], capture_output=True,
                            text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "x").exists()
