"""Train TMT with Accelerate: the cross-domain protocol, from a source model to the adapted target model.

    accelerate launch examples/train.py                       # every stage on the embedded generated benchmark
    accelerate launch examples/train.py --source cityscapes --target bdd100k \\
        --model_name_or_path google/vit-base-patch16-224-in21k --image_size 512 1024 --crop_size 512 512
    accelerate launch examples/train.py --source camvid/day --target idd-lite --label_space idd_level1 \\
        --data_dir path/to/data --model_name_or_path facebook/deit-tiny-patch16-224 ...

Stages (`--stage`):
  source    a segmentation ViT (TMTForSemanticSegmentation, TMA idle) on the source labels;
  acte      ACTE on source and unlabelled target images, with source labels for its auxiliary head;
  transfer  from the source model, each `--method` on the same budget:
              finetune     the baseline: the labelled target images only;
              finetune_tma the map alone (TMA-only): finetune with the frozen ACTE attached and TMA on, no source or
                           unlabelled images; finetune is its map-free control;
              align_patch  the map-free comparator of tmt_paper: also source labels and unlabelled target images,
                           with a patch-level adversarial alignment of token features;
              tmt_paper    the paper-faithful TMT transfer stage (our reconstruction): the frozen ACTE attached, TMA on,
                           and the alignment of align_patch with each token weighted by ACTE's focus map;
              selftrain    map-free self-training: a mean teacher's pseudo-labels on unlabelled target images, DACS
                           class mixing with source images, MIC masking (tmt_hf.adaptation.SelfTraining);
              tmt          region-level TMT self-training (ours): selftrain with ACTE's map deciding, region by
                           region, where pseudo-labels are trusted and where masking pushes adaptation
                           (--tmt_parts), and TMA in the student;
  all       (default) source, acte, then transfer, and a table of target mIoU.
Labelled images get random photometric augmentation (brightness, colour cast, blur, noise) in every stage.

Starting from a pretrained ViT (`--model_name_or_path`, a stock ViT/DeiT or a TMT checkpoint), the run normalises every
image with the checkpoint's image processor (mean, std), resamples its position embeddings to --crop_size, and trains
the source stage with the usual ViT fine-tuning recipe: the new decode head at --head_learning_rate_scale times the
learning rate, layer-wise learning-rate decay (--layer_decay) and warm-up (--warmup_ratio). The model predicts the
classes of --label_space; both domains' labels are mapped into it (see tmt_hf.data.label_spaces).
`--focus_map oracle` feeds the map methods (finetune_tma, tmt_paper, tmt) the generator's ground-truth shift mask
instead of ACTE's map (generated targets only: what a perfect estimator would give); `--focus_map shuffled` gives each
image another image's ACTE map (the control that keeps the maps' statistics and breaks their placement).
`--focus_map error_oracle` marks, on every training image, the pixels the source model gets wrong (read off the labels,
so for a target whose unlabelled pool has labels held back): the ceiling of any transferability map on a real pair. It
exists for training images only, so it feeds tmt's trust and mask parts (`--tmt_parts trust mask`), not TMA.

Outputs: OUTPUT_DIR/<stage or method>/ (save_pretrained folders with processor and model card), OUTPUT_DIR/results.json,
and OUTPUT_DIR/checkpoints/<stage>/step_<N>/ for --resume_from_checkpoint.
"""

import argparse
import functools
import json
import logging
import math
import os
import shutil
import sys
import time

import datasets
import numpy as np
import psutil
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import ImageProcessingMixin

import tmt_hf
from tmt_hf import ACTEConfig, ACTEModel, TMTConfig, TMTForSemanticSegmentation, TMTImageProcessor
from tmt_hf.adaptation import AdversarialAlignment, SelfTraining
from tmt_hf.data import (
    DOMAINS,
    GENERATOR_VERSION,
    IGNORE_INDEX,
    LABEL_SPACES,
    SegmentationTransform,
    collate,
    get_label_space,
    label_space_of,
    labelled_classes,
    load_domain,
)
from tmt_hf.data.transforms import random_global_appearance
from tmt_hf.hub import acte_model_card, push_folder, tmt_model_card
from tmt_hf.metrics import MeanIoU, shift_auroc

