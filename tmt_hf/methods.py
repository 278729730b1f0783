"""
Transfer methods: how a source-trained segmenter adapts to a target domain, one registered object per method.

A method says what it needs (labelled target images are always given; `auxiliary_images` adds labelled source and
unlabelled target images to every batch; `uses_focus_map` asks for a focus map per image), how it wraps the model
(`wrap`), its optimizer's parameter groups (`parameter_groups`) and its loss on a draw (`loss`). Its hyper-parameters
are dataclass fields. `examples/train.py` runs any registered method by name (`--method NAME`); register your own with
`register_method` in a file passed as `--method_file`:

    from dataclasses import dataclass

    import torch.nn.functional as F

    from tmt_hf.methods import FineTune, register_method


    @register_method
    @dataclass
    class FineTuneSmoothed(FineTune):
        "Fine-tuning with label smoothing."

        name = "finetune_smoothed"
        label_smoothing: float = 0.1

        def loss(self, model, batch, auxiliary=None):
            logits = model(pixel_values=batch["pixel_values"]).logits
            logits = F.interpolate(logits, size=batch["labels"].shape[-2:], mode="bilinear")
            loss = F.cross_entropy(logits, batch["labels"], ignore_index=255, label_smoothing=self.label_smoothing)
            return loss, {"loss": loss.item()}
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import datasets
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from .adaptation import IGNORE_INDEX, AdversarialAlignment, SelfTraining
from .data import SegmentationTransform, collate
from .data.transforms import random_global_appearance

TRANSFER_METHODS: dict[str, Callable[[], "TransferMethod"]] = {}


def register_method(method=None, *, name: str | None = None):
    """
    Registers a method class (or a factory returning a method) under `name` (default: its `name`). Usable as a
    decorator; a later registration under the same name replaces the earlier one.
    """

    def register(factory):
        key = name or factory.name
        if not key:
            raise ValueError(f"{factory!r} has no name: set its `name` class attribute or pass name=")
        TRANSFER_METHODS[key] = factory
        return factory

    return register(method) if method is not None else register


def get_method(name: str) -> "TransferMethod":
    """A new instance of the method registered as `name`, its hyper-parameters at their defaults."""
    if name not in TRANSFER_METHODS:
        raise ValueError(f"Unknown transfer method {name!r}; registered: {', '.join(sorted(TRANSFER_METHODS))}")
    method = TRANSFER_METHODS[name]()
    method.name = name
    return method


@dataclass
class TransferContext:
    """
    What the runner knows that a method may need.

    Args:
        steps: the stage's optimizer steps.
        batch_size: labelled target images per batch and process.
        image_size: the (height, width) images are resized to; focus maps are cached at it.
        image_mean, image_std: the normalisation of every image.
        unlabelled_only: no target labels: the batches are unlabelled target images (self-training only).
        acte: the frozen ACTE of the run, for the methods that use a focus map.
        source_model: the source model's folder.
    """

    steps: int
    batch_size: int
    image_size: tuple[int, int]
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    unlabelled_only: bool = False
    acte: torch.nn.Module | None = None
    source_model: str | None = None


@dataclass
class TransferMethod:
    """
    The interface of a transfer method. The base class is fine-tuning on the labelled target images: subclasses
    override what differs.

    Class attributes:
        name: the registry key, the results key and the output folder of the method.
        description: what the model is, for its model card ("This model is <description>").
        auxiliary_images: each batch draws labelled source and unlabelled target images besides the labelled target
            images (`auxiliary_counts` says how many of each).
        auxiliary_appearance_jitter: photometric augmentation on the auxiliary images.
        uses_focus_map: the method is given a focus map per image (`add_focus_maps`).
        maps_from_acte: those maps are the trained ACTE's (the run then needs one).
        reads_target_pool_labels: the auxiliary target images keep their labels (an oracle's; adaptation never
            reads them).
        needs_target_labels: the method cannot run without labelled target images.
        trains_tma: TMA's λ learns (and the saved model carries the ACTE that feeds it); otherwise λ stays 0.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    auxiliary_images: ClassVar[bool] = False
    auxiliary_appearance_jitter: ClassVar[bool] = False
    uses_focus_map: ClassVar[bool] = False
    maps_from_acte: ClassVar[bool] = True
    reads_target_pool_labels: ClassVar[bool] = False
    needs_target_labels: ClassVar[bool] = True
    trains_tma: ClassVar[bool] = False

    tma_learning_rate_scale: float = 100.0

    def auxiliary_counts(self, context: TransferContext) -> tuple[int, int]:
        """How many (labelled source, unlabelled target) images each process draws per batch."""
        return (0, 0)

    def add_focus_maps(self, labelled, auxiliary, evaluation, context: TransferContext):
        """
        The training sets (labelled target, auxiliary or None) with a `focus` column, and the evaluation set to use
        (None: the model's own maps, from its attached ACTE). ACTE's maps, computed once per image.
        """
        maps = functools.partial(with_focus_maps, map_of=acte_focus(context.acte), context=context)
        return maps(labelled), auxiliary if auxiliary is None else maps(auxiliary), None

    def wrap(self, model, context: TransferContext) -> torch.nn.Module:
        """The module the optimizer trains (the segmenter itself, or a training wrapper with a `segmenter`)."""
        if self.trains_tma and context.acte is not None:
            model.attach_acte(context.acte)  # the saved model computes its maps itself
        return model

    def parameter_groups(self, wrapped, learning_rate: float) -> list[dict]:
        """AdamW parameter groups: TMA's λ at `tma_learning_rate_scale` × the rate if it learns, frozen otherwise."""
        segmenter = getattr(wrapped, "segmenter", wrapped)
        trained = [(n, p) for n, p in segmenter.named_parameters() if not n.startswith("acte.")]  # ACTE stays frozen
        tma = [p for n, p in trained if n.endswith("tma_lambda")]
        groups = [{"params": [p for n, p in trained if not n.endswith("tma_lambda")]}]
        if self.trains_tma:
            groups.append({"params": tma, "lr": learning_rate * self.tma_learning_rate_scale, "weight_decay": 0.0})
        else:
            for p in tma:
                p.requires_grad_(False)
        return groups

    def loss(self, model, batch: dict, auxiliary: dict | None = None) -> tuple[torch.Tensor, dict]:
        """The loss of one draw and its logs; `auxiliary` holds the drawn source then target images, if any."""
        loss = model(
            pixel_values=batch["pixel_values"], labels=batch["labels"], transferability_map=batch.get("focus")
        ).loss
        return loss, {"loss": loss.item()}


