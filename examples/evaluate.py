"""Evaluate a saved segmenter (TMT or its fine-tuning baseline) on one domain: mIoU and per-class IoU as JSON.

    accelerate launch examples/evaluate.py --model outputs/tmt-clear2night/tmt --data synthetic/night
    python examples/evaluate.py --model org/tmt-city2bdd --data bdd100k --split validation --image_size 512 1024
    python examples/evaluate.py --model org/tmt-city2bdd --data cityscapes --native_resolution --eval_mode slide \
        --eval_crop 512 1024 --eval_stride 341 683
    python examples/evaluate.py --model outputs/tmt-clear2night/oracle --data synthetic/night --shift_mask_as_map \
        --confusions bus truck train

The dataset's labels are mapped into the model's label space (its `id2label`: Cityscapes or IDD level-1, see
`tmt_hf.data.label_spaces`). mIoU is averaged over the classes the dataset labels: a registered benchmark's (CamVid: 11
of the 19), otherwise the classes its labels hold. `--confusions` adds, for each named class, where its pixels went:
the shares of its labelled pixels predicted as each class (the four largest), i.e. rows of the confusion matrix.

Images are resized to `--image_size` (default: the model's image processor size), or kept at their own size with
`--native_resolution`. `--eval_mode whole` (the default) runs the model once on each image; `--eval_mode slide`
averages the logits of `--eval_crop` windows every `--eval_stride` pixels (see `tmt_hf.inference.segment_logits`).
The JSON names the split, the resolution and the evaluation mode with the numbers.

Runs on any number of processes: predictions are gathered with `gather_for_metrics`, so every process count gives
the same mIoU.
"""

import argparse

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from tmt_hf.data import LABEL_SPACES, SegmentationTransform, collate, label_space_of, labelled_classes, load_domain
from tmt_hf.inference import EVAL_MODES, check_eval_mode, segment_logits
from tmt_hf.metrics import MeanIoU
from tmt_hf.training import write_report


