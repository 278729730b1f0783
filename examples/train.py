"""Train TMT with Accelerate: the whole cross-domain protocol, from a source model to TMT on the target domain.

    accelerate launch examples/train.py                       # all stages on the embedded generated benchmark
    accelerate launch examples/train.py --source cityscapes --target bdd100k --preset base \\
        --model_name_or_path google/vit-base-patch16-224-in21k --image_size 512 1024 --crop_size 512 512

Stages (`--stage`):
  source    a segmentation ViT (TMTForSemanticSegmentation, no map) on the source labels;
  acte      ACTE on source + target images (domain discriminator), with source labels for its auxiliary head;
  transfer  from the source model, fine-tune on the labelled target images: `--method tmt` attaches the frozen ACTE
            and trains with TMA; `--method finetune` is the vanilla baseline (same model and budget, TMA off);
  all       (default) source, acte, then transfer (by default finetune, align_patch and tmt), and a table of target
            mIoU.
`--method oracle` (generated targets only) is an ablation: TMA fed the generator's ground-truth shift mask instead of
ACTE's map, at training and evaluation, an upper bound on what a better estimator could give TMA.
`--method source_replay align_global align_patch` also train on the source labels and unlabelled target images (none,
image-level or patch-level adversarial alignment); `--alignment focus` gives the TMA methods the focus-weighted
alignment (see AdversarialAlignment), their default: TMT is then the paper's three parts (ACTE, TMA and region-level
alignment). `--source_labels none` keeps the source images for the alignment but drops their labels; `focused` weights
each source pixel's loss by its focus map, `focused_shuffled` by another source image's (ablations);
`--target_focus_weight B` weights each labelled target pixel's loss by 1 + B × its focus.
TMT trains on ACTE's maps computed once per image (`with_focus_maps`).

Outputs: OUTPUT_DIR/{source,acte,tmt,finetune}/ (save_pretrained folders with processor and model card),
OUTPUT_DIR/results.json, and OUTPUT_DIR/checkpoints/<stage>/step_<N>/ for --resume_from_checkpoint.
"""

import argparse
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

import tmt_hf
from tmt_hf import ACTEConfig, ACTEModel, TMTConfig, TMTForSemanticSegmentation, TMTImageProcessor
from tmt_hf.data import DOMAINS, GENERATOR_VERSION, IGNORE_INDEX, SegmentationTransform, collate, load_domain
from tmt_hf.hub import acte_model_card, push_folder, tmt_model_card
from tmt_hf.metrics import MeanIoU, shift_auroc

STAGES = ("source", "acte", "tmt", "finetune", "patch", "oracle", "source_replay", "align_global", "align_patch")
# Transfer methods that feed TMA a map (ACTE's, or the generator's for `oracle`).
TMA_METHODS = ("tmt", "patch", "oracle")
# Transfer methods that also train on source labels and unlabelled target images (see AdversarialAlignment).
ALIGNMENT_LEVEL = {"source_replay": None, "align_global": "global", "align_patch": "patch"}


