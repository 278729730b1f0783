"""The runner at scale, on tiny settings: workers, mixed precision, the non-finite guard, gradient checkpointing,
full-resolution evaluation, per-condition scores, the resized cache and several processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from download_fixtures import write_acdc
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "examples" / "train.py")
TINY = "--image_size 64 128 --crop_size 64 128 --num_source_train 16".split()
TINY += "--num_target_unlabeled 8 --num_eval 8 --target_train_samples 8 --source_steps 4".split()
TINY += "--acte_steps 3 --transfer_steps 3 --batch_size 4 --dataloader_num_workers 0".split()
METHODS = ["finetune", "finetune_tma", "align_patch", "tmt_paper", "selftrain", "tmt"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def launch(args, num_processes=1, mixed_precision="no"):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    command += ["--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    command += [*(["--multi_gpu"] if num_processes > 1 else []), TRAIN, *args]  # with ACCELERATE_USE_CPU: gloo
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope="module")
def train():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train

        yield train
    finally:
        sys.path.remove(str(REPO / "examples"))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    output = tmp_path_factory.mktemp("scale") / "base"
    launch(["--output_dir", str(output), "--method", "finetune", *TINY])
    return output


def transfer(base, output, *args):
    flags = ["--stage", "transfer", "--source_model", str(base / "source"), "--acte_model", str(base / "acte")]
    return [*flags, "--output_dir", str(output), *TINY, *args]


def weights(folder):
    return load_file(Path(folder) / "model.safetensors")


def test_data_loader_workers_give_the_same_weights(train, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runs = {}
    for workers in ("0", "2"):  # 8 steps over 4 batches: two epochs, so persistent workers must see the second
        output = tmp_path / f"workers{workers}"
        train.main(
            ["--stage", "source", "--output_dir", str(output), *TINY]
            + ["--source_steps", "8", "--dataloader_num_workers", workers]
        )
        runs[workers] = weights(output / "source")
    assert all(torch.equal(runs["0"][key], runs["2"][key]) for key in runs["0"])


def test_every_method_trains_in_bf16_with_finite_losses(base, tmp_path):
    launch(transfer(base, tmp_path / "bf16", "--method", *METHODS), mixed_precision="bf16")
    launch(transfer(base, tmp_path / "fp32", "--method", "finetune"))
    bf16 = json.loads((tmp_path / "bf16" / "results.json").read_text())
    fp32 = json.loads((tmp_path / "fp32" / "results.json").read_text())
    for method in METHODS:
        assert bf16[method]["non_finite_losses_skipped"] == 0, method
        assert 0 < bf16[method]["target_val"]["mean_iou"] <= 1, method
        assert all(torch.isfinite(v.float()).all() for v in weights(tmp_path / "bf16" / method).values()), method
    # Three steps from the same source model: bf16 autocast moves finetune's score by less than the seed noise.
    assert abs(bf16["finetune"]["target_val"]["mean_iou"] - fp32["finetune"]["target_val"]["mean_iou"]) < 0.01


NON_FINITE = '''
import os
from dataclasses import dataclass

from tmt_hf.methods import FineTune, register_method


@register_method
@dataclass
class Diverging(FineTune):
    """Fine-tuning whose loss is NaN on the calls listed in DIVERGING_CALLS ("all": every call)."""

    name = "diverging"
    calls: int = 0

    def loss(self, model, batch, auxiliary=None):
        loss, logs = super().loss(model, batch, auxiliary)
        self.calls += 1
        bad = os.environ["DIVERGING_CALLS"]
        if bad == "all" or str(self.calls) in bad.split(","):
            loss = loss * float("nan")
        return loss, logs
'''


def test_non_finite_losses_skip_their_step_and_ten_in_a_row_stop(train, base, tmp_path, monkeypatch):
    (tmp_path / "diverging.py").write_text(NON_FINITE)
    flags = ["--method", "diverging", "--method_file", str(tmp_path / "diverging.py")]
    monkeypatch.setenv("DIVERGING_CALLS", "2,3")
    results = train.main(transfer(base, tmp_path / "some", *flags))
    assert results["diverging"]["non_finite_losses_skipped"] == 2  # and the run still made its 3 steps
    assert all(torch.isfinite(v.float()).all() for v in weights(tmp_path / "some" / "diverging").values())
    monkeypatch.setenv("DIVERGING_CALLS", "all")
    with pytest.raises(RuntimeError, match="10 non-finite losses in a row"):
        train.main(transfer(base, tmp_path / "all", *flags, "--transfer_steps", "20"))


def test_gradient_checkpointing_trains_the_same_weights(train, base, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, flags in (("plain", []), ("checkpointed", ["--gradient_checkpointing"])):
        train.main(transfer(base, tmp_path / name, "--method", "finetune_tma", "tmt", *flags))
    for method in ("finetune_tma", "tmt"):
        plain, checkpointed = weights(tmp_path / "plain" / method), weights(tmp_path / "checkpointed" / method)
        for key in plain:
            torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-5, rtol=1e-4, msg=f"{method} {key}")


def test_evaluation_modes_agree_where_they_must(train, base, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scores = {}
    # Generated frames are rendered at --image_size: resized, whole-frame and one covering window all score alike.
    for mode, flags in (
        ("resized", []),
        ("whole", ["--eval_mode", "whole"]),
        ("slide", ["--eval_mode", "slide", "--eval_crop", "64", "128"]),
    ):
        results = train.main(transfer(base, tmp_path / mode, "--method", "finetune", "--transfer_steps", "1", *flags))
        scores[mode] = results["finetune"]["target_val"]
    assert scores["resized"]["mean_iou"] == scores["whole"]["mean_iou"] == pytest.approx(scores["slide"]["mean_iou"])
    assert scores["resized"]["resolution"] == "64x128" and scores["whole"]["resolution"] == "native"
    assert scores["slide"]["split"] == "validation" and "windows (64, 128)" in scores["slide"]["resolution"]
    # Overlapping windows are another evaluation, still a valid one.
    slide = "--eval_mode slide --eval_crop 48 96 --eval_stride 16 32".split()
    results = train.main(transfer(base, tmp_path / "overlap", "--method", "finetune", "--transfer_steps", "1", *slide))
    assert 0 < results["finetune"]["target_val"]["mean_iou"] <= 1
    with pytest.raises(SystemExit):
        train.parse_args(["--eval_crop", "48", "96", "--output_dir", str(tmp_path / "x")])  # not for resized
    with pytest.raises(SystemExit):
        train.parse_args(["--eval_mode", "slide", "--eval_stride", "999", "999", "--output_dir", str(tmp_path / "y")])


def test_acdc_target_is_also_scored_per_condition_from_a_resized_cache(train, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    frames = {
        condition: {"train": {"GOPR0001": 4}, "val": {"GOPR0002": 2}} for condition in ("fog", "night", "rain", "snow")
    }
    write_acdc(tmp_path / "acdc", frames)
    results = train.main(
        "--stage source --source acdc --target acdc/night".split()
        + ["--data_dir", str(tmp_path / "acdc"), "--output_dir", str(tmp_path / "out"), *TINY]
        + "--resized_cache --source_steps 2".split()
    )
    assert 0 <= results["source"]["target_val"]["mean_iou"] <= 1
    assert list((tmp_path / "cache" / "tmt-hf-resized").glob("64x128-*.arrow"))  # training frames cached at 64x128
    results = train.main(
        "--stage all --method finetune tmt_paper --source acdc/fog --target acdc".split()
        + ["--data_dir", str(tmp_path / "acdc"), "--output_dir", str(tmp_path / "all"), *TINY]
        + "--source_steps 2 --batch_size 2".split()
    )
    for model in ("source", "finetune", "tmt_paper"):  # tmt_paper's evaluation batches carry ACTE's maps too
        per_condition = results[model]["target_val"]["per_condition_mean_iou"]
        assert set(per_condition) == {"fog", "night", "rain", "snow"}
        assert all(0 <= v <= 1 for v in per_condition.values())


TEACHER_CHECKSUM = '''
import os
from dataclasses import dataclass

import torch
from accelerate import PartialState

from tmt_hf.methods import SelfTrain, register_method


@register_method
@dataclass
class SelfTrainReporting(SelfTrain):
    """selftrain that writes its EMA teacher's weights after every step, one file per process."""

    name = "selftrain_reporting"

    def loss(self, model, batch, auxiliary=None):
        result = super().loss(model, batch, auxiliary)
        teacher = (model.module if hasattr(model, "module") else model).teacher
        path = os.path.join(os.environ["TEACHER_DIR"], f"teacher_rank{PartialState().process_index}.pt")
        torch.save({k: v.detach().clone() for k, v in teacher.state_dict().items()}, path)
        return result
