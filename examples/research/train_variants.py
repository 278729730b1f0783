"""
The research entry point: `examples/train.py` with the protocol arms of the research record. It takes every flag of
train.py, plus the arms' switches and knobs, which never become runner flags:

  --focus_map acte|oracle|shuffled|error_oracle   the map of the map methods (finetune_tma, tmt_paper, tmt): runs
                                                  `<method>-<map>` from variants.py for a map other than ACTE's
  --tmt_parts tma trust mask                      how tmt uses the map (SelfTrain.map_parts)
  --mask_ratio, --pseudo_label_class_quantile     the self-training knobs (SelfTrain's fields)
  --alignment_weight                              the alignment methods' domain-loss weight (Alignment's field)
  --labelled_draw first|random                    the first --target_train_samples labelled images, or a random draw
                                                  seeded by --seed (a new draw per seed)
  --head_learning_rate_scale, --layer_decay,      the fine-tuning recipe's settings (FineTuningRecipe's fields; the
  --warmup_ratio                                  record's ablation, --layer_decay 1 --head_learning_rate_scale 1)

    python examples/research/train_variants.py --stage transfer --method tmt --focus_map shuffled ...

Results and folders are named as train.py names them (`<method>` or `<method>-<map>`), so the record's tables read
these runs as they read the earlier ones.
"""

import dataclasses
import os
import sys

import numpy as np

RESEARCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [RESEARCH, os.path.dirname(RESEARCH)]  # variants.py here, train.py in examples/
import train  # noqa: E402
from variants import MAP_METHODS, register_variants  # noqa: E402

from tmt_hf.methods import get_method  # noqa: E402
from tmt_hf.optimization import FineTuningRecipe  # noqa: E402


def parse_args(argv=None):
    parser = train.build_parser()
    arms = parser.add_argument_group("protocol arms")
    arms.add_argument(
        "--focus_map",
        choices=["acte", "oracle", "shuffled", "error_oracle"],
        default="acte",
        help="the map of the map methods; runs <method>-<map> for a map other than ACTE's",
    )
    arms.add_argument(
        "--tmt_parts",
        nargs="+",
        choices=["tma", "trust", "mask"],
        default=["tma", "trust", "mask"],
        help="how tmt uses the map: TMA in the student; pseudo-label trust 1 - m; masking by m",
    )
    arms.add_argument("--mask_ratio", type=float, default=0.5, help="selftrain and tmt: MIC's share of hidden blocks")
    arms.add_argument(
        "--pseudo_label_class_quantile",
        type=float,
        default=None,
        metavar="Q",
        help="selftrain and tmt: class-balanced pseudo-labels (CBST) at the Q-quantile confidence",
    )
    arms.add_argument("--alignment_weight", type=float, default=0.1, help="weight of the adversarial domain loss")
    arms.add_argument(
        "--labelled_draw",
        choices=["first", "random"],
        default="first",
        help="the first --target_train_samples labelled images, or a random draw seeded by --seed",
    )
    recipe = FineTuningRecipe()
    arms.add_argument(
        "--head_learning_rate_scale",
        type=float,
        default=recipe.head_learning_rate_scale,
        help="the decode head's learning rate × this, from a checkpoint",
    )
    arms.add_argument(
        "--layer_decay",
        type=float,
        default=recipe.layer_decay,
        help="layer-wise learning-rate decay from a checkpoint (1: off)",
    )
    arms.add_argument(
        "--warmup_ratio",
        type=float,
        default=recipe.warmup_ratio,
        help="share of each stage's steps in linear warm-up, then cosine",
    )
    args = parser.parse_args(argv)
    try:
        recipe_of(args)
    except ValueError as error:
        sys.exit(str(error))
    register_variants(args)
    validate_arms(args)
    train.validate_args(args, build_methods)
    return args


def validate_arms(args):
    """Refuses arm flags that do not fit the methods or the data (train.py's checks follow)."""
    methods = args.method or train.DEFAULT_METHODS
    map_methods = [m for m in methods if m in MAP_METHODS]
    if args.focus_map != "acte" and not map_methods:
        sys.exit(
            f"--focus_map {args.focus_map} chooses the map of the map methods; --method {' '.join(methods)} uses none"
        )
    if args.focus_map == "oracle" and not args.target.startswith("synthetic/"):
        sys.exit(
            "--focus_map oracle needs a generated target (synthetic/<domain>): only the generator knows which "
            "pixels its domain shifted"
        )
    if args.focus_map == "oracle" and args.label_space != "cityscapes":
        sys.exit(
            "--focus_map oracle marks the generator's restyled Cityscapes classes: it needs --label_space cityscapes"
        )
    if args.focus_map == "oracle" and args.push_to_hub:
        sys.exit("--focus_map oracle reads the generator's shift masks at evaluation; such a model is not pushed")
    if args.focus_map == "error_oracle" and (set(map_methods) - {"tmt"} or "tma" in args.tmt_parts):
        sys.exit(
            "--focus_map error_oracle marks where the source model is wrong on training images (from their "
            "labels); it has no map for evaluation images, so it feeds tmt's trust and mask parts only: --method "
            "tmt --tmt_parts trust mask"
        )
    if args.focus_map == "error_oracle" and args.target_train_samples == 0:
        sys.exit("--focus_map error_oracle reads the labelled target images' labels: --target_train_samples > 0")


def build_methods(args):
    """Each --method as the variant the arm's flags ask for, its knobs set."""
    methods = []
    for name in args.method:
        variant = f"{name}-{args.focus_map}" if name in MAP_METHODS and args.focus_map != "acte" else name
        method = get_method(variant)
        knobs = {
            "mask_ratio": args.mask_ratio,
            "pseudo_label_class_quantile": args.pseudo_label_class_quantile,
            "alignment_weight": args.alignment_weight,
        }
        if name == "tmt":
            knobs["map_parts"] = tuple(args.tmt_parts)
        fields = {f.name for f in dataclasses.fields(method)}
        method = dataclasses.replace(method, **{k: v for k, v in knobs.items() if k in fields})
        method.name = variant
        methods.append(method)
    return methods


def recipe_of(args):
    return FineTuningRecipe(args.head_learning_rate_scale, args.layer_decay, args.warmup_ratio)


def random_draw(args):
    """Picks --target_train_samples rows of the labelled pool at random with --seed."""
    return lambda size: np.random.default_rng(args.seed).choice(
        size, min(args.target_train_samples, size), replace=False
    )


def main(argv=None):
    args = parse_args(argv)
    choose = random_draw(args) if args.labelled_draw == "random" else None
    return train.run(args, build_methods(args), choose_labelled_rows=choose, recipe=recipe_of(args))


if __name__ == "__main__":
    main()
