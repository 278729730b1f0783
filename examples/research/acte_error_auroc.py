"""Score transferability maps on a real pair, where no shift mask exists, by what they are for: the AUROC of each map
against the pixels the source-only model gets wrong on the target's validation images (pooled over pixels, and the
mean of per-image AUROCs). Prints JSON.

Maps scored (higher = more likely wrong):
  acte_focus, acte_shift      the trained ACTE's focus map (what TMA receives), and its two halves: 1 - transferability
  acte_uncertainty            (the region discriminator's) and the auxiliary head's region uncertainty;
  vit_focus, vit_shift        the candidate: ACTE's clustering, region discriminator and auxiliary head on the frozen
                              patch features of a pretrained ViT (--features_model) instead of ACTE's convolutional
                              encoder, trained here like the ACTE stage (same images, steps, batch, learning rate);
  source_entropy              the source model's own predictive entropy: the map-free reference.

    python examples/research/acte_error_auroc.py --source_model OUT/base/source --acte_model OUT/base/acte \\
        --features_model facebook/deit-tiny-patch16-224 --source camvid-day --target idd-lite --data_dir DATA \\
        --label_space idd_level1 --target_train_split "train[:1150]" --target_eval_split "train[1150:]"
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoImageProcessor, ViTModel

from tmt_hf import ACTEConfig, ACTEModel, TMTForSemanticSegmentation
from tmt_hf.data import IGNORE_INDEX, SegmentationTransform, collate, load_domain
from tmt_hf.metrics import shift_auroc
from tmt_hf.modeling_acte import spread_to_positions

ACTE_LEARNING_RATE, WEIGHT_DECAY = 1e-3, 0.01  # examples/train.py's ACTE stage


class FrozenViTFeatures(nn.Module):
    """ACTE's encoder replaced by a frozen pretrained ViT: its last layer's patch tokens as a (B, d, H/16, W/16) map."""

    def __init__(self, name_or_path):
        super().__init__()
        self.vit = ViTModel.from_pretrained(name_or_path, add_pooling_layer=False).eval().requires_grad_(False)

    def train(self, mode=True):  # stays in eval mode (no dropout) whatever the ACTE around it does
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values):
        tokens = self.vit(pixel_values, interpolate_pos_encoding=True).last_hidden_state
        patch = self.vit.config.patch_size
        height, width = pixel_values.shape[2] // patch, pixel_values.shape[3] // patch
        patches = tokens[:, -height * width :]  # after the [CLS] (and DeiT's distillation) token
        return patches.transpose(1, 2).reshape(len(tokens), -1, height, width), ()


def vit_feature_acte(features_model, num_labels, cell_size):
    """An ACTEModel whose clustering, region discriminator and auxiliary head read a frozen ViT's patch features."""
    encoder = FrozenViTFeatures(features_model)
    stride = encoder.vit.config.patch_size
    config = ACTEConfig(
        feature_dim=encoder.vit.config.hidden_size,
        encoder_channels=[1] * int(np.log2(stride)),
        cell_size=cell_size,
        discriminator_input="regions",
        num_semantic_classes=num_labels,
    )
    acte = ACTEModel(config)
    acte.encoder = encoder
    return acte


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--source_model", required=True, help="the source-only segmenter (train.py's source stage)")
    add("--acte_model", required=True, help="the trained ACTE (train.py's acte stage)")
    add("--features_model", required=True, help="the pretrained ViT whose frozen patch features the candidate uses")
    add("--source", required=True)
    add("--target", required=True)
    add("--data_dir", default=None)
    add("--label_space", default="cityscapes")
    add("--train_split", default="train")
    add("--target_train_split", default="train")
    add("--target_eval_split", default="validation")
    add("--num_source_train", type=int, default=1150)
    add("--num_target_unlabeled", type=int, default=400)
    add("--num_eval", type=int, default=253)
    add("--image_size", type=int, nargs=2, default=[192, 256])
    add("--cell_size", type=int, default=2, help="the candidate's seed cell in patches (2: 32-px regions)")
    add("--steps", type=int, default=300, help="the candidate's training steps (train.py's --acte_steps)")
    add("--batch_size", type=int, default=8)
    add("--seed", type=int, default=42)
    add("--output", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    started = time.time()

    segmenter = TMTForSemanticSegmentation.from_pretrained(args.source_model).eval()
    acte = ACTEModel.from_pretrained(args.acte_model).eval()
    processor = AutoImageProcessor.from_pretrained(args.source_model)
    num_labels = segmenter.config.num_labels
    size = tuple(args.image_size)

    def split(name, split_name, count, train):
        data = load_domain(
            name,
            split_name,
            num_samples=count,
            synthetic_size=size,
            data_dir=args.data_dir,
            label_space=args.label_space,
        )
        data.set_transform(
            SegmentationTransform(
                train=train,
                size=size,
                crop_size=size if train else None,
                scale_range=(0.75, 1.5),
                appearance_jitter=train,
                image_mean=processor.image_mean,
                image_std=processor.image_std,
            )
        )
        return data

    # The candidate, trained like the ACTE stage: source images with labels, unlabelled target images, half each.
    candidate = vit_feature_acte(args.features_model, num_labels, args.cell_size)
    trainable = [p for p in candidate.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=ACTE_LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    source = split(args.source, args.train_split, args.num_source_train, train=True)
    target = split(args.target, args.target_train_split, args.num_target_unlabeled, train=True)
    half = args.batch_size // 2
    candidate.train()
    for step in range(args.steps):
        rows = [source[int(i)] for i in torch.randint(len(source), (half,))]
        rows += [target[int(i)] for i in torch.randint(len(target), (half,))]
        batch = collate(rows)
        batch["labels"][half:] = IGNORE_INDEX  # the target images' labels are never read
        domain_labels = torch.tensor([0] * half + [1] * half)
        loss = candidate(batch["pixel_values"], domain_labels=domain_labels, labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0:
            print(f"[candidate] step {step} loss {loss.item():.4f}", flush=True)
    candidate.eval()

    maps = {
        name: []
        for name in ("acte_focus", "acte_shift", "acte_uncertainty", "vit_focus", "vit_shift", "source_entropy")
    }
    wrong = []
    evaluation = split(args.target, args.target_eval_split, args.num_eval, train=False)
    with torch.no_grad():
        for start in range(0, len(evaluation), 2 * args.batch_size):
            batch = collate([evaluation[i] for i in range(start, min(start + 2 * args.batch_size, len(evaluation)))])
            pixels, labels = batch["pixel_values"], batch["labels"]
            full = lambda m: F.interpolate(m[:, None], size=labels.shape[1:], mode="bilinear")[:, 0]  # noqa: E731
            logits = F.interpolate(segmenter(pixels).logits, size=labels.shape[1:], mode="bilinear")
            probabilities = logits.softmax(dim=1)
            entropy = -(probabilities * probabilities.clamp_min(1e-8).log()).sum(dim=1) / np.log(num_labels)
            acte_out, candidate_out = acte(pixels), candidate(pixels)
            uncertainty = spread_to_positions(
                acte_out.region_uncertainty[:, None], acte_out.region_assignments, acte.config.cell_size
            )[:, 0]
            scored = {
                "acte_focus": full(acte_out.focus_map),
                "acte_shift": 1 - full(acte_out.transferability),
                "acte_uncertainty": full(uncertainty),
                "vit_focus": full(candidate_out.focus_map),
                "vit_shift": 1 - full(candidate_out.transferability),
                "source_entropy": entropy,
            }
            for i, label in enumerate(labels):
                valid = label != IGNORE_INDEX
                wrong.append((logits[i].argmax(dim=0) != label)[valid].numpy())
                for name, value in scored.items():
                    maps[name].append(value[i][valid].numpy())

    result = {
        "args": vars(args),
        "source_pixel_error_rate": float(np.concatenate(wrong).mean()),
        "error_auroc": {name: shift_auroc(values, wrong) for name, values in maps.items()},
        "wall_time_s": round(time.time() - started, 1),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
