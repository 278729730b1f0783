"""What does TMA cost? TMT against HF's ViTModel (sdpa) with identical weights, measured side by side; prints JSON.

Variants, interleaved in one process (medians over `--repeats`):
  vit           transformers' ViTModel
  tmt_no_map    TMTModel without a map (must be the ViT itself)
  tmt_map       TMTModel with a focus map (the TMA bias in every layer)
  tmt_acte      ACTE's focus map + TMTModel with it (what TMTForSemanticSegmentation adds to the encoder)
Forward (no grad) and forward+backward times, and on CUDA the peak memory one forward+backward allocates on top of
the resident weights (CPU peak memory is not measured: the process's peak RSS is dominated by building the models).
Before timing, the agreements that must hold on the device: TMT without a map against the ViT, TMT's sdpa route
against its eager route with a map (fp32, and bf16 under autocast on CUDA). Also ACTE's clustering (unfold/fold) against a naive dense positions x regions implementation at growing sizes.

    python examples/research/benchmark_speed.py                        # base preset, 512x512, batch 1 and 4, CPU
    python examples/research/benchmark_speed.py --device cuda --repeats 20
"""

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import ViTConfig, ViTModel

from tmt_hf import ACTEConfig, ACTEModel, TMTConfig, TMTModel
from tmt_hf.modeling_acte import ACTEClustering
from tmt_hf.training import write_report

VARIANTS = ("vit", "tmt_no_map", "tmt_map", "tmt_acte")


def build(preset: str, size: int, device: str):
    config = TMTConfig.from_preset(preset, image_size=size, tma_init=0.5)
    config._attn_implementation = "sdpa"
    tmt = TMTModel(config, add_pooling_layer=False).to(device)
    vit_config = ViTConfig(
        **{
            k: getattr(config, k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "image_size",
                "patch_size",
            )
        }
    )
    vit_config._attn_implementation = "sdpa"
    vit = ViTModel(vit_config, add_pooling_layer=False).to(device)
    vit.load_state_dict({k: v for k, v in tmt.state_dict().items() if "tma_lambda" not in k})
    acte = ACTEModel(ACTEConfig()).to(device).eval()
    return vit, tmt, acte


def runner(variant, vit, tmt, acte, pixels, focus):
    if variant == "vit":
        return lambda: vit(pixels, interpolate_pos_encoding=True).last_hidden_state
    if variant == "tmt_no_map":
        return lambda: tmt(pixels).last_hidden_state
    if variant == "tmt_map":
        return lambda: tmt(pixels, transferability_map=focus).last_hidden_state
    return lambda: tmt(pixels, transferability_map=acte(pixels).focus_map.detach()).last_hidden_state


@torch.no_grad()
def agreement(vit, tmt, pixels, focus):
    """Max |difference| between encoder outputs that must agree on this device."""
    reference = vit(pixels, interpolate_pos_encoding=True).last_hidden_state
    result = {"tmt_no_map_vs_vit_fp32": (tmt(pixels).last_hidden_state - reference).abs().max().item()}
    dtypes = [("fp32", None)] + ([("bf16", torch.bfloat16)] if pixels.is_cuda else [])
    for name, dtype in dtypes:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            routes = {}
            for implementation in ("sdpa", "eager"):
                tmt.config._attn_implementation = implementation
                routes[implementation] = tmt(pixels, transferability_map=focus).last_hidden_state.float()
        tmt.config._attn_implementation = "sdpa"
        result[f"tmt_map_sdpa_vs_eager_{name}"] = (routes["sdpa"] - routes["eager"]).abs().max().item()
    return result


def timed(fn, device, backward):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    if backward:
        fn().float().mean().backward()
    else:
        with torch.no_grad():
            fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory_mb(fn) -> float:
    """CUDA memory one forward+backward allocates at its peak on top of what is already resident (weights, inputs)."""
    torch.cuda.synchronize()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn().float().mean().backward()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - resident) / 2**20


