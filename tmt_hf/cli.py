"""The `tmt-hf` command line: predict masks, draw ACTE's maps, and estimate a target dataset's transferability.

tmt-hf predict street1.png street2.png --model outputs/tmt-clear2night/tmt --out predictions/
tmt-hf predict frame.png --model org/tmt-city2bdd --out frames --native_resolution --eval_mode slide --eval_crop 512 512
tmt-hf maps street1.png --model outputs/tmt-clear2night/tmt --out maps.png
tmt-hf estimate --acte outputs/tmt-clear2night/acte --data synthetic/night --num_samples 50
tmt-hf check-data cityscapes --data_dir path/to/cityscapes
"""

import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .inference import EVAL_MODES, check_eval_mode, pad_to_multiple, segment_logits


def load_segmenter(path: str):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    from . import TMTImageProcessor  # noqa: F401  (registers the auto classes)

    processor = AutoImageProcessor.from_pretrained(path)
    model = AutoModelForSemanticSegmentation.from_pretrained(path).eval()
    return processor, model


def find_acte(path: str):
    """An ACTE folder, or the ACTE carried by a TMT folder."""
    from transformers import AutoConfig, AutoImageProcessor

    from . import ACTEModel, TMTForSemanticSegmentation

    processor = AutoImageProcessor.from_pretrained(path)
    if AutoConfig.from_pretrained(path).model_type == "acte":
        return processor, ACTEModel.from_pretrained(path).eval()
    model = TMTForSemanticSegmentation.from_pretrained(path).eval()
    if model.acte is None:
        raise SystemExit(
            f"{path} is a TMT model without an ACTE estimator; give an ACTE folder or a TMT model with one"
        )
    return processor, model.acte


def open_image(path: str) -> Image.Image:
    try:
        return Image.open(path).convert("RGB")
    except Exception as error:
        raise SystemExit(f"Cannot read image {path}: {error}") from error


