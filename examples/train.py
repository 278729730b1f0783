"""Train TMT with Accelerate: the cross-domain protocol, from a source model to the adapted target model.

    accelerate launch examples/train.py                       # every stage on the embedded generated benchmark
    accelerate launch examples/train.py --source cityscapes --target bdd100k \\
        --model_name_or_path google/vit-base-patch16-224-in21k --image_size 512 1024 --crop_size 512 512
    accelerate launch examples/train.py --source camvid/day --target idd-lite --label_space idd_level1 \\
        --data_dir path/to/data --model_name_or_path facebook/deit-tiny-patch16-224 ...

Stages (`--stage`):
  source    a segmentation ViT (TMTForSemanticSegmentation, TMA idle) on the source labels;
  acte      ACTE on source and unlabelled target images, with source labels for its auxiliary head;
  transfer  from the source model, each `--method` on the same budget: a `tmt_hf.methods` registry name (finetune,
            the baseline on the labelled target images; finetune_tma, TMA alone; align_patch and tmt_paper, adversarial
            alignment without and with ACTE's map; selftrain and tmt, self-training without and with it) or one
            registered by --method_file;
  all       (default) source, acte, then transfer, and a table of target mIoU.
Labelled images get random photometric augmentation (brightness, colour cast, blur, noise) in every stage.

Starting from a pretrained ViT (`--model_name_or_path`, a stock ViT/DeiT or a TMT checkpoint), the run normalises every
image with the checkpoint's image processor (mean, std), resamples its position embeddings to --crop_size, and trains
the source stage with the usual ViT fine-tuning recipe (`tmt_hf.optimization.FineTuningRecipe`: the new decode head at
10 times the learning rate, layer-wise learning-rate decay 0.75, 5% warm-up then cosine, in every stage). The model
predicts the classes of --label_space; both domains' labels are mapped into it.

At scale: `accelerate launch --mixed_precision bf16` (or fp16) trains every method (a non-finite loss skips its step
and is counted; ten in a row stop the run), --gradient_checkpointing trades compute for memory, data-loader workers
(--dataloader_num_workers) give the same results as none, --resized_cache decodes each frame once at --image_size, and
--eval_mode whole|slide scores at the frames' native resolution.

Outputs: OUTPUT_DIR/<stage or method>/ (save_pretrained folders with processor and model card), OUTPUT_DIR/results.json,
and OUTPUT_DIR/checkpoints/<stage>/step_<N>/ for --resume_from_checkpoint. The protocol arms of the research record
(oracle and shuffled maps, ablation knobs) run through examples/research/train_variants.py.
"""

import argparse
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import time

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from transformers import ImageProcessingMixin

import tmt_hf
from tmt_hf import ACTEConfig, ACTEModel, TMTConfig, TMTForSemanticSegmentation, TMTImageProcessor
from tmt_hf.data import (
    LABEL_SPACES,
    SegmentationTransform,
    collate,
    get_label_space,
    group_rows,
    label_space_of,
    labelled_classes,
    load_domain,
    resized_cache,
)
from tmt_hf.hub import acte_repo_id, push_folder, write_model_cards
from tmt_hf.inference import check_eval_mode
from tmt_hf.methods import TRANSFER_METHODS, TransferContext, get_method
from tmt_hf.optimization import FineTuningRecipe, fine_tuning_parameter_groups
from tmt_hf.training import (
    EpochIndexed,
    EpochShuffleSampler,
    auxiliary_draw,
    evaluate_acte,
    evaluate_segmenter,
    indexed,
    present_classes,
    repeated_to_fill,
    run_training,
    two_domains,
    use_every_core,
)

