"""
The runner's behaviour, pinned: every transfer method and protocol arm on a tiny generated run reproduces, to 1e-6,
the metrics the single-file train.py gave before the methods moved into `tmt_hf.methods` and the arms into
`examples/research/` (`tests/fixtures/runner_metrics.json`, recorded at commit c5b929e with these arms' flags through
`examples/train.py`, one CPU thread).
"""

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXPECTED = json.loads((REPO / "tests" / "fixtures" / "runner_metrics.json").read_text())
TINY = "--image_size 64 128 --crop_size 64 128 --num_source_train 16 --num_target_unlabeled 8 --num_eval 8".split()
TINY += "--target_train_samples 8 --source_steps 4 --acte_steps 3 --transfer_steps 3 --batch_size 4".split()
ARMS = {
    "methods": ["--method", "finetune", "finetune_tma", "align_patch", "tmt_paper", "selftrain", "tmt"],
    "shuffled": ["--method", "finetune_tma", "tmt_paper", "tmt", "--focus_map", "shuffled"],
    "oracle": ["--method", "finetune_tma", "tmt_paper", "tmt", "--focus_map", "oracle"],
    "error_oracle": ["--method", "tmt", "--focus_map", "error_oracle", "--tmt_parts", "trust", "mask"],
    "parts": ["--method", "tmt", "--tmt_parts", "tma", "trust"],
    "knobs": ["--method", "selftrain", "tmt", "--pseudo_label_class_quantile", "0.5", "--mask_ratio", "0.25"],
    "alignment_weight": ["--method", "align_patch", "tmt_paper", "--alignment_weight", "0.3"],
    "labelled_draw": ["--method", "finetune", "tmt", "--labelled_draw", "random", "--seed", "1"],
    "labels0": ["--method", "selftrain", "tmt", "--target_train_samples", "0"],
}


@pytest.fixture(scope="module")
def research_entry():
    sys.path.insert(0, str(REPO / "examples" / "research"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import train_variants

        yield train_variants
    finally:
        torch.set_num_threads(threads)
        sys.path.remove(str(REPO / "examples" / "research"))


@pytest.fixture(scope="module")
def base(research_entry, tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence")
    research_entry.main(["--stage", "source", "--output_dir", str(out / "base"), *TINY])
    research_entry.main(["--stage", "acte", "--output_dir", str(out / "base"), *TINY])
    return out


def test_every_arm_reproduces_the_single_file_runner(research_entry, base, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    flags = ["--stage", "transfer", "--source_model", str(base / "base" / "source")]
    flags += ["--acte_model", str(base / "base" / "acte")]
    mismatches = []
    for arm, argv in ARMS.items():
        results = research_entry.main([*TINY, *flags, "--output_dir", str(base / arm), *argv])
        assert set(EXPECTED[arm]) == {
            k for k in results if k not in ("args", "generator_version", "wall_time_s", "source")
        }
        for name, expected in EXPECTED[arm].items():
            got = results[name]
            pairs = [
                (expected["mean_iou"], got["target_val"]["mean_iou"]),
                (expected["overall_accuracy"], got["target_val"]["overall_accuracy"]),
            ]
            pairs += list(zip(expected["mean_abs_lambda"], got["mean_abs_lambda"]))
            pairs += [
                (a, b)
                for a, b in zip(expected["per_category_iou"], got["target_val"]["per_category_iou"])
                if a is not None
            ]
            if any(b is None or abs(a - b) > 1e-6 for a, b in pairs):
                mismatches.append((arm, name, expected["overall_accuracy"], got["target_val"]["overall_accuracy"]))
    assert not mismatches, mismatches