METHODS = ("finetune", "finetune_tma", "align_patch", "tmt_paper", "selftrain", "tmt")
DEFAULT_METHODS = ("finetune", "align_patch", "tmt_paper")  # selftrain and tmt do not beat finetune yet
ALIGNMENT_LEVEL = {"align_patch": "patch", "tmt_paper": "focus"}
SELF_TRAINING = ("selftrain", "tmt")
MAP_METHODS = ("finetune_tma", "tmt_paper", "tmt")  # methods fed a focus map (ACTE's, or the oracle's / a shuffled one)
EMA_DECAY = 0.99  # the teacher's; DACS's value, suited to budgets of hundreds of steps
PSEUDO_LABEL_THRESHOLD = 0.968  # DACS's confidence threshold of the pseudo-label weight
TMA_LR_SCALE = 100.0  # λ of TMA starts at 0 and learns at 100× the transfer learning rate
ACTE_CELL_SIZE = 2  # ACTE's seed-grid cell in feature positions: 16-px regions at its stride 8
ACTE_LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01  # AdamW, every stage


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--stage", choices=["all", "source", "acte", "transfer"], default="all", help="which stage(s) to run")
    add("--method", nargs="+", choices=METHODS, default=None,
        help=f"transfer-stage methods (default: {' '.join(DEFAULT_METHODS)}; see above)")  # fmt: skip
    add("--focus_map", choices=["acte", "oracle", "shuffled", "error_oracle"], default="acte",
        help="the map of the map methods (see above); results and folders of a non-default map are named "
             "<method>-<map>")  # fmt: skip
    add("--tmt_parts", nargs="+", choices=["tma", "trust", "mask"], default=["tma", "trust", "mask"],
        help="how tmt uses the map: TMA in the student; pseudo-label trust 1 - m per pixel; MIC masking in "
             "proportion to m")  # fmt: skip
    add("--mask_ratio", type=float, default=0.5, help="selftrain and tmt: MIC's share of hidden blocks (0: off)")
    add("--pseudo_label_class_quantile", type=float, default=None, metavar="Q",
        help="selftrain and tmt: class-balanced pseudo-labels, each predicted class keeping its pixels above its "
             "Q-quantile confidence (CBST); default: DACS's image-level weight")  # fmt: skip
    # Data.
    add("--source", default="synthetic/clear", help="benchmark name, Hub dataset id or local path")
    add("--target", default="synthetic/night", help="benchmark name, Hub dataset id or local path")
    add("--data_dir", default=None,
        help="folder of a benchmark read from local files (camvid: SegNet's CamVid/; idd-lite: idd20k_lite/)")  # fmt: skip
    add("--label_space", choices=sorted(LABEL_SPACES), default="cityscapes",
        help="the classes the model predicts; both domains' labels are mapped into them")  # fmt: skip
    add("--source_label_space", choices=sorted(LABEL_SPACES), default=None,
        help="the label space a Hub/local source dataset's label files are in (default: the registry entry's; "
             "cityscapes train ids for a Hub id or local path)")  # fmt: skip
    add("--target_label_space", choices=sorted(LABEL_SPACES), default=None, help="the same for the target dataset")
    add("--columns", nargs=2, default=None, metavar=("IMAGE", "LABEL"),
        help="the image and label columns of Hub/local datasets (default: the registry's, or image label)")  # fmt: skip
    add("--train_split", default="train", help="training split of both domains; a row range works, e.g. train[:40]")
    add("--eval_split", default="validation", help="evaluation split of both domains")
    add("--target_train_split", default=None, help="the target's training split (default: --train_split)")
    add("--target_eval_split", default=None,
        help="the target's evaluation split (default: --eval_split), e.g. train[42:] for a target without one")  # fmt: skip
    add("--num_source_train", type=int, default=300, help="max source training images")
    add("--num_target_unlabeled", type=int, default=200, help="target training images used without labels")
    add("--target_train_samples", type=int, default=20,
        help="labelled target images, the first of the split (fewer than --batch_size repeat to fill a batch; "
             "0: unsupervised adaptation, selftrain and tmt only)")  # fmt: skip
    add("--labelled_draw", choices=["first", "random"], default="first",
        help="which labelled target images: the first --target_train_samples of the split, or a random draw seeded "
             "by --seed (a new draw per seed)")  # fmt: skip
    add("--num_eval", type=int, default=100, help="max evaluation images per domain")
    add("--image_size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"),
        help="images are resized to this (generated scenes are rendered at it)")  # fmt: skip
    add("--crop_size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"), help="training crop")
    add("--on_bad_sample", choices=["raise", "skip"], default="raise",
        help="unreadable or inconsistent dataset rows: stop, or skip with a warning")  # fmt: skip
    # Models.
    add("--preset", default="tiny", choices=sorted(tmt_hf.TMT_PRESETS), help="ViT size when training from scratch")
    add("--model_name_or_path", default=None,
        help="source stage: a pretrained ViT/DeiT or TMT checkpoint to start from (default: --preset, random init); "
             "its image processor's mean/std normalise every stage")  # fmt: skip
    add("--source_model", default=None, help="transfer stage: default OUTPUT_DIR/source")
    add("--acte_model", default=None, help="transfer stage: default OUTPUT_DIR/acte")
    # Optimisation.
    add("--source_steps", type=int, default=600, help="optimizer steps of the source stage")
    add("--acte_steps", type=int, default=300, help="optimizer steps of the ACTE stage")
    add("--transfer_steps", type=int, default=300, help="optimizer steps of each transfer method")
    add("--batch_size", type=int, default=8, help="per device (evaluation: twice this)")
    add("--learning_rate", type=float, default=None,
        help="source stage learning rate (AdamW; of the last encoder layer under --layer_decay); default 5e-4 from "
             "scratch, 2e-4 from --model_name_or_path")  # fmt: skip
    add("--head_learning_rate_scale", type=float, default=10.0,
        help="from --model_name_or_path: the new decode head learns at this times --learning_rate")  # fmt: skip
    add("--layer_decay", type=float, default=0.75,
        help="from --model_name_or_path: layer-wise learning-rate decay (BEiT/MAE), encoder layer i of L at "
             "--learning_rate * decay^(L - i), the embeddings at decay^L; 1: off")  # fmt: skip
    add("--warmup_ratio", type=float, default=0.05, help="share of each stage's steps in linear warm-up, then cosine")
    add("--transfer_learning_rate", type=float, default=2e-4, help="transfer stage learning rate")
    add("--alignment_weight", type=float, default=0.1, help="weight of the adversarial domain loss")
    add("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    add("--cpu_threads", type=int, default=None,
        help="torch threads on CPU (default: every physical core for a single process, even where `accelerate "
             "launch` set OMP_NUM_THREADS=1)")  # fmt: skip
    add("--seed", type=int, default=42, help="seed of initialisation, data order and augmentation")
    # Operability.
    add("--output_dir", default="outputs/tmt-clear2night", help="stage folders, checkpoints and results.json")
    add("--overwrite_output_dir", action="store_true", help="replace the stage folders of an earlier run")
    add("--eval_steps", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    add("--checkpointing_steps", type=int, default=0, help="save state every N steps (0: never)")
    add("--resume_from_checkpoint", default=None,
        help="'latest' to resume every unfinished stage from its newest checkpoint, or a checkpoint path")  # fmt: skip
    add("--report_to", default="none", help="Accelerate trackers: tensorboard, wandb, ... or 'all'")
    add("--push_to_hub", action="store_true", help="push the ACTE and the adapted model to the Hub")
    add("--hub_model_id", default=None, help="org/tmt-<src>2<tgt>")
    add("--hub_acte_model_id", default=None, help="org/acte-<src>2<tgt>")
    add("--hub_token", default=None, help="Hub token (default: the logged-in token)")
    args = parser.parse_args(argv)
    validate_args(args)
    return args


def validate_args(args):
    """Refuses bad flag combinations before any work starts."""
    if args.method is not None and args.stage in ("source", "acte"):
        sys.exit(f"--method chooses the transfer-stage methods; --stage {args.stage} does not use it")
    args.method = list(dict.fromkeys(args.method or DEFAULT_METHODS))
    args.target_train_split = args.target_train_split or args.train_split
    args.target_eval_split = args.target_eval_split or args.eval_split
    for name in ("source_steps", "acte_steps", "transfer_steps", "batch_size", "gradient_accumulation_steps",
                 "num_eval"):  # fmt: skip
        if getattr(args, name) < 1:
            sys.exit(f"--{name} must be >= 1")
    if args.target_train_samples < 0:
        sys.exit("--target_train_samples must be >= 0")
    if args.target_train_samples == 0 and set(args.method) - set(SELF_TRAINING) and args.stage in ("all", "transfer"):
        sys.exit(f"--target_train_samples 0 (no target labels) suits the self-training methods only, not "
                 f"{' '.join(sorted(set(args.method) - set(SELF_TRAINING)))}; source-only is the 0-label baseline")  # fmt: skip
    if not 0 <= args.mask_ratio <= 1:
        sys.exit(f"--mask_ratio must lie in [0, 1], got {args.mask_ratio}")
    if args.pseudo_label_class_quantile is not None and not 0 <= args.pseudo_label_class_quantile <= 1:
        sys.exit(f"--pseudo_label_class_quantile must lie in [0, 1], got {args.pseudo_label_class_quantile}")
    if args.alignment_weight < 0:
        sys.exit(f"--alignment_weight must be >= 0, got {args.alignment_weight}")
    if args.learning_rate is None:
        args.learning_rate = 2e-4 if args.model_name_or_path else 5e-4
    for name in ("learning_rate", "head_learning_rate_scale", "layer_decay"):
        if getattr(args, name) <= 0:
            sys.exit(f"--{name} must be > 0, got {getattr(args, name)}")
    if not 0 <= args.warmup_ratio < 1:
        sys.exit(f"--warmup_ratio must lie in [0, 1), got {args.warmup_ratio}")
    if args.cpu_threads is not None and args.cpu_threads < 1:
        sys.exit("--cpu_threads must be >= 1")
    if args.focus_map != "acte" and not set(MAP_METHODS) & set(args.method):
        sys.exit(f"--focus_map {args.focus_map} chooses the map of the map methods; --method {' '.join(args.method)} "
                 "uses none")  # fmt: skip
    if args.focus_map == "oracle" and not args.target.startswith("synthetic/"):
        sys.exit("--focus_map oracle needs a generated target (synthetic/<domain>): only the generator knows which "
                 "pixels its domain shifted")  # fmt: skip
    if args.focus_map == "oracle" and args.label_space != "cityscapes":
        sys.exit(
            "--focus_map oracle marks the generator's restyled Cityscapes classes: it needs --label_space cityscapes"
        )
    if args.focus_map == "error_oracle" and (set(args.method) & set(MAP_METHODS) - {"tmt"} or "tma" in args.tmt_parts):
        sys.exit("--focus_map error_oracle marks where the source model is wrong on training images (from their labels); "
                 "it has no map for evaluation images, so it feeds tmt's trust and mask parts only: --method tmt "
                 "--tmt_parts trust mask")  # fmt: skip
    if args.focus_map == "oracle" and args.push_to_hub:
        sys.exit("--focus_map oracle reads the generator's shift masks at evaluation; such a model is not pushed")
    if args.stage == "transfer":
        source = args.source_model or os.path.join(args.output_dir, "source")
        if not os.path.isfile(os.path.join(source, "config.json")):
            sys.exit(f"--stage transfer needs a trained source model: {source!r} has none. Pass --source_model or run "
                     "--stage source first.")  # fmt: skip
        acte = args.acte_model or os.path.join(args.output_dir, "acte")
        with_acte = [m for m in args.method if m in MAP_METHODS and args.focus_map in ("acte", "shuffled")]
        if with_acte and not os.path.isfile(f"{acte}/config.json"):
            sys.exit(f"--method {' '.join(with_acte)} needs a trained ACTE: {acte!r} has none. Pass --acte_model or "
                     "run --stage acte first.")  # fmt: skip
    if args.push_to_hub:
        if args.stage in ("all", "transfer", "source") and not args.hub_model_id:
            sys.exit("--push_to_hub needs --hub_model_id (org/tmt-<src>2<tgt>)")
        if args.stage in ("all", "acte") and not args.hub_acte_model_id:
            sys.exit("--push_to_hub needs --hub_acte_model_id (org/acte-<src>2<tgt>) to push the ACTE model")
    if any(c > s for c, s in zip(args.crop_size, [round(x * 1.5) for x in args.image_size])):
        sys.exit(f"--crop_size {args.crop_size} is larger than the largest scaled image (1.5 × {args.image_size})")
    if args.resume_from_checkpoint not in (None, "latest") and not os.path.isdir(args.resume_from_checkpoint):
        sys.exit(
            f"--resume_from_checkpoint {args.resume_from_checkpoint!r} is neither 'latest' nor a checkpoint folder"
        )
    planned = {"all": ["source", "acte", *run_names(args)], "source": ["source"], "acte": ["acte"],
               "transfer": run_names(args)}[args.stage]  # fmt: skip
    existing = [
        d for d in (os.path.join(args.output_dir, name) for name in planned) if os.path.isdir(d) and os.listdir(d)
    ]
    if existing and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        sys.exit(f"Output folders {existing} exist and are not empty: pass --overwrite_output_dir, or "
                 "--resume_from_checkpoint latest to reuse finished stages and resume unfinished ones.")  # fmt: skip


def run_names(args):
    """The results key and folder of each transfer method: <method>-<map> for a map method fed another map than ACTE's."""
    return [f"{m}-{args.focus_map}" if m in MAP_METHODS and args.focus_map != "acte" else m for m in args.method]


def uses_tma(method, args):
    """Whether a transfer method trains TMA (and so saves the ACTE that feeds it, unless the map is the oracle's)."""
    return method in ("finetune_tma", "tmt_paper") or (method == "tmt" and "tma" in args.tmt_parts)


def segmentation_loss(model, batch):
    """Cross-entropy on the labelled images; TMA gets the batch's cached `focus` map if it has one."""
    loss = model(
        pixel_values=batch["pixel_values"], labels=batch["labels"], transferability_map=batch.get("focus")
    ).loss
    return loss, {"loss": loss.item()}


def auxiliary_draw(auxiliary, auxiliary_transform, counts, accelerator):
    """
    A function that draws `counts` = (source, target) images from `auxiliary` (labelled source, then unlabelled target
    images), collated, sources first. It draws with the global RNG, which Accelerate checkpoints, so a resumed run draws
    the same; every process draws for all and keeps its own share.
    """
    domains = torch.tensor(auxiliary["domain_labels"])
    pools = [torch.nonzero(domains == d)[:, 0] for d in (0, 1)]
    shares = [slice(accelerator.process_index * c, (accelerator.process_index + 1) * c) for c in counts]

    def draw():
        picks = [pool[torch.randint(len(pool), (c * accelerator.num_processes,))][share]
                 for pool, c, share in zip(pools, counts, shares)]  # fmt: skip
        auxiliary_transform.set_epoch(int(torch.randint(1 << 30, ())))
        return collate([auxiliary[int(i)] for i in torch.cat(picks)])

    return draw


def alignment_loss(auxiliary, auxiliary_transform, args, accelerator):
    """
    The loss of the alignment methods: each labelled target batch is extended with `batch_size // 2` labelled source
    and as many unlabelled target images (`auxiliary_draw`), and passed to an `AdversarialAlignment` with their domain
    labels (and the `focus` maps of tmt_paper).
    """
    count = max(1, args.batch_size // 2)
    draw = auxiliary_draw(auxiliary, auxiliary_transform, (count, count), accelerator)

    def compute_loss(model, batch):
        extra = draw()
        device = batch["pixel_values"].device
        pixel_values = torch.cat([batch["pixel_values"], extra["pixel_values"].to(device)])
        labels = torch.cat([batch["labels"], extra["labels"].to(device)])
        labels[len(batch["labels"]) + count :] = IGNORE_INDEX  # the unlabelled target images
        focus = torch.cat([batch["focus"], extra["focus"].to(device)]) if "focus" in batch else None
        domain_labels = torch.cat([torch.ones(len(batch["labels"]), dtype=torch.long), extra["domain_labels"]])
        return model(pixel_values, labels, domain_labels.to(device), focus)

    return compute_loss


def selftraining_loss(auxiliary, auxiliary_transform, args, accelerator, parts=()):
    """
    The loss of the self-training methods (`SelfTraining`): each labelled target batch with `batch_size // 2` labelled
    source and as many unlabelled target images (`auxiliary_draw`); with no target labels, the batch itself is the
    unlabelled target images, with `batch_size` source images. `parts` (tmt): the focus maps go to TMA (`tma`), gate
    the pseudo-labels with trust 1 - m (`trust`) and weight MIC's masking by m (`mask`).
    """
    unlabelled_only = args.target_train_samples == 0
    counts = (args.batch_size, 0) if unlabelled_only else (max(1, args.batch_size // 2),) * 2
    draw = auxiliary_draw(auxiliary, auxiliary_transform, counts, accelerator)

    def compute_loss(model, batch):
        extra = draw()
        generator = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))  # from the checkpointed RNG
        device = batch["pixel_values"].device
        extra = {k: v.to(device) for k, v in extra.items()}
        labelled = {k: v for k, v in batch.items() if k != "domain_labels"}
        sources = {k: v[: counts[0]] for k, v in extra.items()}
        targets = {k: v[counts[0] :] for k, v in extra.items()}
        if unlabelled_only:
            labelled, targets = {k: v[:0] for k, v in labelled.items()}, labelled
            labelled["labels"] = torch.zeros((0, *targets["pixel_values"].shape[2:]), dtype=torch.long, device=device)
        maps = trust = mask_weights = None
        if "focus" in extra:
            if "tma" in parts:
                maps = {"labelled": labelled["focus"], "source": sources["focus"], "target": targets["focus"]}
            trust = 1 - targets["focus"] if "trust" in parts else None
            mask_weights = targets["focus"] if "mask" in parts else None
        return model(labelled["pixel_values"], labelled["labels"], sources["pixel_values"], sources["labels"],
                     targets["pixel_values"], maps, trust, mask_weights, generator)  # fmt: skip

    return compute_loss


def strong_view(pixel_values, generator=None, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)):
    """
    The student's strong view in self-training: random photometric augmentation of images normalised with
    `image_mean`/`image_std` (undone, augmented in [0, 1], redone).
    """
    mean, std = torch.tensor(image_mean).view(3, 1, 1), torch.tensor(image_std).view(3, 1, 1)
    images = [random_global_appearance(image.cpu() * std + mean, generator) for image in pixel_values]
    return ((torch.stack(images) - mean) / std).to(pixel_values.device)


def acte_focus(acte):
    """ACTE's focus map of a batch, (B, H, W) at the images' size."""
    acte.eval()
    return lambda pixel_values, labels: F.interpolate(
        acte(pixel_values).focus_map[:, None], size=pixel_values.shape[2:], mode="bilinear"
    )[:, 0]


def source_errors(model):
    """The error oracle of a batch: 1 where `model` (the source model) predicts another class than the label."""
    model.eval()
    return lambda pixel_values, labels: ((model(pixel_values=pixel_values).logits.argmax(dim=1) != labels)
                                         & (labels != IGNORE_INDEX)).float()  # fmt: skip


@torch.no_grad()
def with_focus_maps(dataset, map_of, args, shuffled=False, from_labels=False):
    """
    `dataset` with a `focus` column: each image's map at --image_size (`map_of(pixel_values, labels)`, e.g.
    `acte_focus(acte)`; labels only `from_labels`), computed once (grayscale 0-255) so that training does not compute it
    on every batch; the transforms crop and flip it with the image. `shuffled`: each image gets the next image's map
    (the last the first's).
    """
    images = dataset.select_columns(["image", "label"] if from_labels else ["image"])
    images.set_transform(SegmentationTransform(train=False, size=tuple(args.image_size), image_mean=args.image_mean,
                                               image_std=args.image_std))  # fmt: skip
    height, width = args.image_size
    maps = []
    for batch in DataLoader(images, batch_size=2 * args.batch_size, collate_fn=collate):
        focus = map_of(batch["pixel_values"], batch.get("labels"))
        focus = (255 * focus[:, :height, :width].clamp(0, 1)).round().byte().cpu().numpy()
        maps += [datasets.Image().encode_example(Image.fromarray(m)) for m in focus]
    if shuffled:
        maps = maps[1:] + maps[:1]
    return dataset.add_column("focus", maps, feature=datasets.Image())


class EpochShuffleSampler(Sampler):
    """
    A permutation of the dataset that depends only on (seed, epoch), so a resumed run sees the same order. The epoch is
    set with `use_epoch` (not `set_epoch`, which Accelerate's loaders call with their own iteration counters).
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self):
        return self.size


def domain_split(name, split, num_samples, args, with_labels=True, oracle_maps=False):
    """
    One domain's split in --label_space, with a `sample_index` column for reproducible augmentation. `oracle_maps` adds
    the oracle's map for the generated `--target` as a `focus` column: the generator's shift mask on target images, and
    on another domain's images (which the target's shifts never touched) the pixels of the classes the target restyles.
    """
    dataset = load_domain(name, split, image_column=args.columns and args.columns[0], label_column=args.columns and args.columns[1],
                          num_samples=num_samples, synthetic_size=tuple(args.image_size),
                          on_bad_sample=args.on_bad_sample, data_dir=args.data_dir, label_space=args.label_space,
                          native_labels=args.source_label_space if name == args.source else args.target_label_space)  # fmt: skip
    columns = ["image", "label"] if with_labels else ["image"]
    if oracle_maps and name == args.target:
        dataset = dataset.select_columns([*columns, "shift_mask"]).rename_column("shift_mask", "focus")
    elif oracle_maps:
        restyled = DOMAINS[args.target.split("/", 1)[1]].restyled
        dataset = dataset.select_columns(columns).map(
            lambda example: {
                "focus": Image.fromarray(np.isin(np.asarray(example["label"]), restyled).astype(np.uint8) * 255)
            },
            features=datasets.Features({**dataset.select_columns(columns).features, "focus": datasets.Image()}),
        )
    else:
        dataset = dataset.select_columns(columns)
    return indexed(dataset)


def labelled_target(args):
    """
    The labelled target images and their rows in --target_train_split: the first --target_train_samples of the split,
    or with --labelled_draw random as many drawn from the whole split with --seed (in split order), a new draw per seed.
    """
    if args.labelled_draw == "first":
        labelled = domain_split(args.target, args.target_train_split, args.target_train_samples, args)
        return labelled, list(range(len(labelled)))
    pool = domain_split(args.target, args.target_train_split, None, args)
    draw = np.random.default_rng(args.seed).choice(len(pool), min(args.target_train_samples, len(pool)), replace=False)
    rows = sorted(draw.tolist())
    return indexed(pool.select(rows)), rows


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


def train_loader(dataset, args, seed, appearance_jitter=False):
    transform = SegmentationTransform(train=True, size=tuple(args.image_size), crop_size=tuple(args.crop_size),
                                      scale_range=(0.75, 1.5), seed=seed, appearance_jitter=appearance_jitter,
                                      image_mean=args.image_mean, image_std=args.image_std)  # fmt: skip
    dataset.set_transform(transform)
    sampler = EpochShuffleSampler(len(dataset), seed)
    # A private generator: creating an iterator each epoch must not draw from the global RNG, which Accelerate
    # checkpoints (it also drives dropout), or a resumed run would diverge.
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return loader, sampler, transform


def eval_loader(dataset, args):
    dataset.set_transform(SegmentationTransform(train=False, size=tuple(args.image_size), image_mean=args.image_mean,
                                                image_std=args.image_std))  # fmt: skip
    return DataLoader(dataset, batch_size=2 * args.batch_size, collate_fn=collate)


@torch.no_grad()
def evaluate(model, loader, accelerator, num_labels, classes=None):
    """
    mIoU of a segmenter over `classes` (default: every class present), fed the batches' `focus` maps where the loader
    has them; predictions and labels are gathered across processes once per pixel.
    """
    model.eval()
    metric = MeanIoU(num_labels, classes=classes)
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"], transferability_map=batch.get("focus")).logits
        predictions, references = accelerator.gather_for_metrics((logits.argmax(dim=1), batch["labels"]))
        metric.update(predictions, references)
    model.train()
    result = metric.compute()
    return {"mean_iou": result["mean_iou"], "mean_accuracy": result["mean_accuracy"],
            "overall_accuracy": result["overall_accuracy"], "classes": classes,
            "per_category_iou": [None if math.isnan(v) else float(v) for v in result["per_category_iou"]]}  # fmt: skip


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
            focus = F.interpolate(focus[:, None], size=batch["labels"].shape[-2:], mode="bilinear")[:, 0]
            focus, shifted = accelerator.gather_for_metrics((focus, batch["labels"] == 255))
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


def run_training(stage, model, loader, sampler, transform, compute_loss, optimizer, steps, args, accelerator,
                 evaluate_fn=None):  # fmt: skip
    """The shared step loop: accumulation, scheduler, progress bar, periodic evaluation, checkpoints and resume."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, args.warmup_ratio))
    accelerator.free_memory()  # forget earlier stages' objects: each stage's checkpoint holds only its own state
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    if len(loader) == 0:  # drop_last leaves nothing: fail now, not with a division by zero
        raise ValueError(
            f"[{stage}] {len(sampler)} training images do not fill one batch of --batch_size {args.batch_size} on each "
            f"of {accelerator.num_processes} process(es); lower --batch_size or give more images"
        )
    checkpoints = os.path.join(args.output_dir, "checkpoints", stage)
    step = 0
    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = latest_checkpoint(checkpoints)
    elif resume is not None and os.path.basename(os.path.dirname(os.path.normpath(resume))) != stage:
        resume = None  # an explicit checkpoint of another stage
    if resume:
        accelerator.load_state(resume)
        with open(os.path.join(resume, "trainer_state.json")) as f:
            step = json.load(f)["step"]
        accelerator.print(f"[{stage}] resumed from {resume} at step {step}")

    progress = tqdm(total=steps, initial=step, desc=stage, disable=not accelerator.is_local_main_process)
    history = []
    model.train()
    while step < steps:
        epoch, skip = divmod(step * args.gradient_accumulation_steps, len(loader))
        sampler.use_epoch(epoch)
        transform.set_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(model):
                loss, logs = compute_loss(model, batch)
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
            accelerator.log({f"{stage}/{k}": v for k, v in logs.items()} | {f"{stage}/lr": scheduler.get_last_lr()[0]},
                            step=step)  # fmt: skip
            if evaluate_fn and args.eval_steps and step % args.eval_steps == 0 and step < steps:
                result = evaluate_fn(model)
                history.append({"step": step, **{k: v for k, v in result.items() if isinstance(v, float)}})
                accelerator.log({f"{stage}/eval_{k}": v for k, v in history[-1].items() if k != "step"}, step=step)
                accelerator.print(f"[{stage}] step {step}: {history[-1]}")
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, checkpoints, step)
            if step >= steps:
                break
    progress.close()
    return accelerator.unwrap_model(model), history