def dense_clustering(features, cell, iterations, kappa):
    """The recurrence with an explicit positions x regions matrix: O(h w |R|) time and memory."""
    batch, dim, height, width = features.shape
    grid_h, grid_w = height // cell, width // cell
    x = features.flatten(2).transpose(1, 2)
    arange = lambda n: torch.arange(n, device=features.device)  # noqa: E731
    py, px = torch.meshgrid(arange(height), arange(width), indexing="ij")
    cy, cx = (py // cell).flatten(), (px // cell).flatten()
    ry, rx = torch.meshgrid(arange(grid_h), arange(grid_w), indexing="ij")
    near = ((cy[:, None] - ry.flatten()[None]).abs() <= 1) & ((cx[:, None] - rx.flatten()[None]).abs() <= 1)
    a = ((cy * grid_w + cx)[:, None] == arange(grid_h * grid_w)[None]).float().expand(batch, -1, -1)
    for _ in range(iterations):
        regions = a.transpose(1, 2) @ x / a.sum(1)[..., None].clamp_min(1e-6)
        cosine = F.normalize(x, dim=-1) @ F.normalize(regions, dim=-1).transpose(1, 2)
        a = (kappa * cosine).masked_fill(~near, float("-inf")).softmax(-1)
    return a


def clustering_scaling(sizes, repeats, device):
    config = ACTEConfig(cell_size=4, num_iterations=5)
    ours = ACTEClustering(config).to(device)
    rows = []
    for height, width in sizes:
        features = torch.randn(1, 64, height, width, device=device)
        row = {"feature_size": [height, width], "positions": height * width, "regions": (height // 4) * (width // 4)}
        for name, fn in (
            ("ours_s", lambda: ours(features)),
            ("dense_s", lambda: dense_clustering(features, 4, 5, 10.0)),
        ):
            with torch.no_grad():
                fn()
                row[name] = statistics.median(timed(lambda: fn(), device, False) for _ in range(repeats))
        row["ours_us_per_position"] = 1e6 * row["ours_s"] / row["positions"]
        row["dense_us_per_position"] = 1e6 * row["dense_s"] / row["positions"]
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument(
        "--clustering_sizes",
        type=int,
        nargs="+",
        default=[32, 64, 128],
        help="feature-map heights (width = 2 x height) for the clustering scaling",
    )
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = args.device
    vit, tmt, acte = build(args.preset, args.size, device)
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "preset": args.preset,
        "size": args.size,
        "repeats": args.repeats,
        "results": {},
    }
    for batch in args.batch_sizes:
        pixels = torch.randn(batch, 3, args.size, args.size, device=device)
        focus = torch.rand(batch, args.size // 8, args.size // 8, device=device)
        report.setdefault("agreement", {})[f"batch_{batch}"] = agreement(vit, tmt, pixels, focus)
        fns = {v: runner(v, vit, tmt, acte, pixels, focus) for v in VARIANTS}
        times = {(v, mode): [] for v in VARIANTS for mode in ("forward", "forward_backward")}
        for v in VARIANTS:  # warm-up
            timed(fns[v], device, False)
        for _ in range(args.repeats):  # interleaved: every repeat runs every variant once
            for mode in ("forward", "forward_backward"):
                for v in VARIANTS:
                    times[(v, mode)].append(timed(fns[v], device, mode == "forward_backward"))
                    vit.zero_grad(set_to_none=True)
                    tmt.zero_grad(set_to_none=True)
        result = {}
        for mode in ("forward", "forward_backward"):
            base = statistics.median(times[("vit", mode)])
            result[mode] = {
                v: {
                    "median_s": statistics.median(times[(v, mode)]),
                    "ratio_to_vit": statistics.median(times[(v, mode)]) / base,
                }
                for v in VARIANTS
            }
        if device == "cuda" and not args.skip_memory:
            result["peak_memory_mb"] = {}
            for v in VARIANTS:
                vit.zero_grad(set_to_none=True)
                tmt.zero_grad(set_to_none=True)
                result["peak_memory_mb"][v] = peak_memory_mb(fns[v])
        report["results"][f"batch_{batch}"] = result
        print(json.dumps({f"batch_{batch}": result}), flush=True)
    report["clustering_scaling"] = clustering_scaling([(h, 2 * h) for h in args.clustering_sizes], 3, device)
    report["targets"] = {
        f"batch_{b}": {
            "tmt_map_forward<=1.05": r["forward"]["tmt_map"]["ratio_to_vit"] <= 1.05,
            "tmt_no_map_forward<=1.02": r["forward"]["tmt_no_map"]["ratio_to_vit"] <= 1.02,
            "tmt_acte_forward<=1.20": r["forward"]["tmt_acte"]["ratio_to_vit"] <= 1.20,
        }
        for b, r in ((int(k.split("_")[1]), v) for k, v in report["results"].items())
    }
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