def trains_on_source_images(method, args):
    """source_replay and align_* always train on source and unlabelled target images, the TMA methods unless
    --alignment none."""
    return method in ALIGNMENT_LEVEL or (method in TMA_METHODS and args.alignment != "none")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--stage", choices=["all", "source", "acte", "transfer"], default="all", help="which stage(s) to run"
    )
    parser.add_argument("--method", nargs="+", choices=["both", "all", *STAGES[2:]], default=None,
                        help="transfer-stage methods (default: finetune align_patch tmt): both = finetune + tmt; "
                             "all = finetune + tmt + "
                             "patch, TMA fed ACTE's discriminator on an equal-sized patch grid instead of adaptive "
                             "regions; oracle: see above; source_replay = finetune that also trains on source labels; "
                             "align_global / align_patch = source_replay + adversarial alignment of image-level / "
                             "patch-level features (map-free comparators of the focus alignment)")  # fmt: skip
    parser.add_argument("--source", default="synthetic/clear", help="benchmark name, Hub dataset id or local path")
    parser.add_argument("--target", default="synthetic/night", help="benchmark name, Hub dataset id or local path")
    parser.add_argument("--image_column", default=None, help="override the image column of Hub/local datasets")
    parser.add_argument("--label_column", default=None, help="override the label column of Hub/local datasets")
    parser.add_argument("--train_split", default="train", help="split of the source and target datasets to train on")
    parser.add_argument(
        "--eval_split", default="validation", help="split to evaluate on (target mIoU, held-out ACTE accuracy)"
    )
    parser.add_argument(
        "--output_dir", default="outputs/tmt-clear2night", help="stage folders, checkpoints and results.json go here"
    )
    parser.add_argument(
        "--overwrite_output_dir", action="store_true", help="replace the stage folders of an earlier run"
    )
    # Models.
    parser.add_argument(
        "--preset", default="tiny", choices=sorted(tmt_hf.TMT_PRESETS), help="ViT size when training from scratch"
    )
    parser.add_argument(
        "--model_name_or_path",
        default=None,
        help="source stage: a stock ViT or TMT checkpoint to start from (default: random init)",
    )
    parser.add_argument("--source_model", default=None, help="transfer stage: default OUTPUT_DIR/source")
    parser.add_argument("--acte_model", default=None, help="transfer stage: default OUTPUT_DIR/acte")
    parser.add_argument("--tma_init", type=float, default=0.0, help="initial λ of TMA")
    parser.add_argument(
        "--decode_layers",
        type=int,
        nargs="+",
        default=None,
        help="1-based encoder layers the decode head fuses (default: 4 evenly spaced)",
    )
    parser.add_argument(
        "--tma_layers",
        type=int,
        nargs="*",
        default=None,
        help="0-based encoder layers with TMA (default: all); in the transfer stage, overrides the source model's",
    )
    parser.add_argument(
        "--acte_overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="transfer stage: read-time changes to the frozen ACTE's config, e.g. focus_alpha=1.0 cell_size=4 kappa=5",
    )
    parser.add_argument(
        "--tma_form",
        choices=["key_bias", "query_temperature", "output_gate", "value_reweight", "output_film"],
        default=None,
        help="how the focus map enters the attention (see TMTConfig.tma_form); in the transfer stage, overrides the "
        "source model's",
    )
    parser.add_argument("--tma_lr_scale", type=float, default=100.0, help="learning-rate multiplier of λ")
    parser.add_argument(
        "--alignment",
        choices=["none", "global", "patch", "focus"],
        default=None,
        help="transfer stage of tmt/patch/oracle (default: focus): also train on source labels and unlabelled target "
        "images with an adversarial alignment of token features (see AdversarialAlignment): 'focus' weights each "
        "token by the focus map; 'global' and 'patch' are the map-free levels, for ablation; 'none': TMA alone",
    )
    parser.add_argument("--alignment_weight", type=float, default=0.1, help="weight of the adversarial domain loss")
    parser.add_argument(
        "--class_conditional_alignment",
        action="store_true",
        help="patch and focus alignment (align_patch, or the TMA methods' --alignment patch/focus): condition the "
        "discriminator on the model's class probabilities per token (CDAN), aligning within classes",
    )
    parser.add_argument(
        "--source_labels",
        choices=["all", "none", "focused", "focused_shuffled"],
        default="all",
        help="how the methods that train on source images (align_*, and tmt/patch/oracle with alignment) use the source "
        "labels: 'none' shows the source images to the domain discriminator only; 'focused' (map methods only) "
        "weights each source pixel's loss by its focus map, normalised to mean 1 over the batch's labelled source "
        "pixels: importance weighting towards the regions ACTE finds target-like; 'focused_shuffled' (its control) "
        "gives each source image the weights of the one before it in the batch, cyclically (ablations of the "
        "source-label replay)",
    )
    parser.add_argument(
        "--target_focus_weight",
        type=float,
        default=0.0,
        help="map methods (tmt, patch, oracle): weight each labelled target pixel's loss by 1 + this × its focus, "
        "normalised to mean 1 over the batch's labelled target pixels, so that the few target labels teach the "
        "regions whose transfer is hard first (0: unweighted)",
    )
    parser.add_argument(
        "--transfer_tma_init",
        type=float,
        default=None,
        help="transfer stage: reset every λ to this value (default: keep the source model's)",
    )
    parser.add_argument(
        "--tma_map_normalization",
        choices=["none", "minmax"],
        default=None,
        help="transfer stage: per-image rescaling of the focus map (default: the model's config)",
    )
    parser.add_argument(
        "--acte_cell_size", type=int, default=2, help="ACTE's seed-grid cell size c (feature positions)"
    )
    parser.add_argument(
        "--acte_encoder_channels",
        type=int,
        nargs="+",
        default=[32, 64, 96],
        help="ACTE encoder stage widths (each halves the resolution)",
    )
    parser.add_argument(
        "--acte_focus_alpha", type=float, default=0.5, help="α of ACTE's focus map (1: transferability only)"
    )
    # Data sizes.
    parser.add_argument(
        "--image_size",
        type=int,
        nargs=2,
        default=[128, 256],
        metavar=("H", "W"),
        help="images are resized to this (generated scenes are rendered at it)",
    )
    parser.add_argument(
        "--crop_size",
        type=int,
        nargs=2,
        default=[128, 256],
        metavar=("H", "W"),
        help="training crop after random scaling",
    )
    parser.add_argument(
        "--scale_range", type=float, nargs=2, default=[0.75, 1.5], help="random scale range of training images"
    )
    parser.add_argument("--num_source_train", type=int, default=300, help="max source training images")
    parser.add_argument("--num_target_unlabeled", type=int, default=200, help="target images ACTE sees (no labels)")
    parser.add_argument("--target_train_samples", type=int, default=None, help="labelled target images (transfer)")
    parser.add_argument("--target_train_fraction", type=float, default=None, help="or: fraction of the target split")
    parser.add_argument("--num_eval", type=int, default=100, help="max evaluation images")
    parser.add_argument(
        "--on_bad_sample",
        choices=["raise", "skip"],
        default="raise",
        help="unreadable or inconsistent dataset rows: stop, or skip with a warning",
    )
    # Optimisation.
    parser.add_argument("--source_steps", type=int, default=600, help="optimizer steps of the source stage")
    parser.add_argument("--acte_steps", type=int, default=300,
                        help="optimizer steps of the ACTE stage (the most, with --acte_stop_accuracy)")  # fmt: skip
    parser.add_argument("--acte_stop_accuracy", type=float, default=None,
                        help="stop the ACTE stage at the first check from --acte_min_steps on where the discriminator's "
                             "accuracy on held-out train-split images (label-free) reaches this (default: no early stop)")  # fmt: skip
    parser.add_argument("--acte_min_steps", type=int, default=100, help="with --acte_stop_accuracy: the earliest stop")
    parser.add_argument("--acte_check_every", type=int, default=50, help="with --acte_stop_accuracy: steps per check")
    parser.add_argument("--acte_num_monitor", type=int, default=40,
                        help="with --acte_stop_accuracy: train-split images per domain held out of the ACTE stage as "
                             "its monitor (the ones after --num_source_train / --num_target_unlabeled)")  # fmt: skip
    parser.add_argument(
        "--transfer_steps",
        type=int,
        default=300,
        help="optimizer steps of each transfer method (the same budget for all)",
    )
    parser.add_argument("--batch_size", type=int, default=8, help="per device")
    parser.add_argument("--eval_batch_size", type=int, default=16, help="per device")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="source stage learning rate (AdamW)")
    parser.add_argument("--acte_learning_rate", type=float, default=1e-3, help="ACTE stage learning rate")
    parser.add_argument("--transfer_learning_rate", type=float, default=2e-4, help="transfer stage learning rate")
    parser.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    parser.add_argument(
        "--warmup_ratio",
        type=float,
        default=0.05,
        help="fraction of each stage's steps with linear warm-up (then cosine decay)",
    )
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1, help="batches per optimizer step")
    parser.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="Accelerate mixed precision (default: Accelerate's config)",
    )
    parser.add_argument("--cpu_threads", type=int, default=None,
                        help="torch threads on CPU (default: every physical core for a single process, even where "
                             "`accelerate launch` set OMP_NUM_THREADS=1)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="seed of initialisation, data order and augmentation")
    # Operability.
    parser.add_argument("--eval_steps", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    parser.add_argument("--checkpointing_steps", type=int, default=0, help="save state every N steps (0: never)")
    parser.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' to resume every unfinished stage from its newest checkpoint, or a checkpoint path",
    )
    parser.add_argument("--report_to", default="none", help="Accelerate trackers: tensorboard, wandb, ... or 'all'")
    parser.add_argument("--push_to_hub", action="store_true", help="push the ACTE and TMT folders to the Hub")
    parser.add_argument("--hub_model_id", default=None, help="org/tmt-<src>2<tgt>")
    parser.add_argument("--hub_acte_model_id", default=None, help="org/acte-<src>2<tgt>")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in token)")
    parser.add_argument("--hub_private_repo", action="store_true", help="create the Hub repos as private")
    args = parser.parse_args(argv)
    validate_args(args)
    return args