def save_checkpoint(accelerator, checkpoints, step):
    """Writes the state to a temporary folder and renames it, so a kill never leaves a half-written checkpoint."""
    final = os.path.join(checkpoints, f"step_{step}")
    partial = final + ".tmp"
    accelerator.save_state(partial)
    if accelerator.is_main_process:
        with open(os.path.join(partial, "trainer_state.json"), "w") as f:
            json.dump({"step": step}, f)
        os.replace(partial, final)
    accelerator.wait_for_everyone()


def image_normalization(args, source_dir):
    """
    The (mean, std) of every transform and saved processor: those of the image processor of the checkpoint the model
    starts from (--model_name_or_path for the source stage, else the source model); ViT's 0.5 where it has none.
    """
    checkpoints = (
        [args.model_name_or_path] if args.stage in ("all", "source") else [source_dir, args.model_name_or_path]
    )
    for checkpoint in filter(None, checkpoints):
        try:
            config, _ = ImageProcessingMixin.get_image_processor_dict(checkpoint)
        except OSError:  # no preprocessor_config.json there
            continue
        if "image_mean" in config and "image_std" in config:
            return [float(v) for v in config["image_mean"]], [float(v) for v in config["image_std"]]
    if args.model_name_or_path:
        logging.getLogger(__name__).warning(f"{args.model_name_or_path} has no image processor with a mean and std "
                                            "(preprocessor_config.json): normalising with mean = std = 0.5")  # fmt: skip
    return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def fine_tuning_groups(model, learning_rate, layer_decay, head_scale):
    """
    AdamW parameter groups of the ViT fine-tuning recipe (BEiT, MAE): encoder layer i of L learns at learning_rate *
    layer_decay^(L - i), the embeddings at layer_decay^L, the new decode head at head_scale * learning_rate; biases,
    norms, the CLS token and position embeddings get no weight decay.
    """
    depth = model.config.num_hidden_layers
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("vit.layers."):
            scale = layer_decay ** (depth - 1 - int(name.split(".")[2]))
        elif name.startswith("vit."):
            scale = layer_decay**depth
        else:
            scale = head_scale
        no_decay = param.ndim == 1 or name.endswith(("cls_token", "position_embeddings", "mask_token"))
        group = groups.setdefault((scale, no_decay), {"params": [], "lr": learning_rate * scale}
                                  | ({"weight_decay": 0.0} if no_decay else {}))  # fmt: skip
        group["params"].append(param)
    return list(groups.values())


