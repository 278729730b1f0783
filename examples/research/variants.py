"""
The protocol arms of the research record as registered transfer methods (`tmt_hf.methods.register_method`), beside the
user's path: each is a library method with another focus map. `register_variants(args)` registers them for one run
(the generator's oracle needs the run's data flags); `train_variants.py` calls it.

- `<method>-shuffled` (finetune_tma, tmt_paper, tmt): each image gets another image's ACTE map, the control that keeps
  the maps' statistics and breaks their placement; evaluated with shuffled maps too where TMA learns.
- `<method>-oracle` (finetune_tma, tmt_paper, tmt): the generator's ground-truth shift mask in place of ACTE's map
  (generated targets only: what a perfect estimator would give), on training and evaluation images; no ACTE attached.
- `tmt-error_oracle`: on every training image, the pixels the source model gets wrong (read off the labels): the
  ceiling of any map through tmt's trust and mask parts (it has no map for evaluation images, so no TMA).
"""

import os
import sys
from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image

from tmt_hf import TMTForSemanticSegmentation
from tmt_hf.data import DOMAINS, IGNORE_INDEX
from tmt_hf.methods import TMT, FineTuneTMA, TMTPaper, acte_focus, register_method, with_focus_maps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # examples/, for train.py
import train  # noqa: E402

MAP_METHODS = {"finetune_tma": FineTuneTMA, "tmt_paper": TMTPaper, "tmt": TMT}


class ShuffledMaps:
    """A map method fed each image's neighbour's ACTE map (the last image gets the first's)."""

    def add_focus_maps(self, labelled, auxiliary, evaluation, context):
        map_of = acte_focus(context.acte)
        labelled = with_focus_maps(labelled, map_of, context, shuffled=True)
        if auxiliary is not None:
            auxiliary = with_focus_maps(auxiliary, map_of, context, shuffled=True)
        if self.trains_tma:  # the attached ACTE would give its own maps at evaluation
            evaluation = with_focus_maps(evaluation, map_of, context, shuffled=True)
        else:
            evaluation = None
        return labelled, auxiliary, evaluation


class ErrorOracle:
    """A map method fed the source model's wrong pixels on every training image (from their labels)."""

    maps_from_acte = False
    reads_target_pool_labels = True

    def add_focus_maps(self, labelled, auxiliary, evaluation, context):
        model = TMTForSemanticSegmentation.from_pretrained(context.source_model).eval()

        def map_of(pixel_values, labels):
            wrong = model(pixel_values=pixel_values).logits.argmax(dim=1) != labels
            return (wrong & (labels != IGNORE_INDEX)).float()

        labelled = with_focus_maps(labelled, map_of, context, from_labels=True)
        auxiliary = with_focus_maps(auxiliary, map_of, context, from_labels=True)
        return labelled, auxiliary, None


class GeneratorOracle:
    """
    A map method fed the generator's shift mask of its generated target (`args`: the run's flags): on target images
    the pixels the domain restyled, on source images (which its shifts never touched) the pixels of the classes it
    restyles. The labelled images are the split's first ones.
    """

    maps_from_acte = False

    args = None

    def add_focus_maps(self, labelled, auxiliary, evaluation, context):
        args = self.args
        context.acte = None  # the oracle's maps are the model's: no ACTE is attached
        with_labels = "label" in labelled.column_names
        labelled = oracle_split(args.target, args.target_train_split, len(labelled), args, with_labels)
        if auxiliary is not None:
            auxiliary = train.two_domains(
                oracle_split(args.source, args.train_split, args.num_source_train, args),
                oracle_split(args.target, args.target_train_split, args.num_target_unlabeled, args),
            )
        return labelled, auxiliary, oracle_split(args.target, args.target_eval_split, args.num_eval, args)


def oracle_split(name, split, num_samples, args, with_labels=True):
    """`train.domain_split` with the generator oracle's map of `args.target` as a `focus` column."""
    dataset = train.load_split(name, split, num_samples, args)
    columns = ["image", "label"] if with_labels else ["image"]
    if name == args.target:
        dataset = dataset.select_columns([*columns, "shift_mask"]).rename_column("shift_mask", "focus")
    else:
        restyled = DOMAINS[args.target.split("/", 1)[1]].restyled
        features = datasets.Features({**dataset.select_columns(columns).features, "focus": datasets.Image()})
        dataset = dataset.select_columns(columns).map(
            lambda example: {
                "focus": Image.fromarray(np.isin(np.asarray(example["label"]), restyled).astype(np.uint8) * 255)
            },
            features=features,
        )
    return train.indexed(dataset)


def register_variants(args=None):
    """Registers every variant; `args` (the run's flags) feeds the generator's oracle."""
    for name, method in MAP_METHODS.items():
        register_method(
            dataclass(type(f"{method.__name__}Shuffled", (ShuffledMaps, method), {})), name=f"{name}-shuffled"
        )
        oracle = dataclass(type(f"{method.__name__}Oracle", (GeneratorOracle, method), {"args": args}))
        register_method(oracle, name=f"{name}-oracle")
    error_oracle = dataclass(type("TMTErrorOracle", (ErrorOracle, TMT), {}))
    register_method(error_oracle, name="tmt-error_oracle")
