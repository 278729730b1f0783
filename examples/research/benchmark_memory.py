"""What does a transfer method cost per optimizer step, in peak memory and seconds? Prints JSON.

Each configuration (backbone, batch size, gradient checkpointing, method) runs in a fresh subprocess the transfer step
of `examples/train.py`: the segmenter (random initialisation), `activation_checkpointing_enable()` if checkpointing
is on, the method's `wrap` (the map methods get an ACTE, random initialisation and `ACTEConfig` defaults, which TMA's
methods attach), its `parameter_groups` into AdamW, then per step its `loss` (under bf16 autocast with
`--mixed_precision bf16`), `backward`, gradient clipping at 1, `optimizer.step` and `zero_grad`. The draw, the same
at every step, has the runner's shapes: `--batch_sizes` labelled target images, their labels and, for the map methods,
focus maps at the crop size, on the device; for the methods with auxiliary images, the labelled source and unlabelled
target images `auxiliary_counts` asks for, with their domain labels, on the CPU, where the runner draws them.

Backbones: `tiny` is DeiT-Tiny's size (width 192, 12 layers, 3 heads), `base` ViT-B/16's (768, 12, 12), patch 16.

Memory, over all the steps: on CUDA `torch.cuda.max_memory_allocated`, on CPU the subprocess's peak resident memory
(`ru_maxrss`). `peak_memory_mib` is the total, `step_peak_mib` the peak minus what was resident just before the first
step (the weights, the draw and, on CPU, the process itself). Training peaks from the second step on (the first
allocates AdamW's state after its backward pass): keep `--warmup` at 1 or more. `setup_peak_mib` (CPU) is `ru_maxrss`
before the first step; were it to reach `peak_memory_mib`, building the models would hide the steps' peak. Time: the
median wall-clock seconds of the `--steps` steps after the `--warmup` ones (on CPU also the process's CPU seconds).

Rows go to `--output` as each configuration finishes; a rerun skips the configurations it holds, whatever their
`--steps` (failed ones, e.g. out of memory, are tried again), so backbones can be run with their own `--steps`. The
summary gives, per backbone, batch size and checkpointing, each method's time and total peak memory over `finetune`'s;
the target of `finetune_tma` (TMA alone) is at most 1.10x `finetune`'s time.

    python examples/research/benchmark_memory.py --backbones tiny --steps 3 --warmup 1 --threads 2 \\
        --output examples/results/scale/memory_cpu.json
    python examples/research/benchmark_memory.py --backbones base --steps 1 --warmup 1 --threads 2 \\
        --output examples/results/scale/memory_cpu.json
    python examples/research/benchmark_memory.py --device cuda --mixed_precision bf16 --steps 10 --warmup 3 \\
        --output examples/results/scale/memory_cuda.json
"""

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import psutil
import torch

from tmt_hf import ACTEConfig, ACTEModel, TMTConfig, TMTForSemanticSegmentation
from tmt_hf.methods import TRANSFER_METHODS, TransferContext, get_method
from tmt_hf.training import write_report

BACKBONES = {
    "tiny": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}
METHODS = ("finetune", "finetune_tma", "finetune_replay", "tmt_paper", "tmt")
KEY_FIELDS = ("device", "mixed_precision", "size", "backbone", "batch_size", "gradient_checkpointing", "method")
GROUP_FIELDS = KEY_FIELDS[:-1]  # a summary entry's: all but the method
LEARNING_RATE, WEIGHT_DECAY = 2e-4, 0.01  # examples/train.py's transfer stage
TARGET_TMA_TIME_RATIO = 1.10
MIB = 2**20


def synthetic_images(count: int, size: tuple[int, int], num_labels: int, focus: bool, labelled: bool = True) -> dict:
    """Normalised random images, random labels (all 255 if not `labelled`) and, if `focus`, maps in [0, 1]."""
    batch = {"pixel_values": torch.randn(count, 3, *size), "labels": torch.randint(num_labels, (count, *size))}
    if not labelled:
        batch["labels"].fill_(255)
    if focus:
        batch["focus"] = torch.rand(count, *size)
    return batch


def synthetic_auxiliary(counts: tuple[int, int], size, num_labels: int, focus: bool) -> dict:
    """The labelled source then unlabelled target images of an auxiliary draw, with their `domain_labels` 0 / 1."""
    parts = [synthetic_images(count, size, num_labels, focus, labelled=d == 0) for d, count in enumerate(counts)]
    draw = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    draw["domain_labels"] = torch.tensor([0] * counts[0] + [1] * counts[1])
    return draw