# The baseline, what protocol v6 recommends at 20 labels (amendment 9's rule: finetune_replay) and the paper's stage
# with its map-free control.
DEFAULT_METHODS = ("finetune", "finetune_replay", "align_patch", "tmt_paper")
ACTE_CELL_SIZE = 2  # ACTE's seed-grid cell in feature positions: 16-px regions at its stride 8
ACTE_LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01  # AdamW, every stage


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default."""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    spaces, size = sorted(LABEL_SPACES), {"type": int, "nargs": 2, "metavar": ("H", "W")}
    add("--stage", choices=["all", "source", "acte", "transfer"], default="all", help="which stage(s) to run")
    add("--method", nargs="+", default=None, help=f"transfer methods (default: {' '.join(DEFAULT_METHODS)})")
    add("--method_file", default=None, help="a file or module registering methods or datasets, read first")
    # Data.
    add("--source", default="synthetic/clear", help="benchmark name, Hub dataset id or local path")
    add("--target", default="synthetic/night", help="benchmark name, Hub dataset id or local path")
    add("--data_dir", default=None, help="folder of a benchmark read from its download (the README's data section)")
    add("--label_space", choices=spaces, default="cityscapes", help="the classes the model predicts")
    add(
        "--native_label_spaces",
        nargs=2,
        choices=spaces,
        default=None,
        metavar=("SOURCE", "TARGET"),
        help="the label spaces of Hub/local datasets' label files (default: registry entries' own, else cityscapes)",
    )
    add("--columns", nargs=2, default=None, metavar=("IMAGE", "LABEL"), help="image and label columns of Hub data")
    add("--train_split", default="train", help="training split of both domains; a row range works, e.g. train[:40]")
    add("--eval_split", default="validation", help="evaluation split of both domains")
    add("--target_train_split", default=None, help="the target's training split (default: --train_split)")
    add("--target_eval_split", default=None, help="the target's evaluation split (default: --eval_split)")
    add("--num_source_train", type=int, default=300, help="max source training images")
    add("--num_target_unlabeled", type=int, default=200, help="target training images used without labels")
    add("--target_train_samples", type=int, default=20, help="labelled target images (0: self-training methods only)")
    add("--num_eval", type=int, default=100, help="max evaluation images per domain")
    add("--image_size", default=[128, 256], help="images are resized to this", **size)
    add("--crop_size", default=[128, 256], help="training crop", **size)
    add("--on_bad_sample", choices=["raise", "skip"], default="raise", help="bad dataset rows: stop, or skip them")
    add("--dataloader_num_workers", type=int, default=default_workers(), help="data-loader processes (0: none)")
    add("--resized_cache", action="store_true", help="decode training frames once, at --image_size (datasets cache)")
    add(
        "--eval_mode",
        choices=["resized", "whole", "slide"],
        default="resized",
        help="score at --image_size, or at native resolution on each whole frame or in --eval_crop windows",
    )
    add("--eval_crop", type=int, nargs=2, default=None, metavar=("H", "W"), help="slide: the window (default: crop)")
    add("--eval_stride", type=int, nargs=2, default=None, metavar=("H", "W"), help="slide: the step (default: window)")
    # Models.
    add(
        "--model_name_or_path",
        default="tiny",
        help="the source stage's pretrained ViT/DeiT or TMT checkpoint, or a ViT size trained from scratch: "
        + ", ".join(sorted(tmt_hf.TMT_PRESETS)),
    )
    add("--source_model", default=None, help="transfer stage: default OUTPUT_DIR/source")
    add("--acte_model", default=None, help="transfer stage: default OUTPUT_DIR/acte")
    # Optimisation.
    add("--source_steps", type=int, default=600, help="optimizer steps of the source stage")
    add("--acte_steps", type=int, default=300, help="optimizer steps of the ACTE stage")
    add("--transfer_steps", type=int, default=300, help="optimizer steps of each transfer method")
    add("--batch_size", type=int, default=8, help="per device (evaluation: twice this)")
    add("--learning_rate", type=float, default=None, help="source stage: 5e-4 from scratch, 2e-4 from a checkpoint")
    add("--transfer_learning_rate", type=float, default=2e-4, help="transfer stage learning rate")
    add("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    add("--gradient_checkpointing", action="store_true", help="recompute each ViT layer in the backward pass")
    add("--seed", type=int, default=42, help="seed of initialisation, data order and augmentation")
    # Operability.
    add("--output_dir", default="outputs/tmt-clear2night", help="stage folders, checkpoints and results.json")
    add("--overwrite_output_dir", action="store_true", help="replace the stage folders of an earlier run")
    add("--eval_steps", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    add("--checkpointing_steps", type=int, default=0, help="save state every N steps (0: never)")
    add("--resume_from_checkpoint", default=None, help="'latest' (every unfinished stage) or a checkpoint folder")
    add("--report_to", default="none", help="Accelerate trackers: tensorboard, wandb, ... or 'all'")
    add("--push_to_hub", action="store_true", help="push the adapted model and its ACTE (org/tmt-x2y, org/acte-x2y)")
    add("--hub_model_id", default=None, help="org/tmt-<src>2<tgt>; ACTE goes to org/acte-<src>2<tgt>")
    return parser


def parse_args(argv=None):
    """Reads --method_file first, so that its methods are known when --method is checked."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.method_file:
        import_methods(known.method_file)
    args = parser.parse_args(argv)
    validate_args(args)
    return args