def collate_one_size(examples: list[dict]) -> dict:
    """`collate` for images at their own size: a batch stacks images of one size."""
    sizes = sorted({tuple(example["pixel_values"].shape[-2:]) for example in examples})
    if len(sizes) > 1:
        raise ValueError(f"--native_resolution: a batch holds images of sizes {sizes}; use --batch_size 1")
    return collate(examples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a save_pretrained folder or Hub id")
    parser.add_argument("--data", required=True, help="benchmark name, Hub dataset id or local path")
    parser.add_argument("--split", default="validation", help="a split, or a row range of one (train[42:])")
    parser.add_argument(
        "--data_dir", default=None, help="folder of a benchmark read from local files (camvid, idd-lite)"
    )
    parser.add_argument(
        "--data_label_space",
        choices=sorted(LABEL_SPACES),
        default=None,
        help="the label space of a Hub/local dataset's label files (default: the registry entry's; "
        "cityscapes train ids for a Hub id or local path)",
    )
    parser.add_argument("--num_samples", type=int, default=None)
    resolution = parser.add_mutually_exclusive_group()
    resolution.add_argument(
        "--image_size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="default: the model's image processor size",
    )
    resolution.add_argument(
        "--native_resolution", action="store_true", help="evaluate every image at its own size, not resized"
    )
    parser.add_argument(
        "--eval_mode",
        choices=EVAL_MODES,
        default="whole",
        help="whole: one pass per image; slide: logits averaged over overlapping windows",
    )
    parser.add_argument(
        "--eval_crop", type=int, nargs=2, default=None, metavar=("H", "W"), help="--eval_mode slide: the window size"
    )
    parser.add_argument(
        "--eval_stride",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="--eval_mode slide: the step between windows (default: --eval_crop)",
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    parser.add_argument(
        "--confusions",
        nargs="+",
        default=[],
        metavar="CLASS",
        help="class names (or ids) whose confusion-matrix rows to report",
    )
    parser.add_argument(
        "--shift_mask_as_map",
        action="store_true",
        help="generated data: give the model the generator's shift mask as its map (the oracle method's models)",
    )
    args = parser.parse_args(argv)
    try:
        crop_size, stride = check_eval_mode(args.eval_mode, args.eval_crop, args.eval_stride)
    except ValueError as error:
        parser.error(f"--eval_mode {args.eval_mode} --eval_crop/--eval_stride: {error}")

    accelerator = Accelerator()
    processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = AutoModelForSemanticSegmentation.from_pretrained(args.model, trust_remote_code=True).eval()
    label2id = {**model.config.label2id, **{str(i): i for i in model.config.id2label}}
    unknown = [name for name in args.confusions if name not in label2id]
    if unknown:
        parser.error(
            f"--confusions {' '.join(unknown)}: not classes of the model ({', '.join(model.config.id2label.values())})"
        )
    space = label_space_of(model.config.id2label)
    if space is None:
        classes = list(model.config.id2label.values())
        parser.error(
            f"{args.model} predicts classes of no registered label space ({classes}); register its "
            "LabelSpace in tmt_hf.data.LABEL_SPACES"
        )
    size = tuple(args.image_size) if args.image_size else (processor.size["height"], processor.size["width"])
    resolution = "native" if args.native_resolution else f"{size[0]}x{size[1]}"
    with accelerator.main_process_first():
        dataset = load_domain(
            args.data,
            args.split,
            num_samples=args.num_samples,
            synthetic_size=size,
            data_dir=args.data_dir,
            label_space=space.name,
            native_labels=args.data_label_space,
        )
    if args.shift_mask_as_map:
        if model.config.model_type != "tmt":
            parser.error(
                f"--shift_mask_as_map needs a TMT model, whose TMA reads a map; {args.model} is a "
                f"{model.config.model_type!r} model"
            )
        if "shift_mask" not in dataset.column_names:
            parser.error(
                f"--shift_mask_as_map needs a generated dataset (synthetic/<domain>); {args.data} has no shift_mask"
            )
        dataset = dataset.select_columns(["image", "label", "shift_mask"]).rename_column("shift_mask", "focus")
    else:
        dataset = dataset.select_columns(["image", "label"])
    transform_size = None if args.native_resolution else size
    dataset.set_transform(
        SegmentationTransform(
            train=False, size=transform_size, image_mean=processor.image_mean, image_std=processor.image_std
        )
    )
    loader = DataLoader(
        dataset, batch_size=args.batch_size, collate_fn=collate_one_size if args.native_resolution else collate
    )
    model, loader = accelerator.prepare(model, loader)

    classes = labelled_classes(args.data, space.name)
    metric = MeanIoU(model.config.num_labels, model.config.semantic_loss_ignore_index, classes)
    with torch.no_grad():
        for batch in loader:
            focus = batch["focus"] if args.shift_mask_as_map else None
            logits = segment_logits(model, batch["pixel_values"], args.eval_mode, crop_size, stride, focus)
            predictions = logits.argmax(dim=1)
            metric.update(*accelerator.gather_for_metrics((predictions, batch["labels"])))
    if metric.classes is None:  # a Hub id or local path: the classes its labels hold
        metric.classes = [c for c in range(model.config.num_labels) if metric.confusion[c].sum() > 0]
    result = metric.compute()
    id2label = model.config.id2label
    report = {
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "num_images": len(dataset),
        "resolution": resolution,
        "eval_mode": args.eval_mode,
        "eval_crop": crop_size,
        "eval_stride": stride,
        "classes": [id2label[c] for c in metric.classes],
        "mean_iou": result["mean_iou"],
        "mean_accuracy": result["mean_accuracy"],
        "overall_accuracy": result["overall_accuracy"],
        "per_category_iou": {
            id2label[i]: (None if v != v else float(v)) for i, v in enumerate(result["per_category_iou"])
        },
    }
    if args.confusions:
        report["confusions"] = {}
        for name in args.confusions:
            row = metric.confusion[label2id[name]].double()
            shares = row / row.sum().clamp_min(1)
            top = shares.argsort(descending=True)[:4]
            report["confusions"][id2label[label2id[name]]] = {
                "pixels": int(row.sum()),
                **{id2label[int(j)]: round(float(shares[j]), 4) for j in top},
            }
    if accelerator.is_main_process:
        write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
