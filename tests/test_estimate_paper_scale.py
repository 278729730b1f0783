"""examples/research/estimate_paper_scale.py: its arithmetic on hand-made measurements; a clear error without them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "research" / "estimate_paper_scale.py"


def write_measurements(tmp_path, batch_size=8):
    memory = tmp_path / "memory.json"
    memory.write_text(
        json.dumps(
            {
                "rows": [],
                "summary": [
                    {
                        "device": "cpu",
                        "backbone": "base",
                        "batch_size": batch_size,
                        "gradient_checkpointing": True,
                        "time_over_finetune": {"finetune": 1.0, "finetune_tma": 1.05, "tmt_paper": 2.0, "tmt": 3.0},
                    }
                ],
            }
        )
    )
    loader = tmp_path / "loader.json"
    loader.write_text(json.dumps({"images_per_second": {"half": {"png": {"0": 99.0, "1": 10.0, "2": 20.0}}}}))
    return memory, loader


def estimate(tmp_path, memory, loader, *extra):
    output = tmp_path / "estimate.json"
    command = [sys.executable, str(SCRIPT), "--memory_json", str(memory), "--loader_json", str(loader)]
    subprocess.run(command + ["--output", str(output), *extra], check=True, capture_output=True, text=True)
    return json.loads(output.read_text())


def test_steps_take_the_slower_of_compute_and_loading(tmp_path):
    memory, loader = write_measurements(tmp_path)
    # 1024 tokens: 2·86e6·1024 + 4·12·1024²·768 FLOPs per image forward.
    forward = 2 * 86e6 * 1024 + 4 * 12 * 1024**2 * 768
    compute_ms = 1e3 * 3 * forward * 8 / (100e12 * 0.5)
    loading_ms = 1e3 * 8 / (15.0 * 4)  # the median worker rate (workers 1 and 2: 10 and 20 images/s), 4 workers
    report = estimate(tmp_path, memory, loader, "--peak_tflops", "100", "--utilisation", "0.5", "--loader_cores", "4")
    methods = report["methods"]
    assert report["assumptions"]["loader_images_per_worker_s"] == 15.0
    assert methods["finetune"]["compute_ms"] == pytest.approx(compute_ms, abs=0.1)
    assert methods["finetune"]["loader_ms"] == pytest.approx(loading_ms, abs=0.1)
    assert methods["finetune"]["step_ms"] == max(methods["finetune"]["compute_ms"], methods["finetune"]["loader_ms"])
    assert methods["tmt"]["compute_ms"] == pytest.approx(3 * compute_ms, abs=0.1)
    assert methods["tmt"]["loader_ms"] == pytest.approx(2 * loading_ms, abs=0.1)  # twice the images
    assert methods["selftrain"]["cost_over_finetune"] == 3.0  # tmt's measured cost
    assert methods["finetune_replay"]["cost_over_finetune"] == 1.5  # by its images: not timed
    assert "images" in methods["finetune_replay"]["cost_basis"]
    hours = sum(m["hours_per_run"] for m in methods.values())
    assert report["per_pair"]["transfer_hours"] == pytest.approx(3 * hours, abs=0.02)
    assert report["per_pair"]["compute_bound_hours"] <= report["per_pair"]["total_hours"]
    assert report["total_device_hours"] == pytest.approx(4 * report["per_pair"]["total_hours"], abs=0.1)


def test_missing_measurements_are_named(tmp_path):
    memory, loader = write_measurements(tmp_path, batch_size=2)
    with pytest.raises(subprocess.CalledProcessError) as failure:
        estimate(tmp_path, memory, loader)
    assert "no checkpointed ViT-B row at batch 8" in failure.value.stderr


def test_a_method_timed_in_a_run_of_its_own_takes_that_runs_ratio(tmp_path):
    memory, loader = write_measurements(tmp_path)
    replay = tmp_path / "replay.json"
    row = json.loads(memory.read_text())["summary"][0] | {
        "time_over_finetune": {"finetune": 1.0, "finetune_replay": 1.7}
    }
    replay.write_text(json.dumps({"rows": [], "summary": [row]}))
    report = estimate(tmp_path, memory, loader, "--memory_json", str(memory), str(replay))
    assert report["methods"]["finetune_replay"]["cost_over_finetune"] == 1.7
    assert report["methods"]["finetune_replay"]["cost_basis"] == "measured (finetune_replay)"
    assert report["methods"]["tmt"]["cost_over_finetune"] == 3.0  # the first file's


def test_an_unknown_method_is_named(tmp_path):
    memory, loader = write_measurements(tmp_path)
    with pytest.raises(subprocess.CalledProcessError) as failure:
        estimate(tmp_path, memory, loader, "--methods", "finetune", "my_method")
    assert "my_method" in failure.value.stderr and "known methods" in failure.value.stderr
