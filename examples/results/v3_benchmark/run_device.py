"""The benchmark on one GPU machine, as run for examples/results/v3_benchmark (generator v3), in priority order.

Every (pair, seed, method) is its own train.py process, so that a machine taken back mid-run still returns every
finished run; processes share the GPU (`--jobs` at a time). Order: the source models, then seed by seed the four quick
pairs (ACTE; finetune, oracle + focus alignment, align_patch, TMT + focus alignment), then the all-target headroom
runs (seed 0), then the other 16 pairs with seed 0 (ACTE, finetune, TMT + focus alignment). Each finished run's
results.json is copied to OUTPUT/results/; summarise with examples/results/v3_benchmark/summarise.py.

    python examples/results/v3_benchmark/run_device.py --output /tmp/bench --jobs 14
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PAIRS = [("clear", "night"), ("clear", "rain"), ("fog", "autumn"), ("autumn", "fog")]
DOMAINS = ("clear", "night", "fog", "rain", "autumn")
OTHER_PAIRS = [(s, t) for s in DOMAINS for t in DOMAINS if s != t and (s, t) not in PAIRS]
METHODS = ("finetune", "oracle", "align_patch", "tmt")
TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "research", "train_variants.py")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", required=True)
    parser.add_argument("--jobs", type=int, default=14)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--transfer_steps", type=int, default=1800)
    args = parser.parse_args()
    results = os.path.join(args.output, "results")
    os.makedirs(results, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["--eval_split", "test", "--overwrite_output_dir"]
    futures, lock, started = {}, threading.Lock(), time.time()

    def run(name, argv, needs=()):
        for need in needs:
            futures[need].result()
        out = os.path.join(args.output, name)
        log = open(os.path.join(args.output, f"{name}.log"), "w")
        begun = time.time()
        code = subprocess.run(
            [sys.executable, TRAIN, *argv, "--output_dir", out, *common], env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
        with lock:
            print(f"{time.time() - started:6.0f} s  {name}: rc {code} in {time.time() - begun:.0f} s", flush=True)
        if os.path.isfile(os.path.join(out, "results.json")):
            shutil.copy(os.path.join(out, "results.json"), os.path.join(results, f"{name}.json"))
        if code != 0:
            raise RuntimeError(f"{name} failed; see {name}.log")

    def pair_jobs(source, target, seed, methods):
        pair = ["--source", f"synthetic/{source}", "--target", f"synthetic/{target}", "--seed", str(seed)]
        source_job, tag = f"source-{source}-seed{seed}", f"{source}2{target}-seed{seed}"
        transfer = [
            "--stage",
            "transfer",
            "--source_model",
            os.path.join(args.output, source_job, "source"),
            *pair,
            "--transfer_steps",
            str(args.transfer_steps),
        ]
        jobs = [(f"acte-{tag}", ["--stage", "acte", *pair], ())]
        for method in methods:
            argv, needs = [*transfer, "--method", method], (source_job,)
            if method in ("tmt", "oracle"):
                argv += ["--alignment", "focus"]
            if method == "tmt":
                argv += ["--acte_model", os.path.join(args.output, f"acte-{tag}", "acte")]
                needs += (f"acte-{tag}",)
            jobs.append((f"{method}-{tag}", argv, needs))
        return jobs

    def source_job(source, seed):
        target = next(t for s, t in PAIRS + OTHER_PAIRS if s == source)
        argv = ["--stage", "source", "--source", f"synthetic/{source}", "--target", f"synthetic/{target}"]
        return (f"source-{source}-seed{seed}", [*argv, "--seed", str(seed)], ())

    jobs = [source_job(source, seed) for seed in range(args.seeds) for source in ("clear", "fog", "autumn")]
    for seed in range(args.seeds):
        jobs += [job for source, target in PAIRS for job in pair_jobs(source, target, seed, METHODS)]
    for source, target in PAIRS:
        argv = [
            "--stage",
            "transfer",
            "--method",
            "finetune",
            "--target_train_fraction",
            "1.0",
            "--source_model",
            os.path.join(args.output, f"source-{source}-seed0", "source"),
            "--source",
            f"synthetic/{source}",
            "--target",
            f"synthetic/{target}",
            "--transfer_steps",
            str(args.transfer_steps),
        ]
        jobs.append((f"alltarget-{source}2{target}-seed0", argv, (f"source-{source}-seed0",)))
    jobs += [source_job(source, 0) for source in ("night", "rain")]
    jobs += [job for source, target in OTHER_PAIRS for job in pair_jobs(source, target, 0, ("finetune", "tmt"))]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for name, argv, needs in jobs:  # submitted in dependency order: a job only waits on earlier ones
            futures[name] = pool.submit(run, name, argv, needs)
    failed = [name for name, future in futures.items() if future.exception()]
    print(f"wall time {time.time() - started:.0f} s; failed: {failed}", flush=True)


if __name__ == "__main__":
    main()
