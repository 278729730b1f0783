"""Protocol part 10: every saved v4 quick-pair model evaluated once on its target's test split.

For each run folder `outputs/v4/runs/<finetune|oracle|alltarget>-<pair>-seed<S>` (train.py's output), the run's
model and the source model it started from are evaluated with `examples/evaluate.py` on 100 test scenes (the oracle
models with the generator's shift mask as their map). The run's results.json is written again to
`examples/results/v4_test/results/` with these test metrics in place of its validation ones, so that
`examples/results/v3_benchmark/summarise.py` reads the folder unchanged. Runs already written are skipped.

    python examples/results/v4_headroom_validation/evaluate_test.py outputs/v4/runs

Before any test scene is read, it checks that evaluate.py reproduces one run's committed validation mIoU.
"""

import glob
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
from evaluate import main as evaluate  # noqa: E402

OUTPUT = os.path.join(HERE, "..", "v4_test", "results")
NUM_SCENES = 100  # train.py's --num_eval


def metrics_on(model: str, target: str, split: str, oracle: bool) -> dict:
    """train.py's `target_val` entry for `model` on `split` of `target`."""
    argv = ["--model", model, "--data", target, "--split", split, "--num_samples", str(NUM_SCENES)]
    report = evaluate(argv + (["--shift_mask_as_map"] if oracle else []))
    return {
        "mean_iou": report["mean_iou"],
        "mean_accuracy": report["mean_accuracy"],
        "overall_accuracy": report["overall_accuracy"],
        "per_category_iou": list(report["per_category_iou"].values()),
    }


def main(runs_folder: str):
    torch.set_num_threads(1)  # shares the machine with the training runs
    check = json.load(open(os.path.join(HERE, "results", "finetune-clear2night-seed0.json")))
    reproduced = metrics_on(
        os.path.join(runs_folder, "finetune-clear2night-seed0", "finetune"),
        check["args"]["target"],
        "validation",
        oracle=False,
    )
    difference = 100 * abs(reproduced["mean_iou"] - check["finetune"]["target_val"]["mean_iou"])
    if difference > 0.01:
        raise SystemExit(f"evaluate.py gives {difference:.3f} mIoU points off the committed validation result")
    os.makedirs(OUTPUT, exist_ok=True)
    source_only = {}
    for folder in sorted(glob.glob(os.path.join(runs_folder, "*-*2*-seed*"))):
        name = os.path.basename(folder)
        kind = name.split("-", 1)[0]
        destination = os.path.join(OUTPUT, f"{name}.json")
        if kind not in ("finetune", "oracle", "alltarget") or os.path.exists(destination):
            continue
        if not os.path.exists(os.path.join(folder, "results.json")):
            print(f"skipped {name}: not finished")
            continue
        results = json.load(open(os.path.join(folder, "results.json")))
        args = results["args"]
        method = "oracle" if kind == "oracle" else "finetune"
        results[method]["target_val"] = metrics_on(
            os.path.join(folder, method), args["target"], "test", oracle=kind == "oracle"
        )
        key = (args["source_model"], args["target"])
        if key not in source_only:
            source_only[key] = metrics_on(args["source_model"], args["target"], "test", oracle=False)
        results["source"]["target_val"] = source_only[key]
        args["eval_split"] = "test"
        with open(destination, "w") as f:
            json.dump(results, f, indent=1)
        print(f"{name}: test mIoU {100 * results[method]['target_val']['mean_iou']:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