def validate_args(args):
    """Refuses bad flag combinations before any work starts."""
    if args.method is not None and args.stage in ("source", "acte"):
        sys.exit(f"--method chooses the transfer-stage methods; --stage {args.stage} does not use it")
    expand = {"both": ["finetune", "tmt"], "all": ["finetune", "tmt", "patch"]}
    given = args.method or ["finetune", "align_patch", "tmt"]
    args.method = list(dict.fromkeys(m for name in given for m in expand.get(name, [name])))
    stage_dirs = {name: os.path.join(args.output_dir, name) for name in STAGES}
    if args.stage == "transfer":
        source = args.source_model or stage_dirs["source"]
        if not os.path.isfile(os.path.join(source, "config.json")):
            sys.exit(f"--stage transfer needs a trained source model: {source!r} has none. Pass --source_model or run "
                     "--stage source first.")  # fmt: skip
        acte = args.acte_model or stage_dirs["acte"]
        with_acte = [m for m in args.method if m in ("tmt", "patch")]
        if with_acte and not os.path.isfile(os.path.join(acte, "config.json")):
            sys.exit(f"--method {' '.join(with_acte)} needs a trained ACTE: {acte!r} has none. Pass --acte_model or "
                     "run --stage acte first.")  # fmt: skip
    if args.alignment is None:
        args.alignment = "focus" if set(TMA_METHODS) & set(args.method) else "none"
    if args.alignment != "none" and not set(TMA_METHODS) & set(args.method):
        sys.exit(f"--alignment {args.alignment} applies to the TMA methods (tmt, patch, oracle), not to "
                 f"{' '.join(args.method)}; align_global / align_patch are the comparators without a map")  # fmt: skip
    if args.alignment_weight < 0:
        sys.exit(f"--alignment_weight must be >= 0, got {args.alignment_weight}")
    if args.class_conditional_alignment:
        levels = {ALIGNMENT_LEVEL.get(m, args.alignment) for m in args.method if trains_on_source_images(m, args)}
        if not levels or levels - {"patch", "focus"}:
            sys.exit("--class_conditional_alignment conditions the patch or focus alignment: every method must be "
                     "finetune, align_patch, or tmt / patch / oracle with --alignment patch or focus, got "
                     f"{' '.join(args.method)} (--alignment {args.alignment})")  # fmt: skip
    if args.source_labels != "all" and (
        "source_replay" in args.method or not any(trains_on_source_images(m, args) for m in args.method)
    ):
        sys.exit(f"--source_labels {args.source_labels} applies to the methods that align source images: "
                 "align_global, align_patch, or tmt / patch / oracle with an --alignment other than none "
                 "(source_replay without its source labels would be finetune)")  # fmt: skip
    if args.source_labels.startswith("focused") and not set(args.method) <= set(TMA_METHODS):
        sys.exit(f"--source_labels {args.source_labels} needs a focus map: only the TMA methods (tmt, patch, "
                 f"oracle) have one, got {' '.join(args.method)}")  # fmt: skip
    if args.target_focus_weight < 0:
        sys.exit(f"--target_focus_weight must be >= 0, got {args.target_focus_weight}")
    if args.target_focus_weight and not set(args.method) <= set(TMA_METHODS):
        sys.exit(f"--target_focus_weight needs a focus map: only the TMA methods (tmt, patch, oracle) have one, got "
                 f"{' '.join(args.method)}")  # fmt: skip
    if "oracle" in args.method and not args.target.startswith("synthetic/"):
        sys.exit("--method oracle needs a generated target (synthetic/<domain>): only the generator knows which "
                 "pixels its domain shifted")  # fmt: skip
    if "oracle" in args.method and args.push_to_hub:
        sys.exit("--method oracle is an ablation that reads the evaluation labels; it is not pushed to the Hub")
    if args.push_to_hub:
        if args.stage in ("all", "transfer", "source") and not args.hub_model_id:
            sys.exit("--push_to_hub needs --hub_model_id (org/tmt-<src>2<tgt>)")
        if args.stage in ("all", "acte") and not args.hub_acte_model_id:
            sys.exit("--push_to_hub needs --hub_acte_model_id (org/acte-<src>2<tgt>) to push the ACTE model")
    try:
        args.acte_overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.acte_overrides)}
    except ValueError:
        sys.exit(f"--acte_overrides takes KEY=VALUE items with JSON values, got {args.acte_overrides}")
    unknown = set(args.acte_overrides) - set(ACTEConfig().to_dict())
    if unknown:
        sys.exit(f"--acte_overrides: {sorted(unknown)} are not ACTEConfig fields")
    if args.target_train_samples is not None and args.target_train_fraction is not None:
        sys.exit("Give --target_train_samples or --target_train_fraction, not both")
    if args.target_train_fraction is not None and not 0 < args.target_train_fraction <= 1:
        sys.exit(f"--target_train_fraction must lie in (0, 1], got {args.target_train_fraction}")
    if args.target_train_samples is None and args.target_train_fraction is None:
        args.target_train_samples = 20
    if args.cpu_threads is not None and args.cpu_threads < 1:
        sys.exit("--cpu_threads must be >= 1")
    if args.acte_stop_accuracy is not None and not 0 < args.acte_stop_accuracy <= 1:
        sys.exit(f"--acte_stop_accuracy must lie in (0, 1], got {args.acte_stop_accuracy}")
    if args.acte_min_steps < 0:
        sys.exit(f"--acte_min_steps must be >= 0, got {args.acte_min_steps}")
    for name in ("source_steps", "acte_steps", "transfer_steps", "batch_size", "gradient_accumulation_steps",
                 "acte_check_every", "acte_num_monitor"):  # fmt: skip
        if getattr(args, name) < 1:
            sys.exit(f"--{name} must be >= 1")
    if any(c > s for c, s in zip(args.crop_size, [round(x * args.scale_range[1]) for x in args.image_size])):
        sys.exit(
            f"--crop_size {args.crop_size} is larger than the largest scaled image {args.image_size} x {args.scale_range[1]}"
        )
    if args.resume_from_checkpoint not in (None, "latest") and not os.path.isdir(args.resume_from_checkpoint):
        sys.exit(
            f"--resume_from_checkpoint {args.resume_from_checkpoint!r} is neither 'latest' nor a checkpoint folder"
        )
    planned = {"all": STAGES, "source": ("source",), "acte": ("acte",), "transfer": STAGES[2:]}[args.stage]
    existing = [d for name, d in stage_dirs.items() if name in planned and os.path.isdir(d) and os.listdir(d)]
    if existing and not (args.overwrite_output_dir or args.resume_from_checkpoint):
        sys.exit(f"Output folders {existing} exist and are not empty: pass --overwrite_output_dir, or "
                 "--resume_from_checkpoint latest to reuse finished stages and resume unfinished ones.")  # fmt: skip