def import_methods(name_or_path):
    """Imports a module (dotted name) or a Python file, whose `register_method` calls add transfer methods."""
    if not name_or_path.endswith(".py"):
        return importlib.import_module(name_or_path)
    if not os.path.isfile(name_or_path):
        sys.exit(f"--method_file {name_or_path!r}: no such file")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(name_or_path))[0], name_or_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validate_args(args, build_methods=None):
    """
    Refuses bad flag combinations before any work starts. Returns the transfer methods, `build_methods(args)` or
    each --method from the registry.
    """
    if args.method is not None and args.stage in ("source", "acte"):
        sys.exit(f"--method chooses the transfer-stage methods; --stage {args.stage} does not use it")
    args.method = list(dict.fromkeys(args.method or DEFAULT_METHODS))
    unknown = [m for m in args.method if m not in TRANSFER_METHODS]
    if unknown:
        sys.exit(f"--method {' '.join(unknown)}: unknown; registered: {', '.join(sorted(TRANSFER_METHODS))}")
    args.target_train_split = args.target_train_split or args.train_split
    args.target_eval_split = args.target_eval_split or args.eval_split
    for name in ("source_steps", "acte_steps", "transfer_steps", "batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            sys.exit(f"--{name} must be >= 1")
    if args.num_eval < 1:
        sys.exit("--num_eval must be >= 1")
    if args.target_train_samples < 0:
        sys.exit("--target_train_samples must be >= 0")
    methods = build_methods(args) if build_methods else [get_method(name) for name in args.method]
    needs_labels = [m.name for m in methods if m.needs_target_labels]
    if args.target_train_samples == 0 and needs_labels and args.stage in ("all", "transfer"):
        sys.exit(
            f"--target_train_samples 0 (no target labels) suits the self-training methods only, not "
            f"{' '.join(sorted(needs_labels))}; source-only is the 0-label baseline"
        )
    args.preset = None  # the ViT size trained from scratch, if --model_name_or_path names one and no folder
    if args.model_name_or_path in tmt_hf.TMT_PRESETS and not os.path.exists(args.model_name_or_path):
        args.preset, args.model_name_or_path = args.model_name_or_path, None
    if args.learning_rate is None:
        args.learning_rate = 2e-4 if args.model_name_or_path else 5e-4
    if args.learning_rate <= 0:
        sys.exit(f"--learning_rate must be > 0, got {args.learning_rate}")
    if args.dataloader_num_workers < 0:
        sys.exit(f"--dataloader_num_workers must be >= 0, got {args.dataloader_num_workers}")
    if args.eval_mode != "slide" and (args.eval_crop or args.eval_stride):
        sys.exit(f"--eval_crop and --eval_stride are for --eval_mode slide, not {args.eval_mode}")
    try:
        args.eval_crop, args.eval_stride = eval_windows(args)
    except ValueError as error:
        sys.exit(f"--eval_mode slide: {error}")
    if args.stage == "transfer":
        source = args.source_model or os.path.join(args.output_dir, "source")
        if not os.path.isfile(os.path.join(source, "config.json")):
            sys.exit(
                f"--stage transfer needs a trained source model: {source!r} has none. Pass --source_model or run "
                "--stage source first."
            )
        acte = args.acte_model or os.path.join(args.output_dir, "acte")
        with_acte = [m.name for m in methods if m.uses_focus_map and m.maps_from_acte]
        if with_acte and not os.path.isfile(f"{acte}/config.json"):
            sys.exit(
                f"--method {' '.join(with_acte)} needs a trained ACTE: {acte!r} has none. Pass --acte_model or "
                "run --stage acte first."
            )
    if args.push_to_hub and not args.hub_model_id:
        sys.exit("--push_to_hub needs --hub_model_id (org/tmt-<src>2<tgt>; ACTE goes to org/acte-<src>2<tgt>)")
    if any(c > s for c, s in zip(args.crop_size, [round(x * 1.5) for x in args.image_size])):
        sys.exit(f"--crop_size {args.crop_size} is larger than the largest scaled image (1.5 × {args.image_size})")
    if args.resume_from_checkpoint not in (None, "latest") and not os.path.isdir(args.resume_from_checkpoint):
        sys.exit(
            f"--resume_from_checkpoint {args.resume_from_checkpoint!r} is neither 'latest' nor a checkpoint folder"
        )
    names = [m.name for m in methods]
    planned = {"all": ["source", "acte", *names], "source": ["source"], "acte": ["acte"]}.get(args.stage, names)
    existing = [
        folder
        for folder in (os.path.join(args.output_dir, name) for name in planned)
        if os.path.isdir(folder) and os.listdir(folder)
    ]
    if existing and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        sys.exit(
            f"Output folders {existing} exist and are not empty: pass --overwrite_output_dir, or "
            "--resume_from_checkpoint latest to reuse finished stages and resume unfinished ones."
        )
    return methods


def default_workers():
    """The available cores but one, at most 8."""
    return max(0, min(len(os.sched_getaffinity(0)) - 1, 8))


def eval_windows(args):
    """The windows' (size, stride) of --eval_mode slide (default: --crop_size, no overlap), else (None, None)."""
    if args.eval_mode != "slide":
        return None, None
    window = tuple(args.eval_crop or args.crop_size)
    return check_eval_mode("slide", window, tuple(args.eval_stride) if args.eval_stride else None)


def load_split(name, split, num_samples, args, with_labels=True):
    """One domain's split in --label_space, every column the dataset has."""
    spaces = args.native_label_spaces or (None, None)
    return load_domain(
        name,
        split,
        image_column=args.columns and args.columns[0],
        label_column=args.columns and args.columns[1],
        num_samples=num_samples,
        synthetic_size=tuple(args.image_size),
        on_bad_sample=args.on_bad_sample,
        data_dir=args.data_dir,
        label_space=args.label_space,
        native_labels=spaces[0] if name == args.source else spaces[1],
        with_labels=with_labels,
    )


def domain_split(name, split, num_samples, args, with_labels=True, training=False):
    """
    One domain's images (and labels) in --label_space, with a `sample_index` column for reproducible augmentation;
    training images from the resized cache with --resized_cache.
    """
    dataset = load_split(name, split, num_samples, args, with_labels)
    if training and args.resized_cache and isinstance(dataset, datasets.Dataset) and not name.startswith("synthetic/"):
        dataset = resized_cache(dataset, tuple(args.image_size))
    return indexed(dataset.select_columns(["image", "label"] if with_labels else ["image"]))


def source_and_target(args, target_labels=False):
    """
    The labelled source training images, then the target's unlabelled ones (with their labels if `target_labels`, for
    a method that reads them), with `domain_labels` 0 / 1.
    """
    source = domain_split(args.source, args.train_split, args.num_source_train, args, training=True)
    target = domain_split(
        args.target, args.target_train_split, args.num_target_unlabeled, args, target_labels, training=True
    )
    if not target_labels:
        target = target.add_column("label", [None] * len(target), feature=datasets.Image())
    return two_domains(source, target)


def labelled_target(args, choose_rows=None):
    """
    The labelled target images and their rows in --target_train_split: the first --target_train_samples of the split,
    or the rows `choose_rows(pool_size)` picks from the whole split.
    """
    if choose_rows is None:
        labelled = domain_split(args.target, args.target_train_split, args.target_train_samples, args, training=True)
        return labelled, list(range(len(labelled)))
    pool = domain_split(args.target, args.target_train_split, None, args, training=True)
    rows = sorted(int(row) for row in choose_rows(len(pool)))
    return indexed(pool.select(rows)), rows


def train_loader(dataset, args, seed, appearance_jitter=False):
    transform = SegmentationTransform(
        train=True,
        size=tuple(args.image_size),
        crop_size=tuple(args.crop_size),
        scale_range=(0.75, 1.5),
        seed=seed,
        appearance_jitter=appearance_jitter,
        image_mean=args.image_mean,
        image_std=args.image_std,
    )
    dataset.set_transform(transform)
    sampler = EpochShuffleSampler(len(dataset), seed)
    # A private generator: creating an iterator each epoch must not draw from the global RNG, which Accelerate
    # checkpoints (it also drives dropout), or a resumed run would diverge.
    loader = DataLoader(
        EpochIndexed(dataset, transform),
        batch_size=args.batch_size,
        sampler=sampler,
        collate_fn=collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        **worker_settings(args, persistent=True),
    )
    return loader, sampler, transform


def eval_loader(dataset, args):
    """Evaluation batches at --image_size (--eval_mode resized), or one frame at a time at its native resolution."""
    resized = args.eval_mode == "resized"
    size = tuple(args.image_size) if resized else None
    dataset.set_transform(
        SegmentationTransform(train=False, size=size, image_mean=args.image_mean, image_std=args.image_std)
    )
    batch_size = 2 * args.batch_size if resized else 1
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, **worker_settings(args))


