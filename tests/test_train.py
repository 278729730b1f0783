"""End-to-end tests of examples/train.py on tiny settings (seconds per stage on a CPU)."""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
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
RESEARCH = str(REPO / "examples" / "research" / "train_variants.py")  # train.py with the protocol arms' flags
TINY = "--image_size 64 128 --crop_size 64 128 --num_source_train 16 --num_target_unlabeled 8 --num_eval 8".split()
TINY += "--target_train_samples 8 --source_steps 4 --acte_steps 3 --transfer_steps 3 --batch_size 4".split()


def launch_command(args, num_processes=1, script=TRAIN):
    return (
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
        + "--num_machines 1 --mixed_precision no --dynamo_backend no".split()
        + [*(["--multi_gpu"] if num_processes > 1 else []), script, *args]
    )


LAUNCH_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def launch(args, num_processes=1, timeout=600, check=True, script=TRAIN):
    command = launch_command(args, num_processes, script)
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
    methods = ("finetune", "finetune_replay", "align_patch", "tmt_paper")  # the defaults
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]
    assert {"source-only", *methods} <= set(rows)
    assert "over 19 classes" in stdout
    results = json.loads((output / "results.json").read_text())
    for key in ("source", "acte", *methods):
        assert (output / key / "model.safetensors").is_file()
        assert (output / key / "preprocessor_config.json").is_file()
        assert (output / key / "README.md").is_file()
    for method in methods:
        assert 0.0 <= results[method]["target_val"]["mean_iou"] <= 1.0
        assert results[method]["target_val"]["classes"] == list(range(19))
    assert 0.0 <= results["acte"]["discriminator_accuracy"] <= 1.0
    assert 0.0 <= results["acte"]["focus_shift_auroc"] <= 1.0  # the generated target's shift masks are known
    assert set(results["wall_time_s"]) == {"source", "acte", *methods, "total"}
    config = json.loads((output / "tmt_paper" / "config.json").read_text())
    assert config["acte_config"]["model_type"] == "acte"  # the TMT checkpoint carries its ACTE
    assert any(k.startswith("acte.") for k in load_file(output / "tmt_paper" / "model.safetensors"))

    Image.fromarray(np.random.randint(0, 255, (50, 90, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    out = run_without_tmt_hf(
        f"""
        from PIL import Image
        from transformers import AutoModel, pipeline
        for name in ("source", "finetune", "tmt_paper"):
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
    monkeypatch.syspath_prepend(str(REPO / "examples" / "research"))
    from train_variants import parse_args
    from variants import oracle_split

    from tmt_hf.data import DOMAINS, GENERATOR_VERSION, generate_scene, scene_seed

    args = parse_args(
        ["--source", "synthetic/clear", "--target", "synthetic/night", "--output_dir", str(tmp_path)]
        + "--image_size 64 128 --crop_size 64 128".split()
    )
    target = oracle_split("synthetic/night", "train", 3, args)
    source = oracle_split("synthetic/clear", "train", 3, args)
    for index in range(3):
        scene = generate_scene(scene_seed("night", "train", index), "night", 64, 128)
        np.testing.assert_array_equal(np.asarray(target[index]["focus"]) > 0, scene["shift_mask"])
        label = np.asarray(source[index]["label"])  # no shift on source images: the classes the target restyles
        np.testing.assert_array_equal(np.asarray(source[index]["focus"]) > 0, np.isin(label, DOMAINS["night"].restyled))
    assert not np.array_equal(scene["shift_mask"], np.isin(scene["label"], DOMAINS["night"].restyled))  # glare

    output, _ = trained
    stdout = launch(
        "--stage transfer --method tmt_paper --focus_map oracle".split()
        + ["--source_model", str(output / "source"), "--output_dir", str(tmp_path / "oracle"), *TINY],
        script=RESEARCH,
    ).stdout
    results = json.loads((tmp_path / "oracle" / "results.json").read_text())
    assert 0.0 <= results["tmt_paper-oracle"]["target_val"]["mean_iou"] <= 1.0 and "| tmt_paper-oracle |" in stdout
    assert results["generator_version"] == GENERATOR_VERSION  # the summaries split gaps by that version's classes
    assert min(results["tmt_paper-oracle"]["mean_abs_lambda"]) > 0  # λ starts at 0 and learns from the oracle map
    config = json.loads((tmp_path / "oracle" / "tmt_paper-oracle" / "config.json").read_text())
    assert config["acte_config"] is None  # the oracle's map comes from the generator, not from an ACTE


def test_acte_stage_on_a_target_without_local_shifts(tmp_path):
    # synthetic/clear has no local shifts: the focus map has nothing to be scored against, the stage still finishes
    result = launch(
        [*"--stage acte --source synthetic/fog --target synthetic/clear".split(), "--output_dir", str(tmp_path), *TINY]
    )
    acte = json.loads((tmp_path / "results.json").read_text())["acte"]
    assert 0.0 <= acte["discriminator_accuracy"] <= 1.0 and "focus_shift_auroc" not in acte
    assert "[acte] held-out discriminator accuracy" in result.stdout and "AUROC" not in result.stdout


def test_too_few_source_images_for_one_batch_fail_clearly(tmp_path):
    result = launch(
        ["--stage", "source", "--output_dir", str(tmp_path / "small"), *TINY, "--num_source_train", "3"], check=False
    )
    assert result.returncode != 0
    assert "3 training images do not fill one batch of --batch_size 4" in result.stderr


def test_a_labelled_set_smaller_than_a_batch_repeats_to_fill_it(trained, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import repeated_to_fill

    small = datasets.Dataset.from_dict({"image": ["a", "b", "c"], "sample_index": [0, 1, 2]})
    filled = repeated_to_fill(small, 8)
    assert filled["image"] == ["a", "b", "c"] * 3 and filled["sample_index"] == list(range(9))  # own augmentation each
    assert repeated_to_fill(small, 3) is small

    output, _ = trained
    run = tmp_path / "three"
    launch(
        "--stage transfer --method finetune".split()
        + ["--source_model", str(output / "source"), "--output_dir", str(run), *TINY, "--target_train_samples", "3"]
    )
    results = json.loads((run / "results.json").read_text())
    assert results["finetune"]["labelled_target_images"] == 3  # the labelled images, not their copies
    assert results["finetune"]["labelled_target_rows"] == [0, 1, 2]  # which rows of --target_train_split
    source = load_file(output / "source" / "model.safetensors")
    tuned = load_file(run / "finetune" / "model.safetensors")
    assert any(not torch.equal(source[key], tuned[key]) for key in source)  # it trained


def test_model_cards_carry_measured_metrics(trained):
    output, _ = trained
    results = json.loads((output / "results.json").read_text())
    card = ModelCard.load(output / "tmt_paper" / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-segmentation"
    assert {"semantic-segmentation", "domain-adaptation", "vision-transformer"} <= set(data.tags)
    assert data.eval_results[0].metric_value == pytest.approx(round(results["tmt_paper"]["target_val"]["mean_iou"], 4))
    assert "trust_remote_code=True" in card.text and "AutoModelForSemanticSegmentation" in card.text
    # A local run links no Hub repo that does not exist: no widget URL, no ACTE base model; the folder has the image.
    assert not card.data.widget and not card.data.base_model and (output / "tmt_paper" / "widget.png").is_file()
    assert "huggingface.co/" not in card.text.split("## Usage")[0]
    assert "ACTE estimator's weights are included" in card.text
    assert card.data.datasets == ["synthetic/clear", "synthetic/night"]
    acte_card = ModelCard.load(output / "acte" / "README.md")
    assert acte_card.data.pipeline_tag is None and "not a segmenter" in acte_card.text


def test_two_process_evaluation_equals_one_process(tmp_path):
    output = tmp_path / "ddp"
    launch(["--stage", "source", "--output_dir", str(output), *TINY], num_processes=2)
    two_process = json.loads((output / "results.json").read_text())["source"]["target_val"]["mean_iou"]
    command = [sys.executable, str(REPO / "examples" / "evaluate.py"), "--model", str(output / "source")]
    command += [*"--data synthetic/night --num_samples 8".split(), "--output", str(tmp_path / "eval.json")]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    one_process = json.loads((tmp_path / "eval.json").read_text())["mean_iou"]
    assert one_process == pytest.approx(two_process, abs=1e-9)


def test_evaluate_reports_confusions_and_takes_the_shift_mask_as_map(trained, monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from evaluate import main as evaluate_main

    from tmt_hf.data import load_domain

    output, _ = trained
    model = str(output / "tmt_paper")
    common = ["--model", model, "--data", "synthetic/night", "--num_samples", "4"]
    report = evaluate_main([*common, "--confusions", "car", "0"])
    labels = np.stack(
        [
            np.asarray(x)
            for x in load_domain("synthetic/night", "validation", num_samples=4, synthetic_size=(64, 128))["label"]
        ]
    )
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
    for bad, message in (
        (["--confusions", "tram"], "--confusions tram: not classes of the model"),
        (["--shift_mask_as_map", "--data", str(tmp_path / "data")], "needs a generated dataset"),
    ):
        with pytest.raises(SystemExit):
            evaluate_main([*common, *bad])
        assert message in capsys.readouterr().err


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    args = ["--stage", "source", *TINY, *"--source_steps 24 --checkpointing_steps 4 --num_source_train 12".split()]
    launch(["--output_dir", str(tmp_path / "straight"), *args])

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        launch_command(["--output_dir", str(interrupted), *args]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env=LAUNCH_ENV,
        start_new_session=True,
    )
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


def test_alignment_batches_add_labelled_source_and_unlabelled_target_images(monkeypatch):
    from tmt_hf.data import IGNORE_INDEX, collate
    from tmt_hf.methods import TransferContext, get_method
    from tmt_hf.training import auxiliary_draw

    # Every image's label map is filled with its domain + 1 (source 1, target 2), the labelled target batch with 3;
    # each auxiliary image's focus map is filled with its index.
    auxiliary = [
        {
            "pixel_values": torch.zeros(3, 8, 8),
            "labels": torch.full((8, 8), 1 + d),
            "domain_labels": d,
            "focus": torch.full((8, 8), float(i)),
        }
        for i, d in enumerate((0, 0, 1, 1, 1))
    ]

    class Auxiliary(list):
        def __getitem__(self, key):
            return [e["domain_labels"] for e in self] if key == "domain_labels" else super().__getitem__(key)

    accelerator = argparse.Namespace(process_index=0, num_processes=1)
    method = get_method("align_patch")
    counts = method.auxiliary_counts(TransferContext(steps=1, batch_size=4, image_size=(8, 8)))
    draw = auxiliary_draw(Auxiliary(auxiliary), argparse.Namespace(set_epoch=lambda epoch: None), counts, accelerator)
    batch = collate(
        [{"pixel_values": torch.zeros(3, 8, 8), "labels": torch.full((8, 8), 3), "focus": torch.full((8, 8), -1.0)}] * 4
    )
    torch.manual_seed(0)
    labels, domains, maps = method.loss(lambda *inputs: inputs[1:], batch, draw())
    assert domains.tolist() == [1, 1, 1, 1, 0, 0, 1, 1]  # labelled target, then 2 source, then 2 unlabelled target
    assert (labels[:4] == 3).all() and (labels[4:6] == 1).all() and (labels[6:] == IGNORE_INDEX).all()
    assert (
        (maps[:4] == -1).all() and set(maps[4:6, 0, 0].tolist()) <= {0, 1} and set(maps[6:, 0, 0].tolist()) <= {2, 3, 4}
    )


def test_cached_focus_maps_are_actes_maps(monkeypatch):
    from tmt_hf import ACTEConfig, ACTEModel
    from tmt_hf.data import SegmentationTransform, collate, load_domain
    from tmt_hf.methods import TransferContext, acte_focus, with_focus_maps

    torch.manual_seed(0)
    acte = ACTEModel(ACTEConfig(focus_alpha=1.0)).eval()  # m = 1 - t: structured even untrained
    dataset = load_domain("synthetic/night", "train", num_samples=3, synthetic_size=(64, 128))
    context = TransferContext(steps=1, batch_size=1, image_size=(64, 128))
    cached = with_focus_maps(dataset.select_columns(["image", "label"]), acte_focus(acte), context)
    cached.set_transform(SegmentationTransform(train=False, size=(64, 128)))
    batch = collate([cached[i] for i in range(3)])
    with torch.no_grad():
        expected = F.interpolate(acte(batch["pixel_values"]).focus_map[:, None], size=(64, 128), mode="bilinear")
    assert expected.std() > 0.01  # a map with structure, not a constant
    torch.testing.assert_close(batch["focus"], expected[:, 0], atol=0.5 / 255 + 1e-6, rtol=0)
    # The shuffled-map control: each image gets the next image's map, the last the first's.
    shuffled = with_focus_maps(dataset.select_columns(["image", "label"]), acte_focus(acte), context, shuffled=True)
    shuffled.set_transform(SegmentationTransform(train=False, size=(64, 128)))
    torch.testing.assert_close(collate([shuffled[i] for i in range(3)])["focus"], batch["focus"].roll(-1, dims=0))


def test_alignment_methods_resume_exactly(trained, tmp_path):
    output, _ = trained
    run = tmp_path / "aligned"
    args = "--stage transfer --method align_patch tmt_paper --focus_map shuffled".split()
    args += ["--source_model", str(output / "source"), "--acte_model", str(output / "acte"), "--output_dir", str(run)]
    args += [*TINY, *"--transfer_steps 6 --checkpointing_steps 2 --resume_from_checkpoint latest".split()]
    stdout = launch(args, script=RESEARCH).stdout
    assert "| align_patch        |" in stdout and "| tmt_paper-shuffled |" in stdout
    results = json.loads((run / "results.json").read_text())
    assert min(results["tmt_paper-shuffled"]["mean_abs_lambda"]) > 0
    methods = ("align_patch", "tmt_paper-shuffled")
    straight = {m: load_file(run / m / "model.safetensors") for m in methods}
    assert not any(key.startswith("discriminator") for key in straight["tmt_paper-shuffled"])  # training-only

    assert_resumed_after_step_4_equals(run, args, straight)


def assert_resumed_after_step_4_equals(run, args, straight, script=RESEARCH):
    """Kills each method of a finished 6-step run after step 4 (its output folder and step_6 gone, step_4 left),
    reruns `args` and checks that every method ends with the uninterrupted run's weights `straight`."""
    for method in straight:
        shutil.rmtree(run / method)
        shutil.rmtree(run / "checkpoints" / method / "step_6")
    launch(args, script=script)
    for method, weights in straight.items():
        resumed = load_file(run / method / "model.safetensors")
        for key in weights:
            assert torch.equal(weights[key], resumed[key]), (method, key)


def test_self_training_methods_train_save_the_student_and_resume_exactly(trained, tmp_path):
    output, _ = trained
    run = tmp_path / "selftrained"
    args = "--stage transfer --method selftrain tmt".split()
    args += ["--source_model", str(output / "source"), "--acte_model", str(output / "acte"), "--output_dir", str(run)]
    args += [*TINY, *"--transfer_steps 6 --checkpointing_steps 2 --resume_from_checkpoint latest".split()]
    args += ["--pseudo_label_class_quantile", "0.5"]
    stdout = launch(args, script=RESEARCH).stdout
    assert "| selftrain   |" in stdout and "| tmt         |" in stdout
    results = json.loads((run / "results.json").read_text())
    assert min(results["tmt"]["mean_abs_lambda"]) > 0 and max(results["selftrain"]["mean_abs_lambda"]) == 0
    straight = {m: load_file(run / m / "model.safetensors") for m in ("selftrain", "tmt")}
    assert not any(key.startswith("teacher") for key in straight["tmt"])  # the teacher is training-only
    assert any(key.startswith("acte.") for key in straight["tmt"])
    assert not any(key.startswith("acte.") for key in straight["selftrain"])
    card = ModelCard.load(run / "tmt" / "README.md").content
    assert "self-training" in card and "ACTE computes the focus map from the image" in card

    assert_resumed_after_step_4_equals(run, args, straight)  # the teacher comes back from the checkpoint too


def test_the_error_oracle_marks_the_source_models_wrong_pixels(trained, tmp_path, monkeypatch):
    output, _ = trained
    monkeypatch.syspath_prepend(str(REPO / "examples" / "research"))
    from variants import register_variants

    from tmt_hf import TMTForSemanticSegmentation
    from tmt_hf.data import SegmentationTransform, collate, load_domain
    from tmt_hf.methods import TransferContext, get_method

    register_variants()
    model = TMTForSemanticSegmentation.from_pretrained(output / "source")
    dataset = load_domain("synthetic/night", "train", num_samples=3, synthetic_size=(64, 128))
    context = TransferContext(steps=1, batch_size=1, image_size=(64, 128), source_model=str(output / "source"))
    images = dataset.select_columns(["image", "label"])
    cached, _, evaluation = get_method("tmt-error_oracle").add_focus_maps(images, images, images, context)
    assert evaluation is None  # no map for evaluation images: the model is scored without one
    cached.set_transform(SegmentationTransform(train=False, size=(64, 128)))
    batch = collate([cached[i] for i in range(3)])
    with torch.no_grad():
        wrong = model(pixel_values=batch["pixel_values"]).logits.argmax(dim=1) != batch["labels"]
    expected = (wrong & (batch["labels"] != 255)).float()
    assert 0 < expected.mean() < 1
    torch.testing.assert_close(batch["focus"], expected)
    # It feeds tmt's trust and mask parts; no ACTE is read, attached or saved.
    run = tmp_path / "error_oracle"
    stdout = launch(
        "--stage transfer --method selftrain tmt --tmt_parts trust mask --focus_map error_oracle".split()
        + ["--source_model", str(output / "source"), "--output_dir", str(run), *TINY],
        script=RESEARCH,
    ).stdout
    results = json.loads((run / "results.json").read_text())
    assert "| tmt-error_oracle |" in stdout and max(results["tmt-error_oracle"]["mean_abs_lambda"]) == 0
    assert not any(k.startswith("acte.") for k in load_file(run / "tmt-error_oracle" / "model.safetensors"))


def test_tma_only_fine_tuning_learns_lambda_and_carries_its_acte(trained, tmp_path):
    output, _ = trained
    common = ["--stage", "transfer", "--source_model", str(output / "source")]
    common += ["--acte_model", str(output / "acte"), *TINY]
    stdout = launch([*common, "--method", "finetune", "finetune_tma", "--output_dir", str(tmp_path / "acte")]).stdout
    assert "| finetune_tma |" in stdout
    results = json.loads((tmp_path / "acte" / "results.json").read_text())
    assert min(results["finetune_tma"]["mean_abs_lambda"]) > 0 and max(results["finetune"]["mean_abs_lambda"]) == 0
    weights = load_file(tmp_path / "acte" / "finetune_tma" / "model.safetensors")
    assert any(key.startswith("acte.") for key in weights) and not any(k.startswith("discriminator") for k in weights)
    assert "modulating self-attention" in ModelCard.load(tmp_path / "acte" / "finetune_tma" / "README.md").content
    # Its shuffled-map control; finetune, fed no map, keeps its name.
    launch(
        [*common, *"--method finetune finetune_tma --focus_map shuffled".split()]
        + ["--output_dir", str(tmp_path / "shuffled")],
        script=RESEARCH,
    )
    shuffled = json.loads((tmp_path / "shuffled" / "results.json").read_text())
    assert {"finetune", "finetune_tma-shuffled"} <= set(shuffled)
    assert shuffled["finetune"]["target_val"] == results["finetune"]["target_val"]  # the same seed, the same run


def test_unsupervised_adaptation_without_target_labels(trained, tmp_path):
    output, _ = trained
    run = tmp_path / "unsupervised"
    stdout = launch(
        "--stage transfer --method selftrain tmt --focus_map oracle".split()
        + ["--source_model", str(output / "source"), "--output_dir", str(run), *TINY, "--target_train_samples", "0"],
        script=RESEARCH,
    ).stdout
    results = json.loads((run / "results.json").read_text())
    assert results["selftrain"]["labelled_target_images"] == 0 and "| tmt-oracle  |" in stdout
    assert 0.0 <= results["selftrain"]["target_val"]["mean_iou"] <= 1.0


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
            return httpx2.Response(
                200,
                json={
                    "transfer": "basic",
                    "objects": [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "actions": {"upload": {"href": f"https://lfs.mock/{o['oid']}"}},
                        }
                        for o in objects
                    ],
                },
            )
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
        train.main(
            ["--output_dir", str(output), *TINY]
            + "--resume_from_checkpoint latest --push_to_hub --hub_model_id org/tmt-clear2night".split()
        )
    finally:
        huggingface_hub.set_client_factory(lambda: httpx2.Client())
    expected = {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "configuration_acte.py",
        "modeling_acte.py",
        "image_processing_tmt.py",
    }
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
        ["--stage", "source", "--output_dir", str(tmp_path / "out"), *TINY]
        + ["--model_name_or_path", str(tmp_path / "stock-vit")]
    )
    from tmt_hf import TMTForSemanticSegmentation

    model = TMTForSemanticSegmentation.from_pretrained(tmp_path / "out" / "source")
    assert model.config.num_hidden_layers == 4 and model.config.num_labels == 19


@pytest.mark.parametrize(
    "script, args, message",
    [
        (TRAIN, ["--stage", "transfer"], "needs a trained source model"),
        (TRAIN, ["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
        (TRAIN, ["--target_train_samples", "0"], "suits the self-training methods only, not align_patch finetune"),
        (TRAIN, ["--target_train_samples", "-1"], "--target_train_samples must be >= 0"),
        (TRAIN, ["--crop_size", "256", "512"], "larger than the largest scaled image"),
        (TRAIN, ["--method", "patch"], "--method patch: unknown; registered: align_patch, finetune"),
        (TRAIN, ["--method_file", "no_such_file.py"], "--method_file 'no_such_file.py': no such file"),
        (
            TRAIN,
            ["--focus_map", "shuffled"],
            "unrecognized arguments: --focus_map",
        ),  # a research arm, not a runner flag
        (RESEARCH, ["--focus_map", "oracle", "--target", "bdd100k"], "--focus_map oracle needs a generated target"),
        (RESEARCH, ["--method", "finetune", "--focus_map", "shuffled"], "--method finetune uses none"),
        (RESEARCH, ["--alignment_weight", "-1"], "alignment_weight must be >= 0"),
        (RESEARCH, ["--method", "selftrain", "--mask_ratio", "1.5"], "mask_ratio must lie in [0, 1]"),
        (RESEARCH, ["--method", "selftrain", "--pseudo_label_class_quantile", "2"], "class_quantile must lie"),
        (RESEARCH, ["--method", "selftrain", "--focus_map", "oracle"], "uses none"),
        (RESEARCH, ["--method", "tmt", "--focus_map", "error_oracle"], "feeds tmt's trust and mask parts only"),
        (RESEARCH, ["--method", "tmt_paper", "--focus_map", "error_oracle"], "feeds tmt's trust and mask parts only"),
    ],
)
def test_bad_flag_combinations_fail_before_work(tmp_path, script, args, message):
    result = subprocess.run(
        [sys.executable, script, "--output_dir", str(tmp_path / "x"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "x").exists()


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def pretrained_checkpoint(folder, with_processor=True):
    """A tiny ImageNet-style checkpoint in the Hub's layout (as facebook/deit-tiny-patch16-224): a
    ViTForImageClassification at 32x32 (a 2x2 position grid) and, optionally, its ViTImageProcessor with ImageNet
    mean/std."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32, num_labels=10
    )
    ViTForImageClassification(config).save_pretrained(folder)
    if with_processor:
        ViTImageProcessor(
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, size={"height": 32, "width": 32}
        ).save_pretrained(folder)
    return str(folder)


def test_pretrained_checkpoints_set_normalisation_and_the_fine_tuning_recipe(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    from train import eval_loader, image_normalization, parse_args, train_loader

    from tmt_hf import TMTForSemanticSegmentation
    from tmt_hf.data.transforms import random_global_appearance
    from tmt_hf.methods import strong_view
    from tmt_hf.optimization import fine_tuning_parameter_groups

    checkpoint = pretrained_checkpoint(tmp_path / "deit")
    args = parse_args(
        ["--model_name_or_path", checkpoint, "--output_dir", str(tmp_path / "out")]
        + "--image_size 32 48 --crop_size 32 48 --batch_size 2".split()
    )
    assert args.learning_rate == 2e-4 and parse_args(["--output_dir", str(tmp_path / "o")]).learning_rate == 5e-4
    args.image_mean, args.image_std = image_normalization(args, str(tmp_path / "out" / "source"))
    assert (args.image_mean, args.image_std) == (IMAGENET_MEAN, IMAGENET_STD)
    # Training and evaluation transforms normalise with them: an image of the mean colour becomes 0.
    mean_colour = Image.new("RGB", (48, 32), tuple(round(255 * m) for m in IMAGENET_MEAN))
    data = datasets.Dataset.from_dict(
        {"image": [mean_colour] * 2, "label": [Image.new("L", (48, 32))] * 2, "sample_index": [0, 1]}
    )
    for loader in (train_loader(data, args, seed=0)[0], eval_loader(data.select_columns(["image", "label"]), args)):
        assert next(iter(loader))["pixel_values"].abs().max() < 0.02
    # The student's strong view undoes and redoes that normalisation around the photometric augmentation.
    images = torch.rand(2, 3, 32, 48)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    view = strong_view((images - mean) / std, torch.Generator().manual_seed(3), IMAGENET_MEAN, IMAGENET_STD)
    generator = torch.Generator().manual_seed(3)
    expected = torch.stack([random_global_appearance(image, generator) for image in images])
    torch.testing.assert_close(view * std + mean, expected, atol=1e-5, rtol=0)
    # The transfer stage takes the source model's processor; a checkpoint without one falls back to 0.5, saying so.
    bare = pretrained_checkpoint(tmp_path / "bare", with_processor=False)
    args = parse_args(["--model_name_or_path", bare, "--output_dir", str(tmp_path / "o2")])
    assert image_normalization(args, "unused") == ([0.5] * 3, [0.5] * 3)
    assert "has no image processor with a mean and std" in caplog.text
    args.stage = "transfer"
    assert image_normalization(args, checkpoint) == (IMAGENET_MEAN, IMAGENET_STD)

    # Layer-wise decay over the 3 encoder layers, the new decode head at 10x, no weight decay on biases and norms.
    model = TMTForSemanticSegmentation.from_pretrained(checkpoint, num_labels=7, ignore_mismatched_sizes=True)
    rate = {
        id(p): (g["lr"], g.get("weight_decay"))
        for g in fine_tuning_parameter_groups(model, 1e-3, 0.5, 10.0)
        for p in g["params"]
    }
    named = dict(model.named_parameters())
    assert rate[id(named["vit.layers.2.attention.q_proj.weight"])] == (1e-3, None)
    assert rate[id(named["vit.layers.0.attention.q_proj.weight"])] == (1e-3 * 0.25, None)
    assert rate[id(named["vit.embeddings.patch_embeddings.projection.weight"])] == (1e-3 * 0.125, None)
    assert rate[id(named["vit.embeddings.position_embeddings"])] == (1e-3 * 0.125, 0.0)
    assert rate[id(named["vit.layers.1.layernorm_before.weight"])] == (1e-3 * 0.5, 0.0)
    assert rate[id(named["decode_head.classifier.weight"])] == (1e-2, None)
    assert len(rate) == len(named)


def test_a_pretrained_vit_adapts_camvid_like_to_idd_lite_in_its_label_space(tmp_path):
    from conftest import write_idd_lite, write_local_pairs

    from tmt_hf.data import IDD_LEVEL1_CLASSES

    checkpoint = pretrained_checkpoint(tmp_path / "deit")
    write_local_pairs(
        tmp_path / "day", {"train": 16, "validation": 4}, classes=[0, 1, 2, 5, 8, 10, 11, 13, 255], size=(60, 80)
    )  # Cityscapes train ids, like the prepared CamVid folders
    write_idd_lite(tmp_path / "idd", {"train": {"7": 6, "12": 6}, "validation": {"40": 4}}, size=(57, 80))
    output = tmp_path / "out"
    stdout = launch(
        ["--source", str(tmp_path / "day"), "--target", "idd-lite", "--data_dir", str(tmp_path / "idd")]
        + ["--label_space", "idd_level1", "--model_name_or_path", checkpoint]
        + ["--method", "finetune", "tmt", "--output_dir", str(output), *TINY]
    ).stdout
    assert "over 7 classes" in stdout and "| tmt " in stdout
    results = json.loads((output / "results.json").read_text())
    assert results["args"]["image_mean"] == IMAGENET_MEAN
    for stage in ("source", "acte", "finetune", "tmt"):
        processor = json.loads((output / stage / "preprocessor_config.json").read_text())
        assert (processor["image_mean"], processor["image_std"]) == (IMAGENET_MEAN, IMAGENET_STD), stage
    for stage in ("source", "finetune", "tmt"):
        config = json.loads((output / stage / "config.json").read_text())
        assert list(config["id2label"].values()) == list(IDD_LEVEL1_CLASSES) and config["image_size"] == [64, 128]
        assert "idd_level1: drivable, non-drivable" in (output / stage / "README.md").read_text()
    assert json.loads((output / "acte" / "config.json").read_text())["num_semantic_classes"] == 7
    assert results["finetune"]["target_val"]["classes"] == list(range(7))

    # Scored again from the saved folder (its processor, its label space), the same images give the same mIoU.
    report = subprocess.run(
        [sys.executable, str(REPO / "examples" / "evaluate.py"), "--model", str(output / "finetune")]
        + ["--data", "idd-lite", "--data_dir", str(tmp_path / "idd"), "--image_size", "64", "128"],
        capture_output=True,
        text=True,
        env=LAUNCH_ENV,
        cwd=REPO,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    report = json.loads(report.stdout[report.stdout.index("{") :])
    assert report["classes"] == list(IDD_LEVEL1_CLASSES) and report["num_images"] == 4
    assert report["mean_iou"] == pytest.approx(results["finetune"]["target_val"]["mean_iou"], abs=1e-6)

    Image.fromarray(np.random.randint(0, 255, (57, 80, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    out = run_without_tmt_hf(
        f"""
        from PIL import Image
        from transformers import pipeline
        names = {list(IDD_LEVEL1_CLASSES)!r}
        for stage in ("finetune", "tmt"):
            segmenter = pipeline("image-segmentation", model={str(output)!r} + "/" + stage, trust_remote_code=True)
            assert list(segmenter.image_processor.image_mean) == {IMAGENET_MEAN!r}
            masks = segmenter(Image.open({str(tmp_path / "street.png")!r}))
            assert masks and {{m["label"] for m in masks}} <= set(names), masks
            assert list(segmenter.model.config.id2label.values()) == names
        print("OK")
        """,
        tmp_path,
    )
    assert out.strip() == "OK"
    # The transfer stage refuses a source model of another label space.
    result = launch(
        "--stage transfer --method finetune".split()
        + ["--source", str(tmp_path / "day"), "--target", str(tmp_path / "day")]
        + ["--output_dir", str(output), "--overwrite_output_dir", *TINY],
        check=False,
    )
    assert (
        result.returncode != 0
        and "predicts ['drivable'" in result.stderr
        and "not the --label_space cityscapes" in result.stderr
    )


def test_labelled_target_images_drawn_anew_per_seed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples" / "research"))
    from train import labelled_target
    from train_variants import parse_args, random_draw

    from tmt_hf.data import load_domain

    def labels(*flags):
        args = parse_args(
            ["--output_dir", str(tmp_path)]
            + "--image_size 32 64 --crop_size 32 64 --target_train_split train[:12] --target_train_samples 4".split()
            + [*flags]
        )
        labelled, rows = labelled_target(args, random_draw(args) if args.labelled_draw == "random" else None)
        drawn = [np.asarray(row["label"]).tobytes() for row in labelled]
        assert drawn == [pool[row] for row in rows]  # the rows recorded are the rows drawn
        return drawn

    pool = [
        np.asarray(row["label"]).tobytes()
        for row in load_domain("synthetic/night", "train[:12]", synthetic_size=(32, 64))
    ]
    assert labels() == pool[:4]  # by default the first of the split
    draws = {seed: labels("--labelled_draw", "random", "--seed", seed) for seed in ("1", "2")}
    assert labels("--labelled_draw", "random", "--seed", "1") == draws["1"]  # a draw is a function of the seed
    assert draws["1"] != draws["2"] and all(len(set(d)) == 4 and set(d) <= set(pool) for d in draws.values())
    assert [pool.index(x) for x in draws["1"]] == sorted(pool.index(x) for x in draws["1"])  # kept in split order