def segmentation_loss(model, batch):
    """
    The source and transfer stages' loss: cross-entropy on the labelled images. The map TMA gets is the batch's
    `focus` (ACTE's cached map, see `with_focus_maps`, or the oracle's, see `domain_split`), else none (or the
    attached ACTE's).
    """
    loss = model(
        pixel_values=batch["pixel_values"], labels=batch["labels"], transferability_map=batch.get("focus")
    ).loss
    return loss, {"loss": loss.item()}


def mean_one_over_labelled(weights, labels):
    """Per-pixel loss weights rescaled to mean 1 over the labelled pixels (`labels != IGNORE_INDEX`)."""
    return weights / weights[labels != IGNORE_INDEX].mean().clamp_min(1e-6)


def weighted_cross_entropy(logits, labels, weights):
    """Cross-entropy with each labelled pixel's term multiplied by `weights`, averaged over the labelled pixels."""
    pixel_losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
    return (weights * pixel_losses).sum() / (labels != IGNORE_INDEX).sum().clamp_min(1)


def focus_weighted_segmentation_loss(strength):
    """`segmentation_loss` with each labelled pixel's cross-entropy weighted by 1 + `strength` × the batch's map,
    rescaled to mean 1 over the labelled pixels."""

    def compute_loss(model, batch):
        labels = batch["labels"]
        logits = model(pixel_values=batch["pixel_values"], transferability_map=batch["focus"]).logits
        loss = weighted_cross_entropy(logits, labels, mean_one_over_labelled(1 + strength * batch["focus"], labels))
        return loss, {"loss": loss.item()}

    return compute_loss


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient is negated and scaled by `coefficient` (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, features, coefficient):
        ctx.coefficient = coefficient
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


