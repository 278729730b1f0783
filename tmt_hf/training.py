"""
Training-loop utilities of `examples/train.py`, for your own loop too: reproducible sampling and augmentation indices,
the auxiliary-image draws of the adaptation methods, evaluation gathered across processes, and crash-safe checkpoints.
"""

import json
import math
import os

import datasets
import numpy as np
import psutil
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, collate
from .inference import segment_logits
from .metrics import MeanIoU, shift_auroc
from .optimization import warmup_cosine_schedule


class EpochShuffleSampler(Sampler):
    """
    A permutation of the dataset that depends only on (seed, epoch), so a resumed run sees the same order, yielded as
    `epoch * size + row` for an `EpochIndexed` dataset. The epoch is set with `use_epoch` (not `set_epoch`, which
    Accelerate's loaders call with their own iteration counters).
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        offset = self.epoch * self.size  # the epoch travels in the index (`EpochIndexed`), to every worker
        return iter((offset + torch.randperm(self.size, generator=generator)).tolist())

    def __len__(self):
        return self.size


class EpochIndexed(torch.utils.data.Dataset):
    """
    A `datasets.Dataset` whose transform (a `SegmentationTransform`) augments by (seed, epoch, sample), read at the
    indices of an `EpochShuffleSampler`: each index sets the epoch of the transform in the process that reads it, so
    that data-loader workers, persistent or not, augment exactly as the main process would.
    """

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        epoch, row = divmod(int(index), len(self.dataset))
        self.transform.set_epoch(epoch)
        return self.dataset[row]


def indexed(dataset):
    """`dataset` with a `sample_index` column 0..n-1 (replacing any), which seeds each row's augmentation."""
    if "sample_index" in dataset.column_names:
        dataset = dataset.remove_columns("sample_index")
    return dataset.add_column("sample_index", list(range(len(dataset))))


def two_domains(source_part, target_part):
    """Source then target images with `domain_labels` 0 / 1 and one `sample_index` over both (for augmentation)."""
    parts = [part.add_column("domain_labels", [d] * len(part)) for d, part in enumerate((source_part, target_part))]
    return indexed(datasets.concatenate_datasets(parts))


