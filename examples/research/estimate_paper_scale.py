"""What testing TMT's claim at the paper's scale would cost in device time, estimated from what was measured here.

    python examples/research/estimate_paper_scale.py --output examples/results/scale/paper_scale_estimate.json

A step's compute is ViT-B/16's FLOPs for its crops (2·parameters·tokens + 4·layers·tokens²·width per image forward, 3×
that to train) at a fraction of the GPU's bf16 peak, times each method's cost over `finetune` measured side by side on
the CPU at ViT-B, batch 8 (`benchmark_memory.py`'s rows: `memory_cpu.json`, and `replay_cpu.json` for
`finetune_replay`, timed in a run of its own beside `finetune`). Its data are the images it draws per step at the
per-worker rate `benchmark_loader.py` measured (a PNG cache at 512×1024), one worker per spare core. A step takes the
longer of the two. Methods the memory benchmark did not time take a measured method's ratio scaled by the images they
train on (named in `cost_basis`). Prints JSON; every input is an argument or a committed file.
"""

import argparse
import json
import os

import numpy as np

from tmt_hf.methods import TRANSFER_METHODS, TransferContext, get_method
from tmt_hf.training import write_report

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results", "scale")
VIT_BASE = {"parameters": 86e6, "layers": 12, "width": 768, "patch": 16}


def measured_ratios(memory_jsons, batch_size):
    """
    Each method's step time over finetune's, ViT-B at `batch_size`, from the memory benchmark's checkpointed row of
    each file (each ratio measured side by side with finetune in its own run; an earlier file's ratio is kept).
    """
    ratios = {}
    for memory_json in memory_jsons:
        with open(memory_json) as f:
            summary = json.load(f)["summary"]
        rows = [
            s
            for s in summary
            if s["device"] == "cpu"
            and s["backbone"] == "base"
            and s["batch_size"] == batch_size
            and s["gradient_checkpointing"]
        ]
        if not rows:
            raise ValueError(f"{memory_json} has no checkpointed ViT-B row at batch {batch_size}")
        ratios = rows[0]["time_over_finetune"] | ratios
    return ratios


def images_per_step(method, batch_size):
    """The images `method` trains on per step over finetune's `batch_size`: its `auxiliary_counts` added."""
    context = TransferContext(steps=1, batch_size=batch_size, image_size=(1, 1))
    return (batch_size + sum(get_method(method).auxiliary_counts(context))) / batch_size


def method_cost(method, ratios, images):
    """(cost over finetune, where it comes from): measured where timed, else `images`, its images over finetune's."""
    if method in ratios:
        return ratios[method], f"measured ({method})"
    if method == "selftrain":  # tmt without TMA: the same images, teacher and masking
        return ratios["tmt"], "measured (tmt: the same images and teacher)"
    return images, "by the images it trains on (finetune = 1)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--memory_json",
        nargs="+",
        default=[os.path.join(RESULTS, name) for name in ("memory_cpu.json", "replay_cpu.json")],
        help="benchmark_memory.py outputs; a method's ratio comes from the first file that timed it",
    )
    parser.add_argument("--loader_json", default=os.path.join(RESULTS, "loader_cpu.json"))
    parser.add_argument("--crop_size", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--utilisation", type=float, default=0.4, help="the fraction of peak a ViT-B step reaches")
    parser.add_argument("--loader_cores", type=int, default=15, help="data-loader workers (a 16-core GPU host)")
    parser.add_argument("--source_steps", type=int, default=40000)
    parser.add_argument("--acte_steps", type=int, default=10000)
    parser.add_argument("--transfer_steps", type=int, default=10000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument(
        "--methods", nargs="+", default=["finetune", "finetune_replay", "selftrain", "tmt", "tmt-shuffled", "tmt_paper"]
    )
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args()
    unknown = sorted(m for m in args.methods if m.removesuffix("-shuffled") not in TRANSFER_METHODS)
    if unknown:
        parser.error(f"no registered method {unknown}; known methods: {sorted(TRANSFER_METHODS)}")

    tokens = (args.crop_size[0] // VIT_BASE["patch"]) * (args.crop_size[1] // VIT_BASE["patch"])
    forward = 2 * VIT_BASE["parameters"] * tokens + 4 * VIT_BASE["layers"] * tokens**2 * VIT_BASE["width"]
    finetune_compute_s = 3 * forward * args.batch_size / (args.peak_tflops * 1e12 * args.utilisation)
    with open(args.loader_json) as f:
        loader_rates = json.load(f)["images_per_second"]["half"]["png"]
    images_per_worker_s = float(np.median([loader_rates[w] for w in loader_rates if w != "0"]))
    ratios = measured_ratios(args.memory_json, args.batch_size)

    def step(cost, images):
        compute = finetune_compute_s * cost
        loading = images * args.batch_size / (images_per_worker_s * args.loader_cores)
        return {
            "compute_ms": round(1e3 * compute, 1),
            "loader_ms": round(1e3 * loading, 1),
            "step_ms": round(1e3 * max(compute, loading), 1),
        }

    methods = {}
    for method in args.methods:
        base = method.removesuffix("-shuffled")  # a shuffled map costs what the map costs
        images = images_per_step(base, args.batch_size)
        cost, basis = method_cost(base, ratios, images)
        methods[method] = step(cost, images) | {"cost_over_finetune": round(cost, 2), "cost_basis": basis}
        methods[method]["hours_per_run"] = round(methods[method]["step_ms"] * args.transfer_steps / 3.6e6, 2)
    source = step(1.0, 1.0)
    per_pair = {
        "source_hours": round(source["step_ms"] * args.source_steps / 3.6e6, 2),
        "acte_hours_at_most": round(source["step_ms"] * args.acte_steps / 3.6e6, 2),  # ACTE's encoder is far smaller
        "transfer_hours": round(args.seeds * sum(m["hours_per_run"] for m in methods.values()), 2),
    }
    per_pair["total_hours"] = round(sum(per_pair.values()), 2)
    compute_ms = args.seeds * args.transfer_steps * sum(m["compute_ms"] for m in methods.values())
    compute_ms += (args.source_steps + args.acte_steps) * source["compute_ms"]
    per_pair["compute_bound_hours"] = round(compute_ms / 3.6e6, 2)  # with a loader that keeps up
    write_report(
        {
            "command": "python examples/research/estimate_paper_scale.py",
            "assumptions": {
                "backbone": "ViT-B/16",
                "crop_size": list(args.crop_size),
                "tokens": tokens,
                "batch_size": args.batch_size,
                "forward_gflops_per_image": round(forward / 1e9, 1),
                "peak_tflops": args.peak_tflops,
                "utilisation": args.utilisation,
                "loader_images_per_worker_s": images_per_worker_s,
                "loader_cores": args.loader_cores,
                "steps": {"source": args.source_steps, "acte": args.acte_steps, "transfer": args.transfer_steps},
                "seeds": args.seeds,
                "pairs": args.pairs,
            },
            "source_step": source,
            "methods": methods,
            "per_pair": per_pair,
            "total_device_hours": round(args.pairs * per_pair["total_hours"], 1),
        },
        args.output,
    )


if __name__ == "__main__":
    main()
