"""
Does the data loader keep up at scale? Training crops per second from Cityscapes-sized PNG frames through
`torch.utils.data.DataLoader`, read from the source files and from `tmt_hf.data.resized_cache`; prints JSON.

Frames: `--frames` generated scenes (`generate_scene` at a quarter of `--size`, upscaled bicubically, about Cityscapes'
2 MB per 2048x1024 PNG) and their labels, written as a local-folder dataset and read with `load_domain` (file paths,
decoded on access). Two settings, each with `examples/train.py`'s training transform (scale 0.75-1.5, random crop and
flip, appearance jitter):
  native  --image_size the frames' size (1024 2048) and --crop_size (512 1024)
  half    --image_size half the frames' size (512 1024) and a square crop of --crop_size's height (512 512)
Sources: `uncached` (the PNG files), `png` (the cache at --image_size, PNG), `tiff` (the cache uncompressed, native
only). Every (setting, source, --workers count) is a DataLoader with persistent workers (started by a warm-up epoch)
and batches of --batch_size; the configurations' epochs are timed in turn, --repeats rounds, and the median is
reported. All configurations transform the same crops; the cache builds (one process) are timed separately. The
main process runs `--main_threads` torch threads (default 1, as each worker: two threads on a shared 2-core CPU made
the transform many times slower, threads waiting on each other), so `num_workers=0` is one worker's work in-process.

    python examples/research/benchmark_loader.py --output examples/results/scale/loader_cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from tmt_hf.data import SegmentationTransform, collate, generate_scene, load_domain, resized_cache
from tmt_hf.training import indexed

SCALE_RANGE = (0.75, 1.5)  # examples/train.py's


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048], help="frame height and width")
    parser.add_argument(
        "--crop_size", type=int, nargs=2, default=[512, 1024], help="training crop of the native setting"
    )
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="num_workers values")
    parser.add_argument("--repeats", type=int, default=4, help="timed epochs per configuration")
    parser.add_argument(
        "--main_threads", type=int, default=1, help="torch threads of the main process (num_workers=0); workers use 1"
    )
    parser.add_argument("--output", help="also write the JSON here")
    return parser.parse_args(argv)


def write_frames(root: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """A local-folder dataset `train/images|labels/frame_<n>.png` of generated scenes upscaled to `size`."""
    height, width = size
    paths = []
    for folder in ("images", "labels"):
        (root / "train" / folder).mkdir(parents=True)
    for index in range(count):
        scene = generate_scene(index, "clear", max(height // 4, 32), max(width // 4, 64))
        image_path = root / "train" / "images" / f"frame_{index:03d}.png"
        Image.fromarray(scene["image"]).resize((width, height), Image.BICUBIC).save(image_path, compress_level=1)
        label = Image.fromarray(scene["label"], mode="L").resize((width, height), Image.NEAREST)
        label.save(root / "train" / "labels" / f"frame_{index:03d}.png")
        paths.append(image_path)
    return paths


def timed_cache(dataset, size, folder, compress):
    """The cached dataset, its build and reuse seconds and its file's size in MB."""
    start = time.perf_counter()
    resized_cache(dataset, size, cache_dir=folder, compress=compress)
    built = time.perf_counter() - start
    start = time.perf_counter()
    cached = resized_cache(dataset, size, cache_dir=folder, compress=compress)
    reused = time.perf_counter() - start
    megabytes = sum(os.path.getsize(f["filename"]) for f in cached.cache_files) / 1e6
    return cached, {
        "build_seconds": round(built, 2),
        "reuse_seconds": round(reused, 3),
        "megabytes": round(megabytes, 1),
    }


def epoch_seconds(loader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.main_threads)
    native = tuple(args.size)
    settings = {
        "native": {"image_size": native, "crop_size": tuple(args.crop_size)},
        "half": {"image_size": (native[0] // 2, native[1] // 2), "crop_size": (args.crop_size[0],) * 2},
    }
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "frames"
        start = time.perf_counter()
        frames = write_frames(root, args.frames, native)
        write_seconds = time.perf_counter() - start
        dataset = indexed(load_domain(str(root), "train"))  # a `sample_index`: the same crops in every configuration
        caches, loaders = {}, {}
        for name, setting in settings.items():
            sources = {"uncached": dataset}
            for compress in (True, False) if name == "native" else (True,):
                source = "png" if compress else "tiff"
                folder = os.path.join(scratch, "cache")
                sources[source], caches[f"{name}/{source}"] = timed_cache(
                    dataset, setting["image_size"], folder, compress
                )
            transform = SegmentationTransform(
                train=True,
                size=setting["image_size"],
                crop_size=setting["crop_size"],
                scale_range=SCALE_RANGE,
                seed=0,
                appearance_jitter=True,
            )
            for source, rows in sources.items():
                for workers in args.workers:
                    loaders[name, source, workers] = DataLoader(
                        rows.with_transform(transform),
                        batch_size=args.batch_size,
                        collate_fn=collate,
                        num_workers=workers,
                        persistent_workers=workers > 0,
                    )
        seconds = {key: [] for key in loaders}
        for loader in loaders.values():
            if loader.num_workers:  # a warm-up epoch starts the workers
                epoch_seconds(loader)
        for _ in range(args.repeats):
            for key, loader in loaders.items():
                seconds[key].append(epoch_seconds(loader))
        rates = {}
        for (name, source, workers), times in seconds.items():
            rates.setdefault(name, {}).setdefault(source, {})[str(workers)] = round(
                args.frames / statistics.median(times), 2
            )
        report = {
            "command": "python examples/research/benchmark_loader.py " + " ".join(argv),
            "machine": {
                "cpu_count": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "torch_threads_main_process": torch.get_num_threads(),
                "load_average_1_5_15min": {"start": load_start, "end": os.getloadavg()},
            },
            "frames": {
                "count": args.frames,
                "size": list(native),
                "image_png_megabytes_mean": round(sum(f.stat().st_size for f in frames) / len(frames) / 1e6, 2),
                "write_seconds": round(write_seconds, 1),
            },
            "settings": {
                name: {key: list(value) for key, value in setting.items()}
                | {"scale_range": list(SCALE_RANGE), "appearance_jitter": True}
                for name, setting in settings.items()
            },
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "cache": caches,
            "images_per_second": rates,
            "epoch_seconds": {"/".join(map(str, key)): [round(s, 3) for s in times] for key, times in seconds.items()},
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
