import os
import subprocess
import sys
import textwrap

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import ViTConfig, ViTModel  # noqa: E402

from tmt_hf import ACTEConfig, TMTConfig  # noqa: E402


def tiny_tmt_config(**kwargs) -> TMTConfig:
    """A two-layer TMT small enough for CPU tests."""
    defaults = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=64, patch_size=16, decoder_hidden_size=16, num_labels=5)  # fmt: skip
    return TMTConfig(**{**defaults, **kwargs})


def tiny_acte_config(**kwargs) -> ACTEConfig:
    defaults = dict(encoder_channels=[8, 16], feature_dim=16, cell_size=2, num_iterations=3,
                    discriminator_hidden_size=16, num_semantic_classes=5)  # fmt: skip
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
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