def peak_rss() -> int:
    """The process's peak resident memory in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure(args) -> dict:
    """The row of the one configuration in `args`, measured in this process."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = tuple(args.size)
    method = get_method(args.methods[0])
    batch_size = args.batch_sizes[0]
    context = TransferContext(steps=args.warmup + args.steps, batch_size=batch_size, image_size=size)
    if method.uses_focus_map:
        context.acte = ACTEModel(ACTEConfig())
    model = TMTForSemanticSegmentation(TMTConfig(**BACKBONES[args.backbones[0]], patch_size=16))
    model.vit.resize_position_embeddings(size)  # as the runner does for a pretrained checkpoint
    if args.checkpointing[0] == "on":
        model.activation_checkpointing_enable()
    wrapped = method.wrap(model, context).to(device).train()
    optimizer = torch.optim.AdamW(
        method.parameter_groups(wrapped, LEARNING_RATE), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
    )
    num_labels = model.config.num_labels
    batch = synthetic_images(batch_size, size, num_labels, method.uses_focus_map)
    batch = {key: value.to(device) for key, value in batch.items()}
    counts = method.auxiliary_counts(context)  # (0, 0) without auxiliary images
    auxiliary = None
    if method.auxiliary_images:
        auxiliary = synthetic_auxiliary(counts, size, num_labels, method.uses_focus_map)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.mixed_precision == "bf16"):
            loss, _ = method.loss(wrapped, batch, auxiliary)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(wrapped.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    gc.collect()
    row = {"images_per_step": batch_size + sum(counts)}
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        row["device_name"] = torch.cuda.get_device_name()
    else:
        before = psutil.Process().memory_info().rss
        row |= {"device_name": platform.processor() or platform.machine(), "setup_peak_mib": peak_rss() / MIB}
        row |= {"threads": torch.get_num_threads(), "load_average_1min_before": os.getloadavg()[0]}
    wall, cpu = [], []
    for _ in range(args.warmup + args.steps):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss()
    row |= {
        "peak_memory_mib": peak / MIB,
        "step_peak_mib": (peak - before) / MIB,
        "memory_before_steps_mib": before / MIB,
        "seconds_per_step": statistics.median(wall[args.warmup :]),
        "step_seconds": wall,
        "steps": args.steps,
        "warmup": args.warmup,
        "torch": torch.__version__,
    }
    if device.type == "cpu":
        row["cpu_seconds_per_step"] = statistics.median(cpu[args.warmup :])
    return row


def run_configuration(args, key: dict) -> dict:
    """Measures one configuration in a fresh subprocess; a failure gives a row with its `error`."""
    command = [sys.executable, os.path.abspath(__file__), "--in_process", "--device", key["device"]]
    command += ["--mixed_precision", key["mixed_precision"], "--size", *map(str, key["size"])]
    command += ["--backbones", key["backbone"], "--batch_sizes", str(key["batch_size"]), "--methods", key["method"]]
    command += ["--checkpointing", "on" if key["gradient_checkpointing"] else "off"]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--threads", str(args.threads)] if args.threads else []
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {**key, "error": f"exit code {result.returncode}: {result.stderr[-2000:]}"}
    return {**key, **json.loads(result.stdout.strip().splitlines()[-1])}


def summarise(rows: list[dict]) -> list[dict]:
    """Per device, precision, size, backbone, batch size and checkpointing: each method's cost over `finetune`'s."""
    groups = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault(json.dumps([row[k] for k in GROUP_FIELDS]), {})[row["method"]] = row
    summary = []
    for methods in groups.values():
        first = next(iter(methods.values()))
        entry = {k: first[k] for k in GROUP_FIELDS}
        entry["seconds_per_step"] = {m: row["seconds_per_step"] for m, row in methods.items()}
        entry["peak_memory_mib"] = {m: row["peak_memory_mib"] for m, row in methods.items()}
        if "finetune" in methods:
            base = methods["finetune"]
            entry["time_over_finetune"] = {
                m: row["seconds_per_step"] / base["seconds_per_step"] for m, row in methods.items()
            }
            entry["memory_over_finetune"] = {
                m: row["peak_memory_mib"] / base["peak_memory_mib"] for m, row in methods.items()
            }
            if "finetune_tma" in methods:
                ratio = entry["time_over_finetune"]["finetune_tma"]
                entry["finetune_tma_within_target"] = ratio <= TARGET_TMA_TIME_RATIO
        summary.append(entry)
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--mixed_precision", choices=["no", "bf16"], default="no", help="bf16: autocast the loss")
    parser.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), default=["tiny", "base"])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[2, 8], help="labelled target images per step")
    parser.add_argument("--methods", nargs="+", choices=sorted(TRANSFER_METHODS), default=list(METHODS))
    parser.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"), help="the crop")
    parser.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per subprocess (default: torch's)")
    parser.add_argument("--output", default=None, help="the JSON rows and summary, kept and extended on a rerun")
    parser.add_argument(
        "--in_process", action="store_true", help="measure the one configuration given here and print its row"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    lists = (args.backbones, args.batch_sizes, args.methods, args.checkpointing)
    if args.in_process and any(len(values) != 1 for values in lists):
        parser.error("--in_process measures one configuration: give one backbone, batch size, method, checkpointing")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.in_process:
        print(json.dumps(measure(args)))
        return
    rows = {}
    if args.output and os.path.exists(args.output):
        with open(args.output) as f:
            rows = {json.dumps([row[k] for k in KEY_FIELDS]): row for row in json.load(f)["rows"]}
    configurations = itertools.product(args.backbones, args.batch_sizes, args.checkpointing, args.methods)
    for backbone, batch_size, checkpointing, method in configurations:
        key = {"device": args.device, "mixed_precision": args.mixed_precision, "size": list(args.size)}
        key |= {"backbone": backbone, "batch_size": batch_size, "gradient_checkpointing": checkpointing == "on"}
        key["method"] = method
        name = json.dumps([key[k] for k in KEY_FIELDS])
        if name in rows and "error" not in rows[name]:
            continue
        rows[name] = row = run_configuration(args, key)
        outcome = row.get("error") or f"{row['seconds_per_step']:.3f} s/step, peak {row['peak_memory_mib']:.0f} MiB"
        print(f"{backbone} batch {batch_size} checkpointing {checkpointing} {method}: {outcome}", file=sys.stderr)
        if args.output:
            write_report(
                {"rows": list(rows.values()), "summary": summarise(list(rows.values()))}, args.output, echo=False
            )
    report = {"rows": list(rows.values()), "summary": summarise(list(rows.values()))}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
