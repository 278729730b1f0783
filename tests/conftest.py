import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import ViTConfig, ViTModel  # noqa: E402

from tmt_hf import ACTEConfig, TMTConfig  # noqa: E402


def tiny_tmt_config(**kwargs) -> TMTConfig:
    """A two-layer TMT small enough for CPU tests."""
    defaults = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        decoder_hidden_size=16,
        num_labels=5,
    )
    return TMTConfig(**{**defaults, **kwargs})


def tiny_acte_config(**kwargs) -> ACTEConfig:
    defaults = dict(
        encoder_channels=[8, 16],
        feature_dim=16,
        cell_size=2,
        num_iterations=3,
        discriminator_hidden_size=16,
        num_semantic_classes=5,
    )
    return ACTEConfig(**{**defaults, **kwargs})


def vit_twin(model, attn_implementation: str = "sdpa", **model_kwargs) -> ViTModel:
    """A stock ViTModel (in eval mode) with the weights of a TMTModel, its TMA parameters left out."""
    fields = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "image_size",
        "patch_size",
    )
    config = ViTConfig(**{name: getattr(model.config, name) for name in fields})
    config._attn_implementation = attn_implementation
    vit = ViTModel(config, **model_kwargs).eval()
    vit.load_state_dict({k: v for k, v in model.state_dict().items() if ".tma_" not in k}, strict=True)
    return vit


def run_without_tmt_hf(code: str, cwd, timeout: int = 300) -> str:
    """Runs `code` in a fresh interpreter where `import tmt_hf` fails, as for a Hub user; returns stdout."""
    prelude = "import sys\nsys.modules['tmt_hf'] = None\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(cwd / "hf_modules")}
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def write_idd_lite(root, sequences: dict, official: bool = True, size=(24, 32), seed: int = 0) -> dict:
    """
    A tiny IDD-Lite: `sequences` maps each split to {sequence: number of frames}; labels are level-1 ids 0-6 with some
    255. `official`: the download's `idd20k_lite/{leftImg8bit,gtFine}/<split>/<seq>/<id>_image.jpg|_label.png` under
    `root` (`val` for `validation`); otherwise the local-folder layout `<split>/images|labels/<seq>_<id>`. Returns
    {(split, seq, id): label array}.
    """
    rng = np.random.default_rng(seed)
    labels = {}
    for split, counts in sequences.items():
        for sequence, count in counts.items():
            for index in range(count):
                frame = f"{100 + index:06d}"
                label = rng.integers(0, 7, size).astype(np.uint8)
                label[0, :3] = 255
                image = Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
                if official:
                    folder = {"validation": "val"}.get(split, split)
                    image_path = root / "idd20k_lite" / "leftImg8bit" / folder / sequence / f"{frame}_image.jpg"
                    label_path = root / "idd20k_lite" / "gtFine" / folder / sequence / f"{frame}_label.png"
                else:
                    image_path = root / split / "images" / f"{sequence}_{frame}.jpg"
                    label_path = root / split / "labels" / f"{sequence}_{frame}.png"
                for path in (image_path, label_path):
                    path.parent.mkdir(parents=True, exist_ok=True)
                image.save(image_path, quality=95)
                Image.fromarray(label).save(label_path)
                labels[split, sequence, frame] = label
    return labels


def write_local_pairs(root, splits: dict, classes, size=(24, 32), seed: int = 0) -> None:
    """A local-folder dataset `<split>/images|labels/<n>.png` with `splits[split]` pairs, labels drawn from `classes`."""
    rng = np.random.default_rng(seed)
    for split, count in splits.items():
        for folder in ("images", "labels"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            label = rng.choice(classes, size).astype(np.uint8)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
                root / split / "images" / f"{index:03d}.png"
            )
            Image.fromarray(label).save(root / split / "labels" / f"{index:03d}.png")