def warmup_cosine(steps, warmup_ratio):
    warmup = max(1, int(steps * warmup_ratio))
    return lambda s: (
        (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )


def save_stage(model, folder, processor, accelerator, summary):
    if accelerator.is_main_process:
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        with open(os.path.join(folder, "training_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    accelerator.wait_for_everyone()


def write_model_cards(args, results, source_dir, widget_image):
    """A README.md model card in every stage folder, with the measured metrics and the Hub ids of this run."""
    # A local run has no Hub repos: its cards name the stage folders and link nothing that does not exist.
    tmt_repo = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
    acte_repo = args.hub_acte_model_id or f"{tmt_repo}-acte"
    folder = lambda name: os.path.join(args.output_dir, name)  # noqa: E731
    widget = lambda repo: [f"https://huggingface.co/{repo}/resolve/main/widget.png"] if args.push_to_hub else None  # noqa: E731
    base_model = (
        args.model_name_or_path if args.model_name_or_path and not os.path.exists(args.model_name_or_path) else None
    )
    target_miou = lambda stage: results[stage]["target_val"]["mean_iou"]  # noqa: E731
    classes = f"{args.label_space}: {', '.join(get_label_space(args.label_space).classes)}"
    cards = {}
    if results.get("source") and "source_val" in results["source"]:
        source_repo = tmt_repo if args.stage == "source" else f"{tmt_repo}-source"
        cards["source"] = tmt_model_card(
            source_repo, source=args.source, target=args.source, method="finetune",
            metrics={"mean_iou": results["source"]["source_val"]["mean_iou"]}, base_model=base_model,
            widget_images=widget(source_repo), split=args.eval_split,
            training={"stage": "source", "data": args.source, "classes": classes, "steps": args.source_steps,
                      f"mIoU on {args.target} (source-only)": round(target_miou("source"), 4)},
        )  # fmt: skip
    if results.get("acte"):
        metrics = {k: v for k, v in results["acte"].items() if k == "discriminator_accuracy"}
        cards["acte"] = acte_model_card(acte_repo, source=args.source, target=args.target, metrics=metrics,
                                        training={**results["acte"].get("training", {}), "steps": args.acte_steps,
                                                  "auxiliary head's classes": classes,
                                                  "batch size": args.batch_size})  # fmt: skip
    for name, method in zip(run_names(args), args.method):
        if results.get(name):
            repo = tmt_repo if name == pushed_method(args) else f"{tmt_repo}-{name}"
            with_acte = uses_tma(method, args) and args.focus_map != "oracle"
            cards[name] = tmt_model_card(
                repo, source=args.source, target=args.target, method=method,
                metrics={"mean_iou": target_miou(name)}, with_acte=with_acte,
                acte_repo_id=args.hub_acte_model_id if with_acte else None,
                widget_images=widget(repo), split=args.target_eval_split,
                training={"source model": source_dir, "classes": classes,
                          "labelled target images": results[name]["labelled_target_images"],
                          "steps": args.transfer_steps, "batch size": args.batch_size,
                          "learning rate": args.transfer_learning_rate,
                          "source-only target mIoU": round(target_miou("source"), 4)},
            )  # fmt: skip
    for name, card in cards.items():
        if os.path.isdir(folder(name)):
            card.save(os.path.join(folder(name), "README.md"))
            if name != "acte":
                widget_image.save(os.path.join(folder(name), "widget.png"))  # a target example for the widget


def pushed_method(args):
    """The transfer method whose model goes to --hub_model_id: the last of --method (tmt_paper by default)."""
    return run_names(args)[-1]


def finished(folder):
    path = os.path.join(folder, "training_summary.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def use_cpu_cores(args, accelerator):
    """
    `accelerate launch` sets OMP_NUM_THREADS=1 for its child unless told otherwise, which leaves all cores but one idle
    in a single-process CPU run. Use every physical core there, unless `--cpu_threads` says how many.
    """
    if accelerator.device.type != "cpu":
        return
    if args.cpu_threads is None:
        launched_with_one = os.environ.get("OMP_NUM_THREADS") == "1" and "ACCELERATE_MIXED_PRECISION" in os.environ
        if accelerator.num_processes != 1 or not launched_with_one:
            return
        args.cpu_threads = max(1, min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0))))
    torch.set_num_threads(args.cpu_threads)
    accelerator.print(f"using {torch.get_num_threads()} CPU thread(s)")


def main(argv=None):
    args = parse_args(argv)
    log_with = None if args.report_to == "none" else args.report_to
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=log_with, project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=False),
    )  # fmt: skip
    use_cpu_cores(args, accelerator)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    if log_with:
        accelerator.init_trackers(
            "tmt-hf", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )
    folder = lambda name: os.path.join(args.output_dir, name)  # noqa: E731
    source_dir = args.source_model or folder("source")
    args.image_mean, args.image_std = image_normalization(args, source_dir)
    processor = TMTImageProcessor(size={"height": args.image_size[0], "width": args.image_size[1]},
                                  image_mean=args.image_mean, image_std=args.image_std)  # fmt: skip
    label_space = get_label_space(args.label_space)
    results_path = os.path.join(args.output_dir, "results.json")
    results = {}
    if os.path.isfile(results_path) and args.resume_from_checkpoint:
        with open(results_path) as f:
            results = json.load(f)
    results["args"] = vars(args)
    results["generator_version"] = GENERATOR_VERSION  # what the synthetic/* domains were generated with
    wall_times = results["wall_time_s"] = (
        results.get("wall_time_s") if isinstance(results.get("wall_time_s"), dict) else {}
    )

    # Data: the target's evaluation split is the yardstick of every stage.
    with accelerator.main_process_first():
        target_eval = domain_split(args.target, args.target_eval_split, args.num_eval, args)
        source_eval = domain_split(args.source, args.eval_split, args.num_eval, args)
    widget_image = target_eval[0]["image"]  # the model cards' widget example
    num_labels = len(label_space.classes)
    # mIoU over the classes a benchmark labels (CamVid: 11 of 19); for other data, over the classes its labels hold.
    target_classes = labelled_classes(args.target, args.label_space) or present_classes(target_eval)
    source_classes = labelled_classes(args.source, args.label_space) or present_classes(source_eval)
    target_eval_loader = accelerator.prepare(eval_loader(target_eval, args))
    source_eval_loader = accelerator.prepare(eval_loader(source_eval, args))
    evaluate_target = lambda m, loader=target_eval_loader: evaluate(m, loader, accelerator, num_labels, target_classes)  # noqa: E731

    # ---- Stage 1: source model -----------------------------------------------------------------------------------
    if args.stage in ("all", "source") and not (args.resume_from_checkpoint and finished(folder("source"))):
        stage_started = time.time()
        with accelerator.main_process_first():
            source_train = domain_split(args.source, args.train_split, args.num_source_train, args)
        loader, sampler, transform = train_loader(source_train, args, args.seed, appearance_jitter=True)
        if args.model_name_or_path:
            model, info = TMTForSemanticSegmentation.from_pretrained(
                args.model_name_or_path, output_loading_info=True, id2label=label_space.id2label,
                label2id=label_space.label2id, ignore_mismatched_sizes=True,
            )  # fmt: skip
            backbone_missing = [k for k in info["missing_keys"] if k.startswith("vit.") and ".tma_" not in k]
            if backbone_missing:
                raise ValueError(
                    f"{args.model_name_or_path}: backbone weights missing from the checkpoint: {sorted(backbone_missing)[:5]}"
                )
            model.vit.resize_position_embeddings(args.crop_size)  # a 224x224 grid becomes the crop's, once
            groups = fine_tuning_groups(model, args.learning_rate, args.layer_decay, args.head_learning_rate_scale)
        else:
            model = TMTForSemanticSegmentation(TMTConfig.from_preset(
                args.preset, image_size=args.crop_size[0], id2label=label_space.id2label, label2id=label_space.label2id
            ))  # fmt: skip
            groups = [{"params": list(model.parameters())}]
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, weight_decay=WEIGHT_DECAY)
        evaluate_source = lambda m: evaluate(m, source_eval_loader, accelerator, num_labels, source_classes)  # noqa: E731
        model, history = run_training("source", model, loader, sampler, transform, segmentation_loss, optimizer,
                                      args.source_steps, args, accelerator, evaluate_source)  # fmt: skip
        source_metrics, target_metrics = evaluate_source(model), evaluate_target(model)
        results["source"] = {"source_val": source_metrics, "target_val": target_metrics, "history": history}
        save_stage(model, folder("source"), processor, accelerator, results["source"])
        source_dir = folder("source")
        wall_times["source"] = round(time.time() - stage_started, 1)
        accelerator.print(f"[source] source mIoU {source_metrics['mean_iou']:.4f}, "
                          f"target mIoU (source-only) {target_metrics['mean_iou']:.4f}")  # fmt: skip
    elif args.stage in ("all", "source"):
        results["source"] = finished(folder("source"))

    # ---- Stage 2: ACTE on source + target images ---------------------------------------------------------------------
    acte_dir = args.acte_model or folder("acte")
    if args.stage in ("all", "acte") and not (args.resume_from_checkpoint and finished(folder("acte"))):
        stage_started = time.time()
        with accelerator.main_process_first():
            source_part = domain_split(args.source, args.train_split, args.num_source_train, args)
            target_part = domain_split(args.target, args.target_train_split, args.num_target_unlabeled, args,
                                       with_labels=False)  # fmt: skip
        target_part = target_part.add_column("label", [None] * len(target_part), feature=datasets.Image())
        # Random global appearance on both domains, so that the discriminator has to find local shifts.
        loader, sampler, transform = train_loader(two_domains(source_part, target_part), args, args.seed + 1,
                                                  appearance_jitter=True)  # fmt: skip
        acte = ACTEModel(ACTEConfig(cell_size=ACTE_CELL_SIZE, num_semantic_classes=num_labels))
        optimizer = torch.optim.AdamW(acte.parameters(), lr=ACTE_LEARNING_RATE, weight_decay=WEIGHT_DECAY)

        def acte_loss(model, batch):
            out = model(
                pixel_values=batch["pixel_values"], domain_labels=batch["domain_labels"], labels=batch["labels"]
            )
            logs = {"loss": out.loss.item(), "domain_loss": out.domain_loss.item()}
            return out.loss, logs | {"semantic_loss": out.semantic_loss.item()}

        with accelerator.main_process_first():
            held_out = two_domains(*[domain_split(name, split, args.num_eval, args, with_labels=False) for name, split
                                     in ((args.source, args.eval_split), (args.target, args.target_eval_split))])  # fmt: skip
        held_out_loader = accelerator.prepare(eval_loader(held_out, args))
        shift_loader = None
        if args.target.startswith("synthetic/"):  # the generator's shift masks as labels: 255 where it restyled
            with accelerator.main_process_first():
                shifted = load_domain(args.target, args.target_eval_split, num_samples=args.num_eval,
                                      synthetic_size=tuple(args.image_size))  # fmt: skip
            shifted = shifted.select_columns(["image", "shift_mask"]).rename_column("shift_mask", "label")
            shift_loader = accelerator.prepare(eval_loader(shifted, args))
        evaluate_fn = lambda m: evaluate_acte(m, held_out_loader, accelerator, shift_loader)  # noqa: E731
        acte, history = run_training("acte", acte, loader, sampler, transform, acte_loss, optimizer, args.acte_steps,
                                     args, accelerator, evaluate_fn)  # fmt: skip
        acte_metrics = evaluate_fn(acte)
        results["acte"] = {**acte_metrics, "history": history,
                           "training": {"source images": len(source_part), "target images (unlabelled)": len(target_part)}}  # fmt: skip
        save_stage(acte, folder("acte"), processor, accelerator, results["acte"])
        acte_dir = folder("acte")
        wall_times["acte"] = round(time.time() - stage_started, 1)
        shift = ""
        if "focus_shift_auroc" in acte_metrics:
            shift = (f", focus-map AUROC against the shift mask {acte_metrics['focus_shift_auroc']:.3f} (pooled), "
                     f"{acte_metrics['focus_shift_auroc_per_image']:.3f} (per image)")  # fmt: skip
        accelerator.print(f"[acte] held-out discriminator accuracy {acte_metrics['discriminator_accuracy']:.4f}{shift}")
    elif args.stage in ("all", "acte"):
        results["acte"] = finished(folder("acte"))

    # ---- Stage 3: transfer to the target domain, each method from the source model on the same budget --------------
    if args.stage in ("all", "transfer"):
        with accelerator.main_process_first():
            labelled_rows = []
            if args.target_train_samples:
                target_train, labelled_rows = labelled_target(args)
            else:  # no target labels: the self-training methods step over the unlabelled target images
                target_train = domain_split(args.target, args.target_train_split, args.num_target_unlabeled, args,
                                            with_labels=args.focus_map == "error_oracle")  # fmt: skip
        if not results.get("source"):
            results["source"] = {"target_val": evaluate_target(TMTForSemanticSegmentation.from_pretrained(source_dir))}
        for name, method in zip(run_names(args), args.method):
            if args.resume_from_checkpoint and finished(folder(name)):
                results[name] = finished(folder(name))
                continue
            stage_started = time.time()
            set_seed(args.seed)
            model = TMTForSemanticSegmentation.from_pretrained(source_dir)
            if label_space_of(model.config.id2label) is not label_space:
                raise ValueError(f"The source model {source_dir!r} predicts {list(model.config.id2label.values())}, not "
                                 f"the --label_space {args.label_space} classes {list(label_space.classes)}")  # fmt: skip
            uses_map, tma_on = method in MAP_METHODS, uses_tma(method, args)
            tma = [p for n, p in model.named_parameters() if n.endswith("tma_lambda")]
            others = [p for n, p in model.named_parameters() if not n.endswith("tma_lambda")]
            groups = [{"params": others}]
            if tma_on:
                groups.append({"params": tma, "lr": args.transfer_learning_rate * TMA_LR_SCALE, "weight_decay": 0.0})
            else:  # TMA off: λ stays frozen at 0, whatever map is given
                for p in tma:
                    p.requires_grad_(False)
            # Source + unlabelled target images of the methods that use them (with the oracle's maps, for its runs).
            oracle = uses_map and args.focus_map == "oracle"
            train_data, method_eval_loader, auxiliary = target_train, target_eval_loader, None
            with accelerator.main_process_first():
                if method in ALIGNMENT_LEVEL or method in SELF_TRAINING:
                    auxiliary = two_domains(*[domain_split(n, s, c, args, oracle_maps=oracle) for n, s, c in (
                        (args.source, args.train_split, args.num_source_train),
                        (args.target, args.target_train_split, args.num_target_unlabeled))])  # fmt: skip
                if oracle:
                    train_data = domain_split(args.target, args.target_train_split, len(target_train), args,
                                              with_labels=args.target_train_samples > 0, oracle_maps=True)  # fmt: skip
                    oracle_eval = domain_split(
                        args.target, args.target_eval_split, args.num_eval, args, oracle_maps=True
                    )
            if oracle:
                method_eval_loader = accelerator.prepare(eval_loader(oracle_eval, args))
            elif args.focus_map == "error_oracle" and uses_map:  # the source model's errors, from the labels
                map_of = source_errors(TMTForSemanticSegmentation.from_pretrained(source_dir))
                train_data = with_focus_maps(target_train, map_of, args, from_labels=True)
                auxiliary = with_focus_maps(auxiliary, map_of, args, from_labels=True)
            elif uses_map:  # ACTE's maps, computed once per image instead of on every batch
                acte = ACTEModel.from_pretrained(acte_dir)
                if tma_on:
                    model.attach_acte(acte)  # the saved model computes its maps itself
                shuffled, map_of = args.focus_map == "shuffled", acte_focus(acte)
                train_data = with_focus_maps(target_train, map_of, args, shuffled)
                if auxiliary is not None:
                    auxiliary = with_focus_maps(auxiliary, map_of, args, shuffled)
                if shuffled and tma_on:  # evaluated with shuffled maps too (the attached ACTE would give its own)
                    shuffled_eval = with_focus_maps(target_eval.select_columns(["image", "label"]), map_of, args, True)
                    method_eval_loader = accelerator.prepare(eval_loader(shuffled_eval, args))
            # Photometric augmentation on labelled images; unlabelled ones (no target labels) are the teacher's view.
            train_data = repeated_to_fill(train_data, args.batch_size * accelerator.num_processes)
            loader, sampler, transform = train_loader(train_data, args, args.seed + 2,
                                                      appearance_jitter=args.target_train_samples > 0)  # fmt: skip
            trained, compute_loss = model, segmentation_loss
            if method in ALIGNMENT_LEVEL:
                _, _, auxiliary_transform = train_loader(auxiliary, args, args.seed + 3, appearance_jitter=True)
                trained = AdversarialAlignment(
                    model, ALIGNMENT_LEVEL[method], args.alignment_weight, args.transfer_steps
                )
                groups[0]["params"] = groups[0]["params"] + list(trained.discriminator.parameters())
                compute_loss = alignment_loss(auxiliary, auxiliary_transform, args, accelerator)
            elif method in SELF_TRAINING:  # the teacher's weak view: no photometric change (the student's is strong)
                _, _, auxiliary_transform = train_loader(auxiliary, args, args.seed + 3)
                view = functools.partial(strong_view, image_mean=args.image_mean, image_std=args.image_std)
                trained = SelfTraining(model, EMA_DECAY, PSEUDO_LABEL_THRESHOLD, view, args.mask_ratio,
                                       class_quantile=args.pseudo_label_class_quantile)  # fmt: skip
                parts = args.tmt_parts if method == "tmt" else ()
                compute_loss = selftraining_loss(auxiliary, auxiliary_transform, args, accelerator, parts)
            optimizer = torch.optim.AdamW(groups, lr=args.transfer_learning_rate, weight_decay=WEIGHT_DECAY)
            segmenter_of = lambda m: getattr(accelerator.unwrap_model(m), "segmenter", m)  # noqa: E731
            evaluate_method = lambda m, loader=method_eval_loader: evaluate_target(segmenter_of(m), loader)  # noqa: E731
            trained, history = run_training(name, trained, loader, sampler, transform, compute_loss, optimizer,
                                            args.transfer_steps, args, accelerator, evaluate_method)  # fmt: skip
            model = getattr(trained, "segmenter", trained)
            metrics = evaluate_method(model)
            lambdas = [p.detach().abs().mean().item() for p in tma]
            results[name] = {"target_val": metrics, "history": history, "mean_abs_lambda": lambdas,
                             "labelled_target_images": len(labelled_rows), "labelled_target_rows": labelled_rows}  # fmt: skip
            save_stage(model, folder(name), processor, accelerator, results[name])
            wall_times[name] = round(time.time() - stage_started, 1)
            accelerator.print(f"[{name}] target mIoU {metrics['mean_iou']:.4f}")

    wall_times["total"] = round(sum(v for k, v in wall_times.items() if k != "total"), 1)
    if accelerator.is_main_process:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        print_table(args, results)
        write_model_cards(args, results, source_dir, widget_image)
    if args.push_to_hub and accelerator.is_main_process:
        if args.stage in ("all", "acte"):
            push_folder(folder("acte"), args.hub_acte_model_id, args.hub_token)
        if args.stage in ("all", "transfer"):
            push_folder(folder(pushed_method(args)), args.hub_model_id, args.hub_token)
        elif args.stage == "source":
            push_folder(folder("source"), args.hub_model_id, args.hub_token)
    accelerator.end_training()
    return results