def repeated_to_fill(dataset, batch_size):
    """
    A training set smaller than one batch (5 labelled target images at batch 8), repeated until it fills one; each
    copy gets its own `sample_index`, so its own crop, flip and appearance draw.
    """
    if not 0 < len(dataset) < batch_size:
        return dataset
    return indexed(datasets.concatenate_datasets([dataset] * -(-batch_size // len(dataset))))


def auxiliary_draw(auxiliary, transform, counts, accelerator):
    """
    A function that draws `counts` = (source, target) images from `auxiliary` (labelled source, then unlabelled target
    images), collated, sources first. It draws with the global RNG, which Accelerate checkpoints, so a resumed run draws
    the same; every process draws for all and keeps its own share.
    """
    domains = torch.tensor(auxiliary["domain_labels"])
    pools = [torch.nonzero(domains == d)[:, 0] for d in (0, 1)]
    shares = [slice(accelerator.process_index * c, (accelerator.process_index + 1) * c) for c in counts]

    def draw():
        picks = [
            pool[torch.randint(len(pool), (count * accelerator.num_processes,))][share]
            for pool, count, share in zip(pools, counts, shares)
        ]
        transform.set_epoch(int(torch.randint(1 << 30, ())))
        return collate([auxiliary[int(i)] for i in torch.cat(picks)])

    return draw


@torch.no_grad()
def evaluate_segmenter(
    model, loader, accelerator, num_labels, classes=None, mode="whole", crop_size=None, stride=None, groups=None
):
    """
    mIoU of a segmenter over `classes` (default: every class present), fed the batches' `focus` maps where the loader
    has them, on each image whole or in sliding windows (`tmt_hf.inference.segment_logits`'s `mode`, `crop_size`,
    `stride`); predictions and labels are gathered across processes once per pixel. `groups` (a name -> the
    `sample_index` values of its rows, e.g. ACDC's conditions; the batches then carry `sample_index`) are scored each
    on its own in the same pass, as `per_group_mean_iou`.
    """
    model.eval()
    metric = MeanIoU(num_labels, classes=classes)
    group_metrics = {name: MeanIoU(num_labels, classes=classes) for name in groups or {}}
    group_of = {int(index): name for name, indices in (groups or {}).items() for index in indices}
    for batch in loader:
        logits = segment_logits(model, batch["pixel_values"], mode, crop_size, stride, batch.get("focus"))
        predictions, references = logits.argmax(dim=1), batch["labels"]
        if groups:
            predictions, references, indices = accelerator.gather_for_metrics(
                (predictions, references, batch["sample_index"])
            )
            for name, group_metric in group_metrics.items():
                rows = [row for row, index in enumerate(indices.tolist()) if group_of.get(index) == name]
                if rows:
                    group_metric.update(predictions[rows], references[rows])
        else:
            predictions, references = accelerator.gather_for_metrics((predictions, references))
        metric.update(predictions, references)
    model.train()
    result = metric.compute()
    metrics = {
        "mean_iou": result["mean_iou"],
        "mean_accuracy": result["mean_accuracy"],
        "overall_accuracy": result["overall_accuracy"],
        "classes": classes,
        "per_category_iou": [None if math.isnan(v) else float(v) for v in result["per_category_iou"]],
    }
    if groups:
        metrics["per_group_mean_iou"] = {name: m.compute()["mean_iou"] for name, m in group_metrics.items()}
    return metrics


@torch.no_grad()
def evaluate_acte(model, loader, accelerator, shift_loader=None):
    """
    Held-out discriminator accuracy of ACTE (region-level, both domains) and, given `shift_loader` (held-out target
    images whose labels are the generator's shift masks, 255 = shifted), the AUROC of the focus map against them
    (left out for a target without local shifts, such as synthetic/clear).
    """
    model.eval()
    correct = total = 0
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"]).domain_logits
        hits = ((logits > 0).long() == batch["domain_labels"][:, None, None]).float().mean(dim=(1, 2))
        hits = accelerator.gather_for_metrics(hits)
        correct, total = correct + hits.sum().item(), total + hits.numel()
    result = {"discriminator_accuracy": correct / max(total, 1)}
    if shift_loader is not None:
        maps, masks = [], []
        for batch in shift_loader:
            focus = model(pixel_values=batch["pixel_values"]).focus_map
            focus = F.interpolate(focus[:, None], size=batch["labels"].shape[-2:], mode="bilinear")
            focus, shifted = accelerator.gather_for_metrics((focus[:, 0], batch["labels"] == 255))
            maps += list(focus.cpu().numpy())
            masks += list(shifted.cpu().numpy())
        auroc = shift_auroc(maps, masks)
        if auroc["pooled"] is not None:
            result |= {"focus_shift_auroc": auroc["pooled"], "focus_shift_auroc_per_image": auroc["per_image"]}
    model.train()
    return result


def latest_checkpoint(stage_checkpoints: str) -> str | None:
    if not os.path.isdir(stage_checkpoints):
        return None
    steps = [int(d[5:]) for d in os.listdir(stage_checkpoints) if d.startswith("step_") and d[5:].isdigit()]
    return os.path.join(stage_checkpoints, f"step_{max(steps)}") if steps else None


def save_checkpoint(accelerator, checkpoints, step, counters=None):
    """
    Writes the state, the step and `counters` (`trainer_state.json`) to a temporary folder and renames it, so a kill
    never leaves a half-written checkpoint.
    """
    final = os.path.join(checkpoints, f"step_{step}")
    partial = final + ".tmp"
    accelerator.save_state(partial)
    if accelerator.is_main_process:
        with open(os.path.join(partial, "trainer_state.json"), "w") as f:
            json.dump({"step": step, **(counters or {})}, f)
        os.replace(partial, final)
    accelerator.wait_for_everyone()


def present_classes(dataset):
    """The train ids that occur in a dataset's labels (255 left out)."""
    counts = np.zeros(256, dtype=np.int64)
    for label in dataset.select_columns(["label"]):
        counts += np.bincount(np.asarray(label["label"]).ravel(), minlength=256)
    return [int(c) for c in np.flatnonzero(counts[:IGNORE_INDEX])]


def run_training(
    stage,
    model,
    loader,
    sampler,
    compute_loss,
    optimizer,
    accelerator,
    steps: int,
    output_dir: str,
    warmup_ratio: float = 0.05,
    resume_from_checkpoint: str | None = None,
    eval_steps: int = 0,
    checkpointing_steps: int = 0,
    evaluate_fn=None,
):
    """
    The step loop of a stage: `compute_loss(model, batch) -> (loss, logs)` over `loader` (an `EpochShuffleSampler`'s)
    for `steps` optimizer steps, with Accelerate's gradient accumulation, a `warmup_cosine_schedule`, a progress bar,
    `evaluate_fn(model)` every `eval_steps`, a checkpoint in `output_dir/checkpoints/<stage>/` every
    `checkpointing_steps`, and resume from `resume_from_checkpoint` ("latest": this stage's newest checkpoint). A step
    whose loss is not finite on any process is skipped on all of them and counted; ten in a row stop the run. Returns
    the unwrapped model and its log (the periodic evaluations and the skipped steps).
    """
    scheduler = warmup_cosine_schedule(optimizer, steps, warmup_ratio)
    accelerator.free_memory()  # forget earlier stages' objects: each stage's checkpoint holds only its own state
    batch_size = loader.batch_size
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if len(loader) == 0:  # drop_last leaves nothing: fail now, not with a division by zero
        raise ValueError(
            f"[{stage}] {len(sampler)} training images do not fill one batch of --batch_size {batch_size} on "
            f"each of {accelerator.num_processes} process(es); lower --batch_size or give more images"
        )
    checkpoints = os.path.join(output_dir, "checkpoints", stage)
    step = skipped = in_a_row = 0
    resume = resume_from_checkpoint
    if resume == "latest":
        resume = latest_checkpoint(checkpoints)
    elif resume is not None and os.path.basename(os.path.dirname(os.path.normpath(resume))) != stage:
        resume = None  # an explicit checkpoint of another stage
    if resume:
        accelerator.load_state(resume)
        with open(os.path.join(resume, "trainer_state.json")) as f:
            state = json.load(f)
        step, skipped = state["step"], state.get("non_finite_losses_skipped", 0)
        accelerator.print(f"[{stage}] resumed from {resume} at step {step}")

    progress = tqdm(total=steps, initial=step, desc=stage, disable=not accelerator.is_local_main_process)
    history = []
    model.train()
    while step < steps:
        epoch, skip = divmod(step * accelerator.gradient_accumulation_steps, len(loader))
        sampler.use_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(model):
                loss, logs = compute_loss(model, batch)
                if not bool(accelerator.gather(torch.isfinite(loss.detach()).reshape(1)).all()):
                    optimizer.zero_grad()
                    skipped, in_a_row = skipped + 1, in_a_row + 1
                    accelerator.print(f"[{stage}] step {step + 1}: non-finite loss {loss.item()}, step skipped")
                    if in_a_row == 10:
                        raise RuntimeError(
                            f"[{stage}] 10 non-finite losses in a row (at step {step + 1}): the run diverged. Lower "
                            "the learning rate, or train in bf16 or fp32 instead of fp16."
                        )
                    continue
                in_a_row = 0
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            logs = {f"{stage}/{k}": v for k, v in logs.items()} | {f"{stage}/lr": scheduler.get_last_lr()[0]}
            accelerator.log(logs, step=step)
            if evaluate_fn and eval_steps and step % eval_steps == 0 and step < steps:
                result = evaluate_fn(model)
                history.append({"step": step, **{k: v for k, v in result.items() if isinstance(v, float)}})
                accelerator.log({f"{stage}/eval_{k}": v for k, v in history[-1].items() if k != "step"}, step=step)
                accelerator.print(f"[{stage}] step {step}: {history[-1]}")
            if checkpointing_steps and step % checkpointing_steps == 0:
                save_checkpoint(accelerator, checkpoints, step, {"non_finite_losses_skipped": skipped})
            if step >= steps:
                break
    progress.close()
    return accelerator.unwrap_model(model), {"history": history, "non_finite_losses_skipped": skipped}


def use_every_core(accelerator):
    """
    `accelerate launch` sets OMP_NUM_THREADS=1 for its child unless told otherwise (`--num_cpu_threads_per_process`),
    which leaves all cores but one idle in a single-process CPU run: use every physical core there.
    """
    launched_with_one = os.environ.get("OMP_NUM_THREADS") == "1" and "ACCELERATE_MIXED_PRECISION" in os.environ
    if accelerator.device.type != "cpu" or accelerator.num_processes != 1 or not launched_with_one:
        return
    torch.set_num_threads(max(1, min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))))
    accelerator.print(f"using {torch.get_num_threads()} CPU thread(s)")


def write_report(report, output=None, echo=True) -> None:
    """
    Prints a JSON-serialisable `report` (unless `echo` is False) and writes it to the file `output`, if given: whole to
    a temporary file, then renamed over `output`, so that a kill never leaves a half-written report.
    """
    if echo:
        print(json.dumps(report, indent=2))
    if output:
        with open(f"{output}.tmp", "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(f"{output}.tmp", output)