'''


def test_every_method_runs_on_two_processes_with_one_teacher(base, tmp_path, monkeypatch):
    (tmp_path / "reporting.py").write_text(TEACHER_CHECKSUM)
    monkeypatch.setitem(ENV, "TEACHER_DIR", str(tmp_path))
    flags = ["--method", *METHODS, "selftrain_reporting", "--method_file", str(tmp_path / "reporting.py")]
    launch(transfer(base, tmp_path / "ddp", *flags, "--batch_size", "2"), num_processes=2)
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert all(0 < results[m]["target_val"]["mean_iou"] <= 1 for m in METHODS)
    teachers = [torch.load(tmp_path / f"teacher_rank{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(teachers[0][key], teachers[1][key]) for key in teachers[0])  # after the last step
    student = weights(tmp_path / "ddp" / "selftrain_reporting")
    assert any(not torch.equal(teachers[0][key], student[key]) for key in student)  # a teacher, not the student


def test_groups_are_scored_in_the_same_pass_as_scoring_each_alone():
    from accelerate import Accelerator
    from conftest import tiny_tmt_config

    from tmt_hf import TMTForSemanticSegmentation
    from tmt_hf.training import evaluate_segmenter

    torch.manual_seed(0)
    config = tiny_tmt_config()
    model = TMTForSemanticSegmentation(config)
    size = (config.image_size, config.image_size)
    pixels, labels = torch.randn(5, 3, *size), torch.randint(config.num_labels, (5, *size))
    labels[1, :4] = 255

    def batches(rows, batch_size=2):
        return [
            {"pixel_values": pixels[rows[i : i + batch_size]], "labels": labels[rows[i : i + batch_size]]}
            | {"sample_index": torch.tensor(rows[i : i + batch_size])}
            for i in range(0, len(rows), batch_size)
        ]

    accelerator, groups = Accelerator(cpu=True), {"a": [0, 2, 3], "b": [1, 4]}
    together = evaluate_segmenter(model, batches([0, 1, 2, 3, 4]), accelerator, config.num_labels, groups=groups)
    for name, rows in groups.items():
        alone = evaluate_segmenter(model, batches(rows), accelerator, config.num_labels)
        assert together["per_group_mean_iou"][name] == pytest.approx(alone["mean_iou"], abs=1e-12)
    assert (
        together["mean_iou"]
        == evaluate_segmenter(model, batches([0, 1, 2, 3, 4]), accelerator, config.num_labels)["mean_iou"]
    )
    assert together["per_group_mean_iou"]["a"] != together["per_group_mean_iou"]["b"]