def worker_settings(args, persistent=False):
    """DataLoader settings: --dataloader_num_workers processes (kept across epochs if `persistent`), pinned on CUDA."""
    workers = args.dataloader_num_workers
    return {
        "num_workers": workers,
        "persistent_workers": persistent and workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }


def image_normalization(args, source_dir):
    """
    The (mean, std) of every transform and saved processor: those of the image processor of the checkpoint the model
    starts from (--model_name_or_path for the source stage, else the source model); ViT's 0.5 where it has none.
    """
    checkpoints = [args.model_name_or_path]
    if args.stage not in ("all", "source"):
        checkpoints.insert(0, source_dir)
    for checkpoint in filter(None, checkpoints):
        try:
            config, _ = ImageProcessingMixin.get_image_processor_dict(checkpoint)
        except OSError:  # no preprocessor_config.json there
            continue
        if "image_mean" in config and "image_std" in config:
            return [float(v) for v in config["image_mean"]], [float(v) for v in config["image_std"]]
    if args.model_name_or_path:
        logging.getLogger(__name__).warning(
            f"{args.model_name_or_path} has no image processor with a mean and std (preprocessor_config.json): "
            "normalising with mean = std = 0.5"
        )
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def run_stage(name, train, args, accelerator, processor, results, wall_times):
    """
    One stage or method, into OUTPUT_DIR/<name>: reused if a resumed run finished it, else `train()` -> (model,
    summary), saved with `processor` and its summary, recorded in `results` and timed. Returns the folder.
    """
    folder = os.path.join(args.output_dir, name)
    summary_path = os.path.join(folder, "training_summary.json")
    if args.resume_from_checkpoint and os.path.isfile(summary_path):
        with open(summary_path) as f:
            results[name] = json.load(f)
        return folder
    started = time.time()
    model, results[name] = train()
    if accelerator.is_main_process:
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        with open(summary_path, "w") as f:
            json.dump(results[name], f, indent=2)
    accelerator.wait_for_everyone()
    wall_times[name] = round(time.time() - started, 1)
    return folder