def present_classes(dataset):
    """The train ids that occur in a dataset's labels (255 left out)."""
    counts = np.zeros(256, dtype=np.int64)
    for label in dataset.select_columns(["label"]):
        counts += np.bincount(np.asarray(label["label"]).ravel(), minlength=256)
    return [int(c) for c in np.flatnonzero(counts[:IGNORE_INDEX])]


def print_table(args, results):
    rows = [("source-only", (results.get("source") or {}).get("target_val"))]
    rows += [(name, (results.get(name) or {}).get("target_val")) for name in run_names(args)]
    rows = [(name, r) for name, r in rows if r]
    if not rows:
        return
    width = max(len(name) for name, _ in rows)
    table = [f"| {'method':<{width}} |  mIoU  |", f"|{'-' * (width + 2)}|--------|"]
    table += [f"| {name:<{width}} | {100 * r['mean_iou']:6.2f} |" for name, r in rows]
    classes = rows[0][1].get("classes")
    over = f"over {len(classes)} classes" if classes else "over the classes present"
    print(f"\nTarget mIoU on {args.target} ({args.target_eval_split}, {over}), source {args.source}:\n"
          + "\n".join(table))  # fmt: skip
    print(f"results: {os.path.join(args.output_dir, 'results.json')}")


if __name__ == "__main__":
    main()