class AdversarialAlignment(torch.nn.Module):
    """
    Transfer-stage training wrapper (not saved with the model): segmentation loss on every labelled image (target and
    source) plus a domain discriminator on the last encoder layer's patch tokens behind a gradient reversal layer, so
    that the encoder learns features the discriminator cannot tell apart (DANN). The reversal coefficient ramps from
    0 to 1 over training as in DANN. `level`:
      - "global": one mean token per image (image-level alignment);
      - "patch": every token, equally weighted;
      - "focus": every token weighted by the focus map TMA receives, so the alignment concentrates on the regions
        whose transfer is hard (our reconstruction of the paper's region-level adaptation);
      - None: no discriminator (source labels only).
    `class_conditional` (patch and focus levels): the discriminator sees each token's feature ⊗ the model's class
    probabilities over that token (detached), CDAN's multilinear conditioning (Long et al., 2018), so that tokens
    are aligned within their predicted class rather than across classes.
    """

    def __init__(self, segmenter, level, weight, steps, class_conditional=False):
        super().__init__()
        self.segmenter, self.level, self.weight, self.steps = segmenter, level, weight, steps
        if class_conditional and level not in ("patch", "focus"):
            raise ValueError(f"class-conditional alignment needs the patch or focus level, not {level!r}")
        self.class_conditional = class_conditional
        hidden = segmenter.config.hidden_size
        features = hidden * segmenter.config.num_labels if class_conditional else hidden
        self.discriminator = torch.nn.Sequential(
            torch.nn.Linear(features, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # checkpointed: the ramp resumes

    def forward(self, pixel_values, labels, domain_labels, transferability_map=None, pixel_weights=None):
        """`pixel_weights` (optional, like `labels`) weights each labelled pixel's cross-entropy."""
        last = self.segmenter.config.num_hidden_layers
        out = self.segmenter(pixel_values=pixel_values, labels=labels if pixel_weights is None else None,
                             transferability_map=transferability_map,
                             output_hidden_states=[last] if self.level else None)  # fmt: skip
        loss = out.loss
        if pixel_weights is not None:
            loss = weighted_cross_entropy(out.logits, labels, pixel_weights)
        logs = {"segmentation_loss": loss.item()}
        if not self.level:
            return loss, logs
        progress = min(1.0, self.step.item() / self.steps)
        self.step += 1
        tokens = GradientReversal.apply(out.hidden_states[last][:, 1:], 2 / (1 + math.exp(-10 * progress)) - 1)
        domains = domain_labels.float()[:, None].expand(tokens.shape[:2])
        if self.level == "global":
            tokens, domains = tokens.mean(1, keepdim=True), domains[:, :1]
        if self.class_conditional:
            # Zero-padded as the segmenter pads its input (to `size_multiple`), then averaged over each token's patch.
            probabilities = out.logits.detach().softmax(1)
            multiple = self.segmenter.size_multiple
            probabilities = F.pad(
                probabilities, (0, -probabilities.shape[3] % multiple, 0, -probabilities.shape[2] % multiple)
            )
            probabilities = F.avg_pool2d(probabilities, self.segmenter.config.patch_size).flatten(2).transpose(1, 2)
            tokens = (tokens[..., :, None] * probabilities[..., None, :]).flatten(2)
        weights = torch.ones_like(domains)
        if self.level == "focus":
            if out.focus_map is None:
                raise ValueError("focus alignment needs a focus map: give a map or attach an ACTE")
            weights = out.focus_map.flatten(1).detach().to(tokens.dtype)
        domain_logits = self.discriminator(tokens)[..., 0]
        domain_loss = F.binary_cross_entropy_with_logits(domain_logits, domains, reduction="none")
        domain_loss = (weights * domain_loss).sum() / weights.sum().clamp_min(1e-6)
        logs["domain_loss"] = domain_loss.item()
        return loss + self.weight * domain_loss, logs


def alignment_loss(auxiliary, auxiliary_transform, args, accelerator):
    """
    The loss of the alignment methods: each labelled target batch is extended with `batch_size // 2` labelled source
    and as many unlabelled target images, drawn with the global RNG (which Accelerate checkpoints, so a resumed run
    draws the same; every process draws for all and keeps its own share). `auxiliary` holds both, with
    `domain_labels` (and `focus`, the map of the TMA methods); the labels of the unlabelled target images are
    dropped, and those of the source images too with --source_labels none; with `focused` the source pixels' losses
    are weighted by their focus (see --source_labels), and with --target_focus_weight the labelled target pixels'.
    """
    domains = torch.tensor(auxiliary["domain_labels"])
    pools = [torch.nonzero(domains == d)[:, 0] for d in (0, 1)]
    count = max(1, args.batch_size // 2)
    share = slice(accelerator.process_index * count, (accelerator.process_index + 1) * count)

    def compute_loss(model, batch):
        picks = [pool[torch.randint(len(pool), (count * accelerator.num_processes,))][share] for pool in pools]
        auxiliary_transform.set_epoch(int(torch.randint(1 << 30, ())))
        extra = collate([auxiliary[int(i)] for i in torch.cat(picks)])
        device = batch["pixel_values"].device
        pixel_values = torch.cat([batch["pixel_values"], extra["pixel_values"].to(device)])
        labels = torch.cat([batch["labels"], extra["labels"].to(device)])
        focus = torch.cat([batch["focus"], extra["focus"].to(device)]) if "focus" in batch else None
        sources = slice(len(batch["labels"]), len(batch["labels"]) + count)
        labels[sources.stop :] = IGNORE_INDEX  # the unlabelled target images
        weights = None
        if args.source_labels.startswith("focused") or args.target_focus_weight:
            weights = torch.ones(labels.shape, dtype=focus.dtype, device=device)
        if args.source_labels == "none":
            labels[sources] = IGNORE_INDEX
        elif args.source_labels.startswith("focused"):
            source_focus = focus[sources] if args.source_labels == "focused" else focus[sources].roll(1, dims=0)
            weights[sources] = mean_one_over_labelled(source_focus, labels[sources])
        if args.target_focus_weight:
            targets = slice(0, len(batch["labels"]))
            weights[targets] = mean_one_over_labelled(1 + args.target_focus_weight * focus[targets], labels[targets])
        domain_labels = torch.cat([torch.ones(len(batch["labels"]), dtype=torch.long), extra["domain_labels"]])
        return model(pixel_values, labels, domain_labels.to(device), focus, weights)

    return compute_loss


@torch.no_grad()
def with_focus_maps(dataset, acte, args):
    """
    `dataset` with a `focus` column: ACTE's focus map of each image at --image_size, computed once (as grayscale
    0-255), so that training TMT does not run ACTE on every batch; the transforms crop and flip it with the image.
    """
    images = dataset.select_columns(["image"])
    images.set_transform(SegmentationTransform(train=False, size=tuple(args.image_size)))
    height, width = args.image_size
    acte.eval()
    maps = []
    for batch in DataLoader(images, batch_size=args.eval_batch_size, collate_fn=collate):
        pixel_values = batch["pixel_values"].to(acte.device)
        focus = F.interpolate(acte(pixel_values).focus_map[:, None], size=pixel_values.shape[2:], mode="bilinear")
        focus = (255 * focus[:, 0, :height, :width].clamp(0, 1)).round().byte().cpu().numpy()
        maps += [datasets.Image().encode_example(Image.fromarray(m)) for m in focus]
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
    One domain's split, with a `sample_index` column for reproducible augmentation. `oracle_maps` adds the oracle's
    map for the generated `--target` as a `focus` column: the generator's shift mask on target images, and on another
    domain's images (which the target's shifts never touched) the pixels of the classes the target restyles.
    """
    dataset = load_domain(name, split, image_column=args.image_column, label_column=args.label_column,
                          num_samples=num_samples, synthetic_size=tuple(args.image_size),
                          on_bad_sample=args.on_bad_sample)  # fmt: skip
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
    return dataset.add_column("sample_index", list(range(len(dataset))))


def split_off_monitor(dataset, name, first, args):
    """
    A domain's train-split images as (the first `first`, which the ACTE stage trains on; the `--acte_num_monitor`
    after them, unlabelled: the stopping rule's monitor).
    """
    if len(dataset) < first + args.acte_num_monitor:
        sys.exit(f"--acte_stop_accuracy holds out --acte_num_monitor {args.acte_num_monitor} {name} images after the "
                 f"{first} the ACTE stage trains on, but its {args.train_split!r} split has {len(dataset)}; lower "
                 "--acte_num_monitor, --num_source_train or --num_target_unlabeled")  # fmt: skip
    return dataset.select(range(first)), dataset.select(range(first, len(dataset))).select_columns(["image"])


def with_domain_labels(parts):
    """The (source, target) datasets concatenated, with `domain_labels` 0 / 1."""
    return datasets.concatenate_datasets(
        [part.add_column("domain_labels", [d] * len(part)) for d, part in enumerate(parts)]
    )


def two_domains(source_part, target_part):
    """Source then target images with `domain_labels` 0 / 1 and one `sample_index` over both (for augmentation)."""
    mixed = with_domain_labels((source_part, target_part)).remove_columns("sample_index")
    return mixed.add_column("sample_index", list(range(len(mixed))))


def train_loader(dataset, args, seed, appearance_jitter=False):
    transform = SegmentationTransform(train=True, size=tuple(args.image_size), crop_size=tuple(args.crop_size),
                                      scale_range=tuple(args.scale_range), seed=seed,
                                      appearance_jitter=appearance_jitter)  # fmt: skip
    dataset.set_transform(transform)
    sampler = EpochShuffleSampler(len(dataset), seed)
    # A private generator: creating an iterator each epoch must not draw from the global RNG, which Accelerate
    # checkpoints (it also drives dropout), or a resumed run would diverge.
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    return loader, sampler, transform


def eval_loader(dataset, args):
    dataset.set_transform(SegmentationTransform(train=False, size=tuple(args.image_size)))
    return DataLoader(dataset, batch_size=args.eval_batch_size, collate_fn=collate)


@torch.no_grad()
def evaluate(model, loader, accelerator, num_labels):
    """
    Target mIoU of a segmenter (fed the batches' `focus` maps where the loader has them, the oracle's); predictions and
    labels are gathered across processes once per pixel.
    """
    model.eval()
    metric = MeanIoU(num_labels)
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"], transferability_map=batch.get("focus")).logits
        predictions, references = accelerator.gather_for_metrics((logits.argmax(dim=1), batch["labels"]))
        metric.update(predictions, references)
    model.train()
    result = metric.compute()
    return {"mean_iou": result["mean_iou"], "mean_accuracy": result["mean_accuracy"],
            "overall_accuracy": result["overall_accuracy"],
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
    steps = [
        int(d.split("_")[1])
        for d in os.listdir(stage_checkpoints)
        if d.startswith("step_") and d.split("_")[1].isdigit()
    ]
    return os.path.join(stage_checkpoints, f"step_{max(steps)}") if steps else None


def run_training(stage, model, loader, sampler, transform, compute_loss, optimizer, steps, args, accelerator,
                 evaluate_fn=None, stop_fn=None):  # fmt: skip
    """
    The shared step loop: accumulation, scheduler, progress bar, periodic evaluation, checkpoints and resume.
    `stop_fn(model, step)`, called after every optimizer step, ends the stage early when it returns True.
    """
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

    batches_per_epoch = len(loader)
    progress = tqdm(total=steps, initial=step, desc=stage, disable=not accelerator.is_local_main_process)
    history = []
    model.train()
    stopped = False
    while step < steps and not stopped:
        epoch, skip = divmod(step * args.gradient_accumulation_steps, batches_per_epoch)
        sampler.use_epoch(epoch)
        transform.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
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
            logs = {f"{stage}/{k}": v for k, v in logs.items()} | {f"{stage}/lr": scheduler.get_last_lr()[0]}
            progress.set_postfix(loss=f"{loss.item():.3f}")
            accelerator.log(logs, step=step)
            if evaluate_fn and args.eval_steps and step % args.eval_steps == 0 and step < steps:
                result = evaluate_fn(model)
                history.append({"step": step, **{k: v for k, v in result.items() if not isinstance(v, list)}})
                accelerator.log({f"{stage}/eval_{k}": v for k, v in history[-1].items() if k != "step"}, step=step)
                accelerator.print(f"[{stage}] step {step}: {history[-1]}")
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, checkpoints, step)
            stopped = stop_fn is not None and stop_fn(model, step)
            if stopped:
                accelerator.print(f"[{stage}] early stop at step {step} of {steps}")
            if stopped or step >= steps:
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


def write_model_cards(args, results, dirs, source_dir, widget_image):
    """A README.md model card in every stage folder, with the measured metrics and the Hub ids of this run."""
    # A local run has no Hub repos: its cards name the stage folders and link nothing that does not exist.
    tmt_repo = args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir))
    acte_repo = args.hub_acte_model_id or f"{tmt_repo}-acte"
    source_repo = tmt_repo if args.stage == "source" else f"{tmt_repo}-source"
    for stage in ("source", "tmt", "finetune", "patch"):  # a target example for the card's widget
        if os.path.isdir(dirs[stage]):
            widget_image.save(os.path.join(dirs[stage], "widget.png"))
    widget = lambda repo: [f"https://huggingface.co/{repo}/resolve/main/widget.png"] if args.push_to_hub else None  # noqa: E731
    base_model = (
        args.model_name_or_path if args.model_name_or_path and not os.path.exists(args.model_name_or_path) else None
    )
    target_miou = lambda stage: results[stage]["target_val"]["mean_iou"]  # noqa: E731
    cards = {}
    if results.get("source") and "source_val" in results["source"]:
        cards["source"] = tmt_model_card(
            source_repo, source=args.source, target=args.source,
            method="finetune", metrics={"mean_iou": results["source"]["source_val"]["mean_iou"]},
            base_model=base_model, widget_images=widget(source_repo), split=args.eval_split,
            training={"stage": "source", "data": args.source, "steps": args.source_steps,
                      f"mIoU on {args.target} (source-only)": round(target_miou("source"), 4)},
        )  # fmt: skip
    if results.get("acte"):
        metrics = {k: v for k, v in results["acte"].items() if k == "discriminator_accuracy"}
        cards["acte"] = acte_model_card(acte_repo, source=args.source, target=args.target, metrics=metrics,
                                        training={**results["acte"].get("training", {}),
                                                  "steps": results["acte"].get("stopping", {}).get("steps", args.acte_steps),
                                                  "batch size": args.batch_size})  # fmt: skip
    for method in ("tmt", "finetune", "patch"):
        if results.get(method):
            repo = {"tmt": tmt_repo, "finetune": f"{tmt_repo}-finetune-baseline", "patch": f"{tmt_repo}-patch-baseline"}
            cards[method] = tmt_model_card(
                repo[method], source=args.source, target=args.target, method=method,
                metrics={"mean_iou": target_miou(method)}, with_acte=method != "finetune",
                acte_repo_id=args.hub_acte_model_id if method != "finetune" else None,
                widget_images=widget(repo[method]), split=args.eval_split,
                training={"source model": source_dir, "labelled target images": results[method].get("labelled_target_images"),
                          "steps": args.transfer_steps, "batch size": args.batch_size,
                          "learning rate": args.transfer_learning_rate,
                          "adversarial alignment on source + unlabelled target images":
                              args.alignment if method != "finetune" else "none",
                          "source-only target mIoU": round(target_miou("source"), 4)},
            )  # fmt: skip
    for stage, card in cards.items():
        if os.path.isdir(dirs[stage]):
            card.save(os.path.join(dirs[stage], "README.md"))


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
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.gradient_accumulation_steps,
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
    dirs = {name: os.path.join(args.output_dir, name) for name in STAGES}
    processor = TMTImageProcessor(size={"height": args.image_size[0], "width": args.image_size[1]})
    started = time.time()
    results_path = os.path.join(args.output_dir, "results.json")
    results = {}
    if os.path.isfile(results_path) and args.resume_from_checkpoint:
        with open(results_path) as f:
            results = json.load(f)
    results["args"] = vars(args)
    results["generator_version"] = GENERATOR_VERSION  # what the synthetic/* domains were generated with

    # Data: the target validation split is the yardstick of every stage.
    with accelerator.main_process_first():
        target_eval = domain_split(args.target, args.eval_split, args.num_eval, args)
        source_eval = domain_split(args.source, args.eval_split, args.num_eval, args)
    widget_image = target_eval[0]["image"]  # the model cards' widget example
    target_eval_loader = accelerator.prepare(eval_loader(target_eval, args))
    source_eval_loader = accelerator.prepare(eval_loader(source_eval, args))
    num_labels = TMTConfig().num_labels
    tma_overrides = {} if args.tma_layers is None else {"tma_layers": args.tma_layers}  # TMTConfig overrides, if given
    if args.tma_form is not None:
        tma_overrides["tma_form"] = args.tma_form

    # ---- Stage 1: source model -----------------------------------------------------------------------------------
    source_dir = args.source_model or dirs["source"]
    if args.stage in ("all", "source") and not (args.resume_from_checkpoint and finished(dirs["source"])):
        with accelerator.main_process_first():
            source_train = domain_split(args.source, args.train_split, args.num_source_train, args)
        loader, sampler, transform = train_loader(source_train, args, args.seed)
        if args.model_name_or_path:
            model, info = TMTForSemanticSegmentation.from_pretrained(args.model_name_or_path, output_loading_info=True,
                                                                     num_labels=num_labels, ignore_mismatched_sizes=True)  # fmt: skip
            backbone_missing = [k for k in info["missing_keys"] if k.startswith("vit.") and ".tma_" not in k]
            if backbone_missing:
                raise ValueError(
                    f"{args.model_name_or_path}: backbone weights missing from the checkpoint: {backbone_missing[:5]}"
                )
        else:
            config = TMTConfig.from_preset(args.preset, image_size=args.crop_size[0], tma_init=args.tma_init,
                                           decode_layers=args.decode_layers, **tma_overrides)  # fmt: skip
            model = TMTForSemanticSegmentation(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)

        model, history = run_training("source", model, loader, sampler, transform, segmentation_loss, optimizer,
                                      args.source_steps, args, accelerator,
                                      lambda m: evaluate(m, source_eval_loader, accelerator, num_labels))  # fmt: skip
        source_metrics = evaluate(model, source_eval_loader, accelerator, num_labels)
        target_metrics = evaluate(model, target_eval_loader, accelerator, num_labels)
        results["source"] = {"source_val": source_metrics, "target_val": target_metrics, "history": history}
        save_stage(model, dirs["source"], processor, accelerator, results["source"])
        source_dir = dirs["source"]
        accelerator.print(
            f"[source] source mIoU {source_metrics['mean_iou']:.4f}, target mIoU (source-only) {target_metrics['mean_iou']:.4f}"
        )
    elif args.stage in ("all", "source"):
        results["source"] = finished(dirs["source"])

    # ---- Stage 2: ACTE on source + target images ---------------------------------------------------------------------
    acte_dir = args.acte_model or dirs["acte"]
    if args.stage in ("all", "acte") and not (args.resume_from_checkpoint and finished(dirs["acte"])):
        monitor_size = args.acte_num_monitor if args.acte_stop_accuracy is not None else 0
        with accelerator.main_process_first():
            source_part = domain_split(args.source, args.train_split, args.num_source_train + monitor_size, args)
            target_part = domain_split(
                args.target, args.train_split, args.num_target_unlabeled + monitor_size, args, with_labels=False
            )
        if monitor_size:  # the stopping rule's images, loaded with the stage's own and split off
            source_part, source_monitor = split_off_monitor(source_part, args.source, args.num_source_train, args)
            target_part, target_monitor = split_off_monitor(target_part, args.target, args.num_target_unlabeled, args)
        target_part = target_part.add_column("label", [None] * len(target_part), feature=datasets.Image())
        mixed = two_domains(source_part, target_part)
        # Random global appearance on both domains, so that the discriminator has to find local shifts.
        loader, sampler, transform = train_loader(mixed, args, args.seed + 1, appearance_jitter=True)
        acte = ACTEModel(ACTEConfig(cell_size=args.acte_cell_size, encoder_channels=args.acte_encoder_channels,
                                    focus_alpha=args.acte_focus_alpha, num_semantic_classes=num_labels))  # fmt: skip
        optimizer = torch.optim.AdamW(acte.parameters(), lr=args.acte_learning_rate, weight_decay=args.weight_decay)

        def acte_loss(model, batch):
            out = model(
                pixel_values=batch["pixel_values"], domain_labels=batch["domain_labels"], labels=batch["labels"]
            )
            return out.loss, {
                "loss": out.loss.item(),
                "domain_loss": out.domain_loss.item(),
                "semantic_loss": out.semantic_loss.item(),
            }

        with accelerator.main_process_first():
            held_out_parts = [domain_split(name, args.eval_split, args.num_eval, args, with_labels=False)
                              for name in (args.source, args.target)]  # fmt: skip
        held_out = with_domain_labels(held_out_parts)
        held_out_loader = accelerator.prepare(eval_loader(held_out, args))
        shift_loader = None
        if args.target.startswith("synthetic/"):  # the generator's shift masks as labels: 255 where it restyled
            with accelerator.main_process_first():
                shifted = load_domain(args.target, args.eval_split, num_samples=args.num_eval,
                                      synthetic_size=tuple(args.image_size))  # fmt: skip
            shifted = shifted.select_columns(["image", "shift_mask"]).rename_column("shift_mask", "label")
            shift_loader = accelerator.prepare(eval_loader(shifted, args))
        stop_fn, stopping = None, {"checks": []}
        if args.acte_stop_accuracy is not None:
            # The label-free stopping rule: the discriminator's accuracy on the train-split images that follow the
            # ones this stage trains on (no segmentation labels, no shift mask, no evaluation image).
            monitor_loader = accelerator.prepare(
                eval_loader(with_domain_labels((source_monitor, target_monitor)), args)
            )

            def stop_fn(model, step):
                if step % args.acte_check_every:
                    return False
                accuracy = evaluate_acte(model, monitor_loader, accelerator)["discriminator_accuracy"]
                stopping["checks"].append({"step": step, "monitor_discriminator_accuracy": round(accuracy, 4)})
                accelerator.print(f"[acte] step {step}: monitor discriminator accuracy {accuracy:.4f}")
                if step >= args.acte_min_steps and accuracy >= args.acte_stop_accuracy:
                    stopping["steps"] = step
                    return True
                return False

        acte, history = run_training("acte", acte, loader, sampler, transform, acte_loss, optimizer, args.acte_steps,
                                     args, accelerator,
                                     lambda m: evaluate_acte(m, held_out_loader, accelerator, shift_loader),
                                     stop_fn)  # fmt: skip
        acte_metrics = evaluate_acte(acte, held_out_loader, accelerator, shift_loader)
        results["acte"] = {**acte_metrics, "history": history}
        if stop_fn is not None:
            results["acte"]["stopping"] = {"stop_accuracy": args.acte_stop_accuracy, "min_steps": args.acte_min_steps,
                                           "max_steps": args.acte_steps, "steps": args.acte_steps, **stopping}  # fmt: skip
        results["acte"]["training"] = {
            "source images": len(source_part),
            "target images (unlabelled)": len(target_part),
        }
        save_stage(acte, dirs["acte"], processor, accelerator, results["acte"])
        acte_dir = dirs["acte"]
        shift = ""
        if "focus_shift_auroc" in acte_metrics:
            shift = (f", focus-map AUROC against the shift mask {acte_metrics['focus_shift_auroc']:.3f} (pooled), "
                     f"{acte_metrics['focus_shift_auroc_per_image']:.3f} (per image)")  # fmt: skip
        accelerator.print(f"[acte] held-out discriminator accuracy {acte_metrics['discriminator_accuracy']:.4f}{shift}")
    elif args.stage in ("all", "acte"):
        results["acte"] = finished(dirs["acte"])

    # ---- Stage 3: transfer to the labelled target images, TMT and the vanilla fine-tuning baseline ---------------
    if args.stage in ("all", "transfer"):
        with accelerator.main_process_first():
            target_train = domain_split(
                args.target, args.train_split, None if args.target_train_fraction else args.target_train_samples, args
            )
        if args.target_train_fraction:
            target_train = target_train.select(range(max(1, round(len(target_train) * args.target_train_fraction))))
        if "source" not in results or results.get("source") is None:
            model = TMTForSemanticSegmentation.from_pretrained(source_dir)
            results["source"] = {
                "target_val": evaluate(accelerator.prepare(model), target_eval_loader, accelerator, num_labels)
            }
        # Source + unlabelled target images of the alignment methods, loaded once; the oracle's copy carries its maps.
        auxiliaries = {}
        for method in args.method:
            oracle = method == "oracle"
            if args.resume_from_checkpoint and finished(dirs[method]):
                results[method] = finished(dirs[method])
                continue
            set_seed(args.seed)
            model = TMTForSemanticSegmentation.from_pretrained(source_dir, **tma_overrides)
            if method == "tmt":
                model.attach_acte(ACTEModel.from_pretrained(acte_dir, **args.acte_overrides))
            elif method == "patch":  # the same ACTE, its discriminator read on the seed grid: no clustering
                model.attach_acte(ACTEModel.from_pretrained(acte_dir, **{**args.acte_overrides, "num_iterations": 0}))
            is_tma = lambda name: name.endswith(("tma_lambda", "tma_offset"))  # noqa: E731
            tma_parameters = [p for n, p in model.named_parameters() if is_tma(n)]
            others = [p for n, p in model.named_parameters() if p.requires_grad and not is_tma(n)]
            if args.tma_map_normalization is not None:
                model.config.tma_map_normalization = args.tma_map_normalization
            uses_tma = method in TMA_METHODS
            if args.transfer_tma_init is not None and uses_tma:
                model.config.tma_init = args.transfer_tma_init
                with torch.no_grad():
                    for name, p in model.named_parameters():
                        if name.endswith("tma_lambda"):
                            p.fill_(args.transfer_tma_init)
            if not uses_tma:  # TMA off: no map is given, λ stays frozen at its initial value
                for p in tma_parameters:
                    p.requires_grad_(False)
                groups = [{"params": others}]
            else:
                groups = [
                    {"params": others},
                    {
                        "params": tma_parameters,
                        "lr": args.transfer_learning_rate * args.tma_lr_scale,
                        "weight_decay": 0.0,
                    },
                ]
            with_source_images = trains_on_source_images(method, args)
            level = ALIGNMENT_LEVEL.get(method, args.alignment)  # the discriminator's (None: source labels only)
            if with_source_images and oracle not in auxiliaries:
                with accelerator.main_process_first():
                    splits = [domain_split(name, args.train_split, count, args, oracle_maps=oracle) for name, count
                              in ((args.source, args.num_source_train), (args.target, args.num_target_unlabeled))]  # fmt: skip
                auxiliaries[oracle] = two_domains(*splits)
            auxiliary_data = auxiliaries[oracle] if with_source_images else None
            train_data, eval_loader_of_method = target_train, target_eval_loader
            if oracle:
                with accelerator.main_process_first():
                    train_data = domain_split(args.target, args.train_split, len(target_train), args, oracle_maps=True)
                    oracle_eval = domain_split(args.target, args.eval_split, args.num_eval, args, oracle_maps=True)
                eval_loader_of_method = accelerator.prepare(eval_loader(oracle_eval, args))
            if model.acte is not None:  # ACTE's maps, computed once per image instead of on every batch
                train_data = with_focus_maps(target_train, model.acte, args)
                auxiliary_data = auxiliary_data and with_focus_maps(auxiliary_data, model.acte, args)
            loader, sampler, transform = train_loader(train_data, args, args.seed + 2)
            if not with_source_images:
                trained = model
                compute_loss = segmentation_loss
                if args.target_focus_weight:
                    compute_loss = focus_weighted_segmentation_loss(args.target_focus_weight)
            else:
                _, _, auxiliary_transform = train_loader(auxiliary_data, args, args.seed + 3)
                trained = AdversarialAlignment(
                    model,
                    level,
                    args.alignment_weight,
                    args.transfer_steps,
                    class_conditional=args.class_conditional_alignment,
                )
                groups[0]["params"] = groups[0]["params"] + list(trained.discriminator.parameters())
                compute_loss = alignment_loss(auxiliary_data, auxiliary_transform, args, accelerator)
            optimizer = torch.optim.AdamW(groups, lr=args.transfer_learning_rate, weight_decay=args.weight_decay)

            trained, history = run_training(method, trained, loader, sampler, transform, compute_loss, optimizer,
                                            args.transfer_steps, args, accelerator,
                                            lambda m: evaluate(getattr(accelerator.unwrap_model(m), "segmenter", m),
                                                               eval_loader_of_method, accelerator, num_labels))  # fmt: skip
            model = getattr(trained, "segmenter", trained)
            metrics = evaluate(model, eval_loader_of_method, accelerator, num_labels)
            lambdas = [p.detach().abs().mean().item() for n, p in model.named_parameters() if n.endswith("tma_lambda")]
            results[method] = {"target_val": metrics, "history": history, "mean_abs_lambda": lambdas}
            results[method]["labelled_target_images"] = len(target_train)
            save_stage(model, dirs[method], processor, accelerator, results[method])
            accelerator.print(f"[{method}] target mIoU {metrics['mean_iou']:.4f}")

    results["wall_time_s"] = round(time.time() - started, 1)
    if accelerator.is_main_process:
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        rows = [("source-only", results.get("source", {}) and results["source"].get("target_val"))]
        rows += [(m, results.get(m, {}) and results[m].get("target_val"))
                 for m in ("finetune", "source_replay", "align_global", "align_patch", "patch", "oracle", "tmt")]  # fmt: skip
        rows = [(name, r) for name, r in rows if r]
        width = max([len(name) for name, _ in rows], default=0)
        if rows:
            table = [f"| {'method':<{width}} |  mIoU  |", f"|{'-' * (width + 2)}|--------|"]
            table += [f"| {name:<{width}} | {100 * r['mean_iou']:6.2f} |" for name, r in rows]
            print(f"\nTarget mIoU on {args.target} ({args.eval_split}), source {args.source}:\n" + "\n".join(table))
        print(f"results: {results_path}")
        write_model_cards(args, results, dirs, source_dir, widget_image)
    if args.push_to_hub and accelerator.is_main_process:
        if args.stage in ("all", "acte"):
            push_folder(dirs["acte"], args.hub_acte_model_id, args.hub_token, args.hub_private_repo)
        if args.stage in ("all", "transfer"):
            pushed = next(m for m in ("tmt", "finetune", "patch") if m in args.method)
            push_folder(dirs[pushed], args.hub_model_id, args.hub_token, args.hub_private_repo)
        elif args.stage == "source":
            push_folder(dirs["source"], args.hub_model_id, args.hub_token, args.hub_private_repo)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