def main(argv=None):
    return run(parse_args(argv))


def run(args, methods=None, choose_labelled_rows=None, recipe=None):
    """
    The protocol on parsed `args`: `methods` (default: `get_method` of each --method) are `tmt_hf.methods`
    objects, each trained from the source model into OUTPUT_DIR/<method.name>; `choose_labelled_rows(pool_size)`
    picks the labelled target rows (default: the first --target_train_samples); `recipe` is the fine-tuning recipe
    (default: `FineTuningRecipe()`).
    """
    methods = methods if methods is not None else [get_method(name) for name in args.method]
    recipe = recipe or FineTuningRecipe()
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
    )
    use_every_core(accelerator)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.report_to != "none":
        config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("tmt-hf", config=config)
    source_dir = args.source_model or os.path.join(args.output_dir, "source")
    acte_dir = args.acte_model or os.path.join(args.output_dir, "acte")
    args.image_mean, args.image_std = image_normalization(args, source_dir)
    size = {"height": args.image_size[0], "width": args.image_size[1]}
    processor = TMTImageProcessor(size=size, image_mean=args.image_mean, image_std=args.image_std)
    label_space = get_label_space(args.label_space)
    num_labels = len(label_space.classes)
    results_path = os.path.join(args.output_dir, "results.json")
    results = {}
    if os.path.isfile(results_path) and args.resume_from_checkpoint:
        with open(results_path) as f:
            results = json.load(f)
    results["args"] = vars(args)
    results["generator_version"] = tmt_hf.data.GENERATOR_VERSION  # what the synthetic/* domains were generated with
    wall_times = results["wall_time_s"] = results.get("wall_time_s") or {}
    stage = lambda name, train: run_stage(name, train, args, accelerator, processor, results, wall_times)  # noqa: E731
    common = {
        "output_dir": args.output_dir,
        "warmup_ratio": recipe.warmup_ratio,
        "resume_from_checkpoint": args.resume_from_checkpoint,
        "eval_steps": args.eval_steps,
        "checkpointing_steps": args.checkpointing_steps,
    }

    # Data: the target's evaluation split is the yardstick of every stage.
    with accelerator.main_process_first():
        target_eval = load_split(args.target, args.target_eval_split, args.num_eval, args)
        source_eval = domain_split(args.source, args.eval_split, args.num_eval, args)
    # A target of several conditions (acdc) is also scored on each condition's frames, in the same pass.
    conditions = group_rows(target_eval, "condition") if "condition" in target_eval.column_names else {}
    target_eval = indexed(target_eval.select_columns(["image", "label"]))
    widget_image = target_eval[0]["image"]  # the model cards' widget example
    # mIoU over the classes a benchmark labels (CamVid: 11 of 19); for other data, over the classes its labels hold.
    target_classes = labelled_classes(args.target, args.label_space) or present_classes(target_eval)
    source_classes = labelled_classes(args.source, args.label_space) or present_classes(source_eval)
    target_eval_loader = accelerator.prepare(eval_loader(target_eval, args))
    source_eval_loader = accelerator.prepare(eval_loader(source_eval, args))
    windows = {"mode": "slide" if args.eval_mode == "slide" else "whole", "crop_size": args.eval_crop}
    windows["stride"] = args.eval_stride
    resolution = f"{args.image_size[0]}x{args.image_size[1]}" if args.eval_mode == "resized" else "native"
    if args.eval_mode == "slide":
        resolution += f", windows {args.eval_crop} every {args.eval_stride}"

    def evaluate_target(model, loader=target_eval_loader):
        metrics = evaluate_segmenter(
            model, loader, accelerator, num_labels, target_classes, **windows, groups=conditions
        )
        if "per_group_mean_iou" in metrics:
            metrics["per_condition_mean_iou"] = metrics.pop("per_group_mean_iou")
        return metrics | {"split": args.target_eval_split, "resolution": resolution}

    def evaluate_source(model):
        metrics = evaluate_segmenter(model, source_eval_loader, accelerator, num_labels, source_classes, **windows)
        return metrics | {"split": args.eval_split, "resolution": resolution}

    # ---- Stage 1: source model -----------------------------------------------------------------------------------
    def train_source():
        with accelerator.main_process_first():
            source_train = domain_split(args.source, args.train_split, args.num_source_train, args, training=True)
        loader, sampler, _ = train_loader(source_train, args, args.seed, appearance_jitter=True)
        if args.model_name_or_path:
            model = pretrained_segmenter(args, label_space)
        else:
            config = TMTConfig.from_preset(
                args.preset, image_size=args.crop_size[0], id2label=label_space.id2label, label2id=label_space.label2id
            )
            model = TMTForSemanticSegmentation(config)
        for name, param in model.named_parameters():  # TMA idle: λ stays 0 (and DDP sees no unused parameter)
            param.requires_grad_(not name.endswith("tma_lambda"))
        if args.model_name_or_path:
            scales = recipe.layer_decay, recipe.head_learning_rate_scale
            groups = fine_tuning_parameter_groups(model, args.learning_rate, *scales)
        else:
            groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=WEIGHT_DECAY)
        steps = args.source_steps
        model, log = run_training(
            "source",
            model,
            loader,
            sampler,
            segmentation_loss,
            optimizer,
            accelerator,
            steps,
            **common,
            evaluate_fn=evaluate_source,
        )
        source_metrics, target_metrics = evaluate_source(model), evaluate_target(model)
        accelerator.print(
            f"[source] source mIoU {source_metrics['mean_iou']:.4f}, "
            f"target mIoU (source-only) {target_metrics['mean_iou']:.4f}"
        )
        return model, {"source_val": source_metrics, "target_val": target_metrics, **log}

    if args.stage in ("all", "source"):
        source_dir = stage("source", train_source)

    # ---- Stage 2: ACTE on source + target images ---------------------------------------------------------------------
    def train_acte():
        with accelerator.main_process_first():
            both = source_and_target(args)
        # Random global appearance on both domains, so that the discriminator has to find local shifts.
        loader, sampler, _ = train_loader(both, args, args.seed + 1, appearance_jitter=True)
        acte = ACTEModel(ACTEConfig(cell_size=ACTE_CELL_SIZE, num_semantic_classes=num_labels))
        optimizer = torch.optim.AdamW(acte.parameters(), lr=ACTE_LEARNING_RATE, weight_decay=WEIGHT_DECAY)

        def acte_loss(model, batch):
            out = model(
                pixel_values=batch["pixel_values"], domain_labels=batch["domain_labels"], labels=batch["labels"]
            )
            logs = {"loss": out.loss.item(), "domain_loss": out.domain_loss.item()}
            return out.loss, logs | {"semantic_loss": out.semantic_loss.item()}

        with accelerator.main_process_first():
            held_out = two_domains(
                domain_split(args.source, args.eval_split, args.num_eval, args, with_labels=False),
                domain_split(args.target, args.target_eval_split, args.num_eval, args, with_labels=False),
            )
        held_out_loader = accelerator.prepare(eval_loader(held_out, args))
        shift_loader = None
        if args.target.startswith("synthetic/"):  # the generator's shift masks as labels: 255 where it restyled
            with accelerator.main_process_first():
                shifted = load_domain(
                    args.target,
                    args.target_eval_split,
                    num_samples=args.num_eval,
                    synthetic_size=tuple(args.image_size),
                )
            shifted = shifted.select_columns(["image", "shift_mask"]).rename_column("shift_mask", "label")
            shift_loader = accelerator.prepare(eval_loader(shifted, args))

        def evaluate_fn(model):
            return evaluate_acte(model, held_out_loader, accelerator, shift_loader)

        steps = args.acte_steps
        acte, log = run_training(
            "acte", acte, loader, sampler, acte_loss, optimizer, accelerator, steps, **common, evaluate_fn=evaluate_fn
        )
        metrics = evaluate_fn(acte)
        shift = ""
        if "focus_shift_auroc" in metrics:
            shift = (
                f", focus-map AUROC against the shift mask {metrics['focus_shift_auroc']:.3f} (pooled), "
                f"{metrics['focus_shift_auroc_per_image']:.3f} (per image)"
            )
        accelerator.print(f"[acte] held-out discriminator accuracy {metrics['discriminator_accuracy']:.4f}{shift}")
        sources = sum(d == 0 for d in both["domain_labels"])
        training = {"source images": sources, "target images (unlabelled)": len(both) - sources}
        return acte, {**metrics, **log, "training": training}

    if args.stage in ("all", "acte"):
        acte_dir = stage("acte", train_acte)

    # ---- Stage 3: transfer to the target domain, each method from the source model on the same budget --------------
    if args.stage in ("all", "transfer"):
        with accelerator.main_process_first():
            labelled_rows = []
            if args.target_train_samples:
                target_train, labelled_rows = labelled_target(args, choose_labelled_rows)
            else:  # no target labels: the self-training methods step over the unlabelled target images
                target_train = domain_split(
                    args.target, args.target_train_split, args.num_target_unlabeled, args, with_labels=False
                )
        if not results.get("source"):
            results["source"] = {"target_val": evaluate_target(TMTForSemanticSegmentation.from_pretrained(source_dir))}
        context = TransferContext(
            steps=args.transfer_steps,
            batch_size=args.batch_size,
            image_size=tuple(args.image_size),
            image_mean=tuple(args.image_mean),
            image_std=tuple(args.image_std),
            unlabelled_only=args.target_train_samples == 0,
            source_model=source_dir,
        )
        for method in methods:

            def train_method(method=method):
                set_seed(args.seed)
                model = TMTForSemanticSegmentation.from_pretrained(source_dir)
                if label_space_of(model.config.id2label) is not label_space:
                    raise ValueError(
                        f"The source model {source_dir!r} predicts {list(model.config.id2label.values())}, not the "
                        f"--label_space {args.label_space} classes {list(label_space.classes)}"
                    )
                train_data, auxiliary, evaluation = target_train, None, None
                if method.auxiliary_images:  # labelled source and unlabelled target images
                    with accelerator.main_process_first():
                        auxiliary = source_and_target(args, target_labels=method.reads_target_pool_labels)
                if method.uses_focus_map:
                    context.acte = ACTEModel.from_pretrained(acte_dir) if os.path.isdir(acte_dir) else None
                    train_data, auxiliary, evaluation = method.add_focus_maps(
                        train_data, auxiliary, target_eval.select_columns(["image", "label", "sample_index"]), context
                    )
                method_eval_loader = target_eval_loader
                if evaluation is not None:
                    method_eval_loader = accelerator.prepare(eval_loader(evaluation, args))
                # Photometric augmentation on labelled images; unlabelled ones (no target labels) are the teacher's.
                train_data = repeated_to_fill(train_data, args.batch_size * accelerator.num_processes)
                loader, sampler, _ = train_loader(
                    train_data, args, args.seed + 2, appearance_jitter=args.target_train_samples > 0
                )
                draw = None
                if auxiliary is not None:
                    jitter = method.auxiliary_appearance_jitter
                    _, _, auxiliary_transform = train_loader(auxiliary, args, args.seed + 3, appearance_jitter=jitter)
                    counts = method.auxiliary_counts(context)
                    draw = auxiliary_draw(auxiliary, auxiliary_transform, counts, accelerator)
                if args.gradient_checkpointing:
                    model.gradient_checkpointing_enable()
                wrapped = method.wrap(model, context)
                groups = method.parameter_groups(wrapped, args.transfer_learning_rate)
                optimizer = torch.optim.AdamW(groups, lr=args.transfer_learning_rate, weight_decay=WEIGHT_DECAY)

                def compute_loss(trained, batch):
                    return method.loss(trained, batch, draw() if draw else None)

                def evaluate_method(trained, loader=method_eval_loader):
                    trained = accelerator.unwrap_model(trained)
                    return evaluate_target(getattr(trained, "segmenter", trained), loader)

                steps = args.transfer_steps
                wrapped, log = run_training(
                    method.name,
                    wrapped,
                    loader,
                    sampler,
                    compute_loss,
                    optimizer,
                    accelerator,
                    steps,
                    **common,
                    evaluate_fn=evaluate_method,
                )
                model = getattr(wrapped, "segmenter", wrapped)
                metrics = evaluate_method(model)
                accelerator.print(f"[{method.name}] target mIoU {metrics['mean_iou']:.4f}")
                lambdas = [
                    p.detach().abs().mean().item() for n, p in model.named_parameters() if n.endswith("tma_lambda")
                ]
                return model, {
                    "target_val": metrics,
                    **log,
                    "mean_abs_lambda": lambdas,
                    "labelled_target_images": len(labelled_rows),
                    "labelled_target_rows": labelled_rows,
                }

            stage(method.name, train_method)

    wall_times["total"] = round(sum(v for k, v in wall_times.items() if k != "total"), 1)
    pushed = methods[-1].name if args.stage in ("all", "transfer") else args.stage
    if accelerator.is_main_process:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        print_table(args, results, methods)
        base_model = (
            args.model_name_or_path if args.model_name_or_path and not os.path.exists(args.model_name_or_path) else None
        )
        write_model_cards(
            args.output_dir,
            results,
            source=args.source,
            target=args.target,
            classes=f"{args.label_space}: {', '.join(label_space.classes)}",
            methods=methods,
            repo_id=args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)),
            pushed=pushed,
            linked=args.push_to_hub,
            base_model=base_model,
            source_split=args.eval_split,
            target_split=args.target_eval_split,
            training={
                "source_steps": args.source_steps,
                "acte_steps": args.acte_steps,
                "transfer_steps": args.transfer_steps,
                "batch_size": args.batch_size,
                "learning_rate": args.transfer_learning_rate,
                "source_model": source_dir,
            },
            widget_image=widget_image,
        )
        if args.push_to_hub:
            if args.stage in ("all", "acte"):
                push_folder(os.path.join(args.output_dir, "acte"), acte_repo_id(args.hub_model_id))
            if args.stage in ("all", "transfer", "source"):
                push_folder(os.path.join(args.output_dir, pushed), args.hub_model_id)
    accelerator.end_training()
    return results