@register_method
@dataclass
class FineTune(TransferMethod):
    name = "finetune"
    description = "the vanilla fine-tuning baseline of TMT: the same ViT segmenter and budget, with TMA switched off"


@register_method
@dataclass
class FineTuneTMA(TransferMethod):
    name = "finetune_tma"
    description = (
        "a TMT segmenter fine-tuned on the labelled target images with ACTE's region transferability focus map "
        "modulating self-attention in every layer (Transferable Masked Attention) and nothing else"
    )
    uses_focus_map = True
    trains_tma = True


@register_method
@dataclass
class FineTuneReplay(TransferMethod):
    """
    Fine-tuning that keeps the source images: each labelled target batch is extended with `batch_size // 2` labelled
    source images (with the same photometric augmentation), and the loss is the cross-entropy over both; no
    pseudo-labels, no map. It separates what keeping the source images gives from what self-training and the map give.
    """

    name = "finetune_replay"
    description = (
        "a fine-tuning baseline that replays labelled source images: the same ViT segmenter and budget, TMA switched "
        "off, every batch of labelled target images extended with labelled source images"
    )
    auxiliary_images = True
    auxiliary_appearance_jitter = True

    def auxiliary_counts(self, context):
        return (max(1, context.batch_size // 2), 0)

    def loss(self, model, batch, auxiliary=None):
        device = batch["pixel_values"].device
        pixel_values = torch.cat([batch["pixel_values"], auxiliary["pixel_values"].to(device)])
        labels = torch.cat([batch["labels"], auxiliary["labels"].to(device)])
        loss = model(pixel_values=pixel_values, labels=labels).loss
        return loss, {"loss": loss.item()}


@dataclass
class Alignment(TransferMethod):
    """
    Each labelled target batch is extended with `batch_size // 2` labelled source and as many unlabelled target
    images, passed to an `AdversarialAlignment` with their domain labels (and their focus maps, if any).
    """

    auxiliary_images = True
    auxiliary_appearance_jitter = True
    level: ClassVar[str] = "patch"
    alignment_weight: float = 0.1

    def __post_init__(self):
        if self.alignment_weight < 0:
            raise ValueError(f"alignment_weight must be >= 0, got {self.alignment_weight}")

    def auxiliary_counts(self, context):
        count = max(1, context.batch_size // 2)
        return (count, count)

    def wrap(self, model, context):
        return AdversarialAlignment(super().wrap(model, context), self.level, self.alignment_weight, context.steps)

    def parameter_groups(self, wrapped, learning_rate):
        groups = super().parameter_groups(wrapped, learning_rate)
        groups[0]["params"] = groups[0]["params"] + list(wrapped.discriminator.parameters())
        return groups

    def loss(self, model, batch, auxiliary=None):
        device = batch["pixel_values"].device
        count = len(auxiliary["labels"]) // 2
        pixel_values = torch.cat([batch["pixel_values"], auxiliary["pixel_values"].to(device)])
        labels = torch.cat([batch["labels"], auxiliary["labels"].to(device)])
        labels[len(batch["labels"]) + count :] = IGNORE_INDEX  # the unlabelled target images
        focus = torch.cat([batch["focus"], auxiliary["focus"].to(device)]) if "focus" in batch else None
        domain_labels = torch.cat([torch.ones(len(batch["labels"]), dtype=torch.long), auxiliary["domain_labels"]])
        return model(pixel_values, labels, domain_labels.to(device), focus)


@register_method
@dataclass
class AlignPatch(Alignment):
    name = "align_patch"
    description = (
        "the map-free comparator of TMT: the same ViT segmenter and budget, TMA switched off, with a patch-level "
        "adversarial alignment on source and unlabelled target images"
    )


@register_method
@dataclass
class TMTPaper(Alignment):
    """The paper-faithful TMT transfer stage (our reconstruction): TMA, and the alignment weighted by ACTE's map."""

    name = "tmt_paper"
    description = (
        "a TMT segmenter from the paper-faithful transfer stage (our reconstruction): a ViT whose self-attention is "
        "modulated, in every layer, by ACTE's region transferability focus map (Transferable Masked Attention), "
        "trained with a focus-weighted adversarial alignment"
    )
    level = "focus"
    uses_focus_map = True
    trains_tma = True


@register_method
@dataclass
class SelfTrain(TransferMethod):
    """
    Map-free self-training (`tmt_hf.adaptation.SelfTraining`: EMA teacher, DACS class mixing, MIC masking). Each
    labelled target batch gets `batch_size // 2` labelled source and as many unlabelled target images; with no target
    labels, the batch itself is the unlabelled target images, with `batch_size` source images. The teacher sees the
    images as drawn (no photometric change); the student a strong view.
    """

    name = "selftrain"
    description = (
        "the map-free self-training comparator of TMT: the same ViT segmenter and budget, TMA switched off, trained "
        "on a mean teacher's pseudo-labels of unlabelled target images (DACS class mixing, MIC masking)"
    )
    auxiliary_images = True
    needs_target_labels = False
    ema_decay: float = 0.99  # DACS's value, suited to budgets of hundreds of steps
    pseudo_label_threshold: float = 0.968  # DACS's confidence threshold of the pseudo-label weight
    mask_ratio: float = 0.5  # MIC's share of hidden blocks (0: off)
    pseudo_label_class_quantile: float | None = None  # CBST's class-balanced selection instead of DACS's weight
    map_parts: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0 <= self.mask_ratio <= 1:
            raise ValueError(f"mask_ratio must lie in [0, 1], got {self.mask_ratio}")
        quantile = self.pseudo_label_class_quantile
        if quantile is not None and not 0 <= quantile <= 1:
            raise ValueError(f"pseudo_label_class_quantile must lie in [0, 1], got {quantile}")
        unknown = set(self.map_parts) - {"tma", "trust", "mask"}
        if unknown:
            raise ValueError(f"map_parts must be among tma, trust, mask; got {sorted(unknown)}")

    def auxiliary_counts(self, context):
        return (context.batch_size, 0) if context.unlabelled_only else (max(1, context.batch_size // 2),) * 2

    def wrap(self, model, context):
        view = functools.partial(strong_view, image_mean=context.image_mean, image_std=context.image_std)
        return SelfTraining(
            super().wrap(model, context),
            self.ema_decay,
            self.pseudo_label_threshold,
            view,
            self.mask_ratio,
            class_quantile=self.pseudo_label_class_quantile,
        )

    def loss(self, model, batch, auxiliary=None):
        generator = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))  # from the checkpointed RNG
        device = batch["pixel_values"].device
        auxiliary = {k: v.to(device) for k, v in auxiliary.items()}
        count = int((auxiliary["domain_labels"] == 0).sum())
        labelled = {k: v for k, v in batch.items() if k != "domain_labels"}
        sources = {k: v[:count] for k, v in auxiliary.items()}
        targets = {k: v[count:] for k, v in auxiliary.items()}
        if len(targets["pixel_values"]) == 0:  # no target labels: the batch is the unlabelled target images
            labelled, targets = {k: v[:0] for k, v in labelled.items()}, labelled
            labelled["labels"] = torch.zeros((0, *targets["pixel_values"].shape[2:]), dtype=torch.long, device=device)
        maps = trust = mask_weights = None
        if "focus" in auxiliary:
            if "tma" in self.map_parts:
                maps = {"labelled": labelled["focus"], "source": sources["focus"], "target": targets["focus"]}
            trust = 1 - targets["focus"] if "trust" in self.map_parts else None
            mask_weights = targets["focus"] if "mask" in self.map_parts else None
        return model(
            labelled["pixel_values"],
            labelled["labels"],
            sources["pixel_values"],
            sources["labels"],
            targets["pixel_values"],
            maps,
            trust,
            mask_weights,
            generator,
        )


@register_method
@dataclass
class TMT(SelfTrain):
    """
    Region-level TMT self-training (ours): `selftrain` with ACTE's map deciding, region by region, where pseudo-labels
    are trusted (`trust`: weight 1 - m per pixel) and where masking pushes adaptation (`mask`: MIC hides blocks in
    proportion to m), and TMA in the student (`tma`).
    """

    name = "tmt"
    description = (
        "a TMT segmenter from region-level self-training (our reconstruction): a ViT trained on pseudo-labels of "
        "unlabelled target images, with ACTE's region transferability focus map deciding where pseudo-labels are "
        "trusted and where masking pushes adaptation, and modulating self-attention in every layer (TMA)"
    )
    uses_focus_map = True
    map_parts: tuple[str, ...] = field(default=("tma", "trust", "mask"))

    @property
    def trains_tma(self) -> bool:
        return "tma" in self.map_parts


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


@torch.no_grad()
def with_focus_maps(dataset, map_of, context: TransferContext, shuffled=False, from_labels=False):
    """
    `dataset` with a `focus` column: each image's map at the context's image size (`map_of(pixel_values, labels)`,
    e.g. `acte_focus(acte)`; labels only `from_labels`), computed once (grayscale 0-255) so that training does not
    compute it on every batch; the transforms crop and flip it with the image. `shuffled`: each image gets the next
    image's map (the last the first's).
    """
    images = dataset.select_columns(["image", "label"] if from_labels else ["image"])
    images.set_transform(
        SegmentationTransform(
            train=False, size=tuple(context.image_size), image_mean=context.image_mean, image_std=context.image_std
        )
    )
    height, width = context.image_size
    maps = []
    for batch in DataLoader(images, batch_size=2 * context.batch_size, collate_fn=collate):
        focus = map_of(batch["pixel_values"], batch.get("labels"))
        focus = (255 * focus[:, :height, :width].clamp(0, 1)).round().byte().cpu().numpy()
        maps += [datasets.Image().encode_example(Image.fromarray(m)) for m in focus]
    if shuffled:
        maps = maps[1:] + maps[:1]
    return dataset.add_column("focus", maps, feature=datasets.Image())
