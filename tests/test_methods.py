"""The transfer-method registry, a user's own method through the runner, and the library's training recipe."""

import json
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from tmt_hf import TMTConfig, TMTForSemanticSegmentation
from tmt_hf.hub import acte_repo_id
from tmt_hf.methods import TRANSFER_METHODS, TransferContext, get_method
from tmt_hf.optimization import warmup_cosine_schedule

REPO = Path(__file__).resolve().parents[1]
TINY = "--image_size 64 128 --crop_size 64 128 --num_source_train 8 --num_eval 4".split()
TINY += "--target_train_samples 4 --source_steps 2 --transfer_steps 2 --batch_size 4".split()


def test_a_users_method_trains_through_the_runner(tmp_path, monkeypatch):
    """examples/custom_method.py, the README's example, registered by --method_file."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import train

    output = tmp_path / "run"
    results = train.main(
        "--stage all --method finetune finetune_smoothed".split()
        + ["--method_file", str(REPO / "examples" / "custom_method.py"), "--output_dir", str(output)]
        + ["--acte_steps", "1", *TINY]
    )
    assert {"finetune", "finetune_smoothed"} <= set(results)
    smoothed = load_file(output / "finetune_smoothed" / "model.safetensors")
    plain = load_file(output / "finetune" / "model.safetensors")
    assert any(not torch.equal(smoothed[k], plain[k]) for k in plain)  # another loss, other weights
    assert "fine-tuned with label smoothing" in ModelCard.load(output / "finetune_smoothed" / "README.md").text
    assert TMTForSemanticSegmentation.from_pretrained(output / "finetune_smoothed").config.num_labels == 19


def test_method_file_registers_before_method_is_checked(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import train

    (tmp_path / "mine.py").write_text(
        "from dataclasses import dataclass\n"
        "from tmt_hf.methods import FineTune, register_method\n\n\n"
        "@register_method\n@dataclass\nclass Mine(FineTune):\n    name = 'mine_from_file'\n"
    )
    args = train.parse_args(
        ["--method", "mine_from_file", "--method_file", str(tmp_path / "mine.py")]
        + ["--output_dir", str(tmp_path / "out")]
    )
    assert args.method == ["mine_from_file"] and type(get_method("mine_from_file")).__name__ == "Mine"
    TRANSFER_METHODS.pop("mine_from_file")


def test_registry_gives_fresh_methods_with_their_defaults():
    assert {"finetune", "finetune_tma", "align_patch", "tmt_paper", "selftrain", "tmt"} <= set(TRANSFER_METHODS)
    tmt = get_method("tmt")
    assert tmt.map_parts == ("tma", "trust", "mask") and tmt.mask_ratio == 0.5 and tmt.trains_tma
    assert get_method("selftrain").map_parts == () and not get_method("selftrain").trains_tma
    assert get_method("tmt") is not tmt and get_method("tmt_paper").alignment_weight == 0.1
    with pytest.raises(ValueError, match="Unknown transfer method 'nope'; registered: align_patch"):
        get_method("nope")
    with pytest.raises(ValueError, match="mask_ratio must lie in"):
        type(tmt)(mask_ratio=2.0)
    with pytest.raises(ValueError, match="map_parts must be among"):
        type(tmt)(map_parts=("tma", "glue"))


def test_parameter_groups_train_lambda_only_where_tma_learns():
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32))
    context = TransferContext(steps=1, batch_size=2, image_size=(32, 32))
    groups = get_method("finetune_tma").parameter_groups(get_method("finetune_tma").wrap(model, context), 1e-3)
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.1) and groups[1]["weight_decay"] == 0.0
    assert all(p.requires_grad for p in groups[1]["params"]) and len(groups[1]["params"]) == 4  # one λ per layer
    plain = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32))
    groups = get_method("finetune").parameter_groups(plain, 1e-3)
    assert len(groups) == 1
    frozen = [n for n, p in plain.named_parameters() if not p.requires_grad]
    assert frozen and all(n.endswith("tma_lambda") for n in frozen)  # λ stays at 0


def test_warmup_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine_schedule(optimizer, steps=20, warmup_ratio=0.1)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == [0.5, 1.0, pytest.approx(1.0)]  # two warm-up steps, the first already at half the rate
    assert all(a >= b for a, b in zip(rates[1:], rates[2:])) and rates[-1] < 0.01
    with pytest.raises(ValueError, match="warmup_ratio must lie in"):
        warmup_cosine_schedule(optimizer, 10, 1.0)


def test_acte_repo_beside_the_tmt_repo():
    assert acte_repo_id("org/tmt-city2bdd") == "org/acte-city2bdd"
    assert acte_repo_id("org/segmenter") == "org/segmenter-acte" and acte_repo_id("local") == "local-acte"


def test_the_research_entry_records_its_arms_in_results(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.syspath_prepend(str(REPO / "examples" / "research"))
    import train_variants

    args = train_variants.parse_args(
        "--method tmt selftrain --focus_map shuffled --tmt_parts trust --mask_ratio 0.25".split()
        + ["--output_dir", str(tmp_path)]
    )
    tmt, selftrain = train_variants.build_methods(args)
    assert (tmt.name, selftrain.name) == ("tmt-shuffled", "selftrain")
    assert tmt.map_parts == ("trust",) and tmt.mask_ratio == 0.25 == selftrain.mask_ratio
    assert json.loads(json.dumps(vars(args)))["focus_map"] == "shuffled"  # results.json records the arm
    sys.modules.pop("train_variants")


def test_replay_fine_tuning_learns_from_both_domains_and_reloads(tmp_path, monkeypatch):
    import argparse

    from tmt_hf.data import collate
    from tmt_hf.training import auxiliary_draw

    method = get_method("finetune_replay")
    assert method.auxiliary_counts(TransferContext(steps=1, batch_size=8, image_size=(8, 8))) == (4, 0)
    # Source images (domain 0) carry label 1, unlabelled target images (domain 1) label 2, the target batch label 3.
    pool = [
        {"pixel_values": torch.zeros(3, 8, 8), "labels": torch.full((8, 8), 1 + d), "domain_labels": d}
        for d in (0, 0, 0, 1, 1)
    ]

    class Pool(list):
        def __getitem__(self, key):
            return [e["domain_labels"] for e in self] if key == "domain_labels" else super().__getitem__(key)

    accelerator = argparse.Namespace(process_index=0, num_processes=1)
    draw = auxiliary_draw(Pool(pool), argparse.Namespace(set_epoch=lambda epoch: None), (2, 0), accelerator)
    batch = collate([{"pixel_values": torch.ones(3, 8, 8), "labels": torch.full((8, 8), 3)}] * 4)
    seen = {}

    def model(pixel_values, labels):
        seen.update(pixel_values=pixel_values, labels=labels)
        return argparse.Namespace(loss=torch.tensor(1.0))

    method.loss(model, batch, draw())
    assert seen["labels"][:, 0, 0].tolist() == [3, 3, 3, 3, 1, 1]  # the target batch, then two labelled source images
    assert (seen["pixel_values"][:4] == 1).all() and (seen["pixel_values"][4:] == 0).all()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    import train

    output = tmp_path / "run"
    results = train.main(["--method", "finetune_replay", "--output_dir", str(output), "--acte_steps", "1", *TINY])
    assert results["finetune_replay"]["labelled_target_images"] == 4
    model = TMTForSemanticSegmentation.from_pretrained(output / "finetune_replay")
    assert model.acte is None and not any(
        k.startswith("acte.") for k in load_file(output / "finetune_replay" / "model.safetensors")
    )
    assert "replays labelled source images" in ModelCard.load(output / "finetune_replay" / "README.md").text
