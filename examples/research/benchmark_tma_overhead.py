"""What does TMA cost over the ViT it modulates, on CPU? Prints JSON.

TMTModel with a focus map (the default `output_gate` form in every layer, λ = 0.5) against transformers' ViTModel with
the same weights, both with SDPA, at DeiT-Tiny and ViT-B/16 sizes (random initialisation), 512x512, batch 2. The two
run interleaved in one process, so that a busy machine slows both alike, after one warm-up forward pass of each.
`forward` runs without gradients, `forward_backward` backpropagates the mean of the last hidden state. Each entry is
the median over the repeats of the wall-clock time and of the process's CPU time; with one thread (the default) the
CPU time is the work done, which other processes on a shared machine do not inflate (a second OpenMP thread spins and
waits on its descheduled peer there). The map comes at ACTE's resolution (1/4 of the image), so TMT's time includes
checking it and pooling it to the patch grid. Target: TMT's forward within 1.05x of the ViT's. About 2 minutes.

    python examples/research/benchmark_tma_overhead.py --output examples/results/scale/tma_overhead_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch
from transformers import ViTConfig, ViTModel

from tmt_hf import TMTConfig, TMTModel

SIZES = {
    "deit_tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
    "vit_base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
TARGET_FORWARD_RATIO = 1.05


def twins(fields: dict, image_size: int) -> tuple[ViTModel, TMTModel]:
    """A ViTModel and a TMTModel (λ = 0.5 in every layer) with the same weights, SDPA attention."""
    config = TMTConfig(**fields, image_size=image_size, patch_size=16, tma_init=0.5)
    config._attn_implementation = "sdpa"
    tmt = TMTModel(config, add_pooling_layer=False).eval()
    vit_config = ViTConfig(**fields, image_size=image_size, patch_size=16)
    vit_config._attn_implementation = "sdpa"
    vit = ViTModel(vit_config, add_pooling_layer=False).eval()
    vit.load_state_dict({name: value for name, value in tmt.state_dict().items() if "tma_" not in name})
    return vit, tmt


def timed(run, backward: bool) -> tuple[float, float]:
    """(wall-clock seconds, process CPU seconds) of one pass."""
    wall, cpu = time.perf_counter(), time.process_time()
    if backward:
        run().mean().backward()
    else:
        with torch.no_grad():
            run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(fields: dict, image_size: int, batch_size: int, repeats: dict) -> dict:
    torch.manual_seed(0)
    vit, tmt = twins(fields, image_size)
    pixels = torch.randn(batch_size, 3, image_size, image_size)
    focus = torch.rand(batch_size, image_size // 4, image_size // 4)
    runs = {
        "vit": lambda: vit(pixels).last_hidden_state,
        "tmt_map": lambda: tmt(pixels, transferability_map=focus).last_hidden_state,
    }
    for run in runs.values():  # warm-up
        timed(run, backward=False)
    result = {}
    for mode, mode_repeats in repeats.items():
        times = {name: [] for name in runs}
        for _ in range(mode_repeats):
            for name, run in runs.items():
                times[name].append(timed(run, backward=mode == "forward_backward"))
                vit.zero_grad(set_to_none=True)
                tmt.zero_grad(set_to_none=True)
        result[mode] = {}
        for clock, index in (("wall", 0), ("cpu", 1)):
            medians = {name: statistics.median(t[index] for t in values) for name, values in times.items()}
            result[mode][f"vit_{clock}_s"] = medians["vit"]
            result[mode][f"tmt_map_{clock}_s"] = medians["tmt_map"]
            result[mode][f"tmt_map_over_vit_{clock}"] = medians["tmt_map"] / medians["vit"]
    forward = result["forward"]
    result["forward_within_target"] = max(forward["tmt_map_over_vit_wall"], forward["tmt_map_over_vit_cpu"]) <= (
        TARGET_FORWARD_RATIO
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="forward passes of each model")
    parser.add_argument("--backward_repeats", type=int, default=2, help="forward+backward passes of each model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {
        "device": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "repeats": {"forward": args.repeats, "forward_backward": args.backward_repeats},
        "target_forward_ratio": TARGET_FORWARD_RATIO,
        "load_average_1min_before": os.getloadavg()[0],
    }
    start = time.perf_counter()
    for name, fields in SIZES.items():
        report[name] = measure(fields, args.image_size, args.batch_size, report["repeats"])
    report["runtime_s"] = time.perf_counter() - start
    report["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return report


if __name__ == "__main__":
    main()