def predict(args):
    """
    A mask per image, from the image resized to the processor's size or at its own (`--native_resolution`), whole or
    by sliding windows; models with an ACTE also get its focus map over the image.
    """
    from .visualize import colorize, heat_overlay, palette_of

    try:
        crop_size, stride = check_eval_mode(args.eval_mode, args.eval_crop, args.eval_stride)
    except ValueError as error:
        raise SystemExit(f"--eval_mode {args.eval_mode} --eval_crop/--eval_stride: {error}") from error
    processor, model = load_segmenter(args.model)
    acte = getattr(model, "acte", None)
    os.makedirs(args.out, exist_ok=True)
    for path in tqdm(args.images, desc="predict", disable=len(args.images) < 2):
        image = open_image(path)
        pixels = processor(image, do_resize=not args.native_resolution, return_tensors="pt")["pixel_values"]
        logits = segment_logits(model, pixels, args.eval_mode, crop_size, stride)
        logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)
        stem = os.path.splitext(os.path.basename(path))[0]
        colorize(logits.argmax(dim=1)[0].numpy(), palette_of(model.config.id2label)).save(
            os.path.join(args.out, f"{stem}_segmentation.png")
        )
        if acte is not None:
            with torch.no_grad():
                focus = acte(pad_to_multiple(pixels, acte.config.size_multiple)).focus_map[0]
            unpadded = [-(-side // acte.config.feature_stride) for side in pixels.shape[-2:]]
            focus = focus[: unpadded[0], : unpadded[1]]
            heat_overlay(image, focus.numpy()).save(os.path.join(args.out, f"{stem}_focus.png"))
    print(f"wrote {len(args.images)} prediction(s) to {args.out}")


def maps(args):
    from .visualize import CITYSCAPES_PALETTE, acte_maps, palette_of, save_acte_figure

    processor, acte = find_acte(args.model)
    image = open_image(args.image)
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    pixels = pad_to_multiple(pixels, acte.config.size_multiple)
    shown = image.resize((pixels.shape[-1], pixels.shape[-2]))
    segmentation, palette = None, CITYSCAPES_PALETTE
    if args.with_segmentation:
        _, model = load_segmenter(args.model)
        with torch.no_grad():
            segmentation = model(pixel_values=pixels).logits.argmax(1)[0].numpy()
        palette = palette_of(model.config.id2label)
    save_acte_figure(shown, acte_maps(acte, pixels), args.out, segmentation=segmentation, palette=palette)
    print(f"wrote {args.out}")


def estimate(args):
    """
    Per class of a dataset: mean transferability and the fraction of its area below `--threshold`, as ACTE scores it
    for TMA (each region against its own image: which classes shifted most), and the mean *absolute* score (no
    image-relative step: does the class look like the source domain at all?).
    """
    from .data import SegmentationTransform, get_label_space, load_domain
    from .modeling_acte import spread_to_positions

    processor, acte = find_acte(args.acte)
    size = (processor.size["height"], processor.size["width"])
    classes = get_label_space(args.label_space).classes
    dataset = load_domain(
        args.data,
        args.split,
        num_samples=args.num_samples,
        synthetic_size=size,
        data_dir=args.data_dir,
        label_space=args.label_space,
    )
    transform = SegmentationTransform(
        train=False,
        size=size,
        size_divisor=acte.config.size_multiple,
        image_mean=processor.image_mean,
        image_std=processor.image_std,
    )
    totals, sums, low, absolute = (np.zeros(len(classes)) for _ in range(4))
    for start in tqdm(range(0, len(dataset), args.batch_size), desc="estimate"):
        rows = dataset[start : start + args.batch_size]
        batch = transform({"image": rows["image"], "label": rows["label"]})
        pixels, labels = torch.stack(batch["pixel_values"]), torch.stack(batch["labels"])
        with torch.no_grad():
            out = acte(pixel_values=pixels)
        # The same discriminator logits, scored without the image-relative step.
        region_absolute = acte.transferability(out.domain_logits, relative=False)[:, None]
        position_absolute = spread_to_positions(region_absolute, out.region_assignments, acte.config.cell_size)
        t, t_absolute = (
            F.interpolate(m[:, None], size=labels.shape[-2:], mode="bilinear")[:, 0]
            for m in (out.transferability, position_absolute[:, 0].clamp(0.0, 1.0))
        )
        valid = labels < len(classes)
        ids, values, count = labels[valid], t[valid].double(), len(classes)
        totals += torch.bincount(ids, minlength=count).numpy()
        sums += torch.bincount(ids, weights=values, minlength=count).numpy()
        low += torch.bincount(ids, weights=(values < args.threshold).double(), minlength=count).numpy()
        absolute += torch.bincount(ids, weights=t_absolute[valid].double(), minlength=count).numpy()
    report = {
        name: {
            "mean_transferability": sums[i] / totals[i],
            "low_transferability_fraction": low[i] / totals[i],
            "mean_absolute_transferability": absolute[i] / totals[i],
            "pixels": int(totals[i]),
        }
        for i, name in enumerate(classes)
        if totals[i] > 0
    }
    if args.json:
        print(json.dumps({"data": args.data, "threshold": args.threshold, "classes": report}, indent=2))
    else:
        print(f"Transferability of {args.data} ({args.split}, {len(dataset)} images) under {args.acte}")
        print("mean t: within each image (what TMA uses); absolute t: does the class look like the source at all")
        print(f"{'class':<14} {'mean t':>7} {'area t<' + str(args.threshold):>10} {'absolute t':>11}")
        for name, row in sorted(report.items(), key=lambda item: item[1]["mean_transferability"]):
            print(
                f"{name:<14} {row['mean_transferability']:7.3f} {row['low_transferability_fraction']:10.1%} "
                f"{row['mean_absolute_transferability']:11.3f}"
            )
    return report


def check_data(args):
    """Checks a download (or local dataset) split by split; exits 1 on any problem, each naming its file."""
    from .data.check import check_data as check_splits
    from .data.check import format_report

    checks = check_splits(args.data, data_dir=args.data_dir, split=args.split, label_space=args.label_space)
    print(format_report(args.data, checks))
    if any(check.problems for check in checks):
        raise SystemExit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="tmt-hf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="colourised masks and focus maps for images")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True, help="a TMT save_pretrained folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--native_resolution", action="store_true", help="segment each image at its own size")
    p.add_argument("--eval_mode", choices=EVAL_MODES, default="whole", help="whole image, or sliding windows")
    p.add_argument("--eval_crop", type=int, nargs=2, metavar=("H", "W"), help="--eval_mode slide: the window size")
    p.add_argument("--eval_stride", type=int, nargs=2, metavar=("H", "W"), help="slide: the step (default: the crop)")
    p.set_defaults(func=predict)
    p = commands.add_parser("maps", help="figure of ACTE's regions, transferability and focus for one image")
    p.add_argument("image")
    p.add_argument("--model", required=True, help="a TMT folder with ACTE, or an ACTE folder")
    p.add_argument("--out", default="maps.png")
    p.add_argument("--with_segmentation", action="store_true", help="add the segmentation (TMT folders)")
    p.set_defaults(func=maps)
    p = commands.add_parser("estimate", help="per-class transferability report of a target dataset")
    p.add_argument("--acte", required=True, help="an ACTE folder, or a TMT folder with ACTE")
    p.add_argument("--data", required=True, help="benchmark name, Hub dataset id or local path")
    p.add_argument("--split", default="validation")
    p.add_argument("--data_dir", nargs="+", default=None, metavar="DIR", help="the download's folder, or NAME=DIR")
    p.add_argument("--label_space", default="cityscapes", help="the classes to report (cityscapes or idd_level1)")
    p.add_argument("--num_samples", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.5, help="transferability below this counts as low")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=estimate)
    p = commands.add_parser("check-data", help="check a download before training: pairs, label ids, sizes, colours")
    p.add_argument("data", metavar="NAME_OR_PATH", help="benchmark name (cityscapes, acdc, ...) or local path")
    p.add_argument("--data_dir", nargs="+", default=None, metavar="DIR", help="the download's folder, or NAME=DIR")
    p.add_argument("--split", default=None, help="one split (default: every split the dataset has)")
    p.add_argument("--label_space", default=None, help="also check the labels map into this space (default: native)")
    p.set_defaults(func=check_data)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