def segmentation_loss(model, batch):
    """The source stage's loss: cross-entropy on the labelled images."""
    loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    return loss, {"loss": loss.item()}


def pretrained_segmenter(args, label_space):
    """A segmenter from --model_name_or_path with a new decode head, its position grid resampled to the crop."""
    model, info = TMTForSemanticSegmentation.from_pretrained(
        args.model_name_or_path,
        output_loading_info=True,
        id2label=label_space.id2label,
        label2id=label_space.label2id,
        ignore_mismatched_sizes=True,
    )
    backbone_missing = sorted(k for k in info["missing_keys"] if k.startswith("vit.") and ".tma_" not in k)
    if backbone_missing:
        raise ValueError(
            f"{args.model_name_or_path}: backbone weights missing from the checkpoint: {backbone_missing[:5]}"
        )
    model.vit.resize_position_embeddings(args.crop_size)  # a 224x224 grid becomes the crop's, once
    return model


def print_table(args, results, methods):
    rows = [("source-only", (results.get("source") or {}).get("target_val"))]
    rows += [(method.name, (results.get(method.name) or {}).get("target_val")) for method in methods]
    rows = [(name, r) for name, r in rows if r]
    if not rows:
        return
    width = max(len(name) for name, _ in rows)
    table = [f"| {'method':<{width}} |  mIoU  |", f"|{'-' * (width + 2)}|--------|"]
    table += [f"| {name:<{width}} | {100 * r['mean_iou']:6.2f} |" for name, r in rows]
    classes = rows[0][1].get("classes")
    over = f"over {len(classes)} classes" if classes else "over the classes present"
    heading = f"Target mIoU on {args.target} ({args.target_eval_split}, {over}), source {args.source}:"
    print("\n" + heading + "\n" + "\n".join(table))
    print(f"results: {os.path.join(args.output_dir, 'results.json')}")


if __name__ == "__main__":
    main()
