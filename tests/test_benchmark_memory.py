"""examples/research/benchmark_memory.py on a tiny configuration: its rows, its ratios and its resume (not timed)."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "research" / "benchmark_memory.py"
METHODS = ["finetune", "finetune_tma", "tmt"]
ARGS = ["--size", "32", "32", "--backbones", "tiny", "--batch_sizes", "2", "--steps", "1", "--warmup", "0"]
ARGS += ["--methods", *METHODS, "--threads", "1"]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_ratios_and_resume(tmp_path, monkeypatch):
    benchmark = load_benchmark()
    output = tmp_path / "memory.json"
    args = [*ARGS, "--output", str(output)]
    report = benchmark.main(args)  # each configuration in its own subprocess
    assert json.loads(output.read_text()) == report
    rows = report["rows"]
    expected = {(method, checkpointing) for method in METHODS for checkpointing in (False, True)}
    assert {(row["method"], row["gradient_checkpointing"]) for row in rows} == expected and len(rows) == 6
    for row in rows:
        assert "error" not in row, row["error"]
        assert (row["device"], row["size"], row["batch_size"], row["steps"]) == ("cpu", [32, 32], 2, 1)
        assert row["peak_memory_mib"] > row["step_peak_mib"] > 0 and row["seconds_per_step"] > 0
        assert row["images_per_step"] == (4 if row["method"] == "tmt" else 2)  # tmt draws 1 source + 1 target
    assert [entry["gradient_checkpointing"] for entry in report["summary"]] == [False, True]
    for entry in report["summary"]:
        seconds, ratio = entry["seconds_per_step"], entry["time_over_finetune"]["finetune_tma"]
        assert ratio == pytest.approx(seconds["finetune_tma"] / seconds["finetune"])
        assert entry["finetune_tma_within_target"] == (ratio <= 1.10)

    def measured(*_):
        raise AssertionError("a finished configuration was measured again")

    monkeypatch.setattr(benchmark, "run_configuration", measured)
    assert benchmark.main(args)["rows"] == rows  # a rerun skips finished configurations
    monkeypatch.undo()

    failed = [{**rows[0], "error": "exit code -9"}, *rows[1:]]  # e.g. killed out of memory: measured again
    output.write_text(json.dumps({"rows": failed, "summary": []}))
    rerun = benchmark.main(args)["rows"]
    assert rerun[1:] == rows[1:] and "error" not in rerun[0] and rerun[0]["method"] == rows[0]["method"]
    assert json.loads(output.read_text())["rows"] == rerun
