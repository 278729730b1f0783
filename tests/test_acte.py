import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_without_tmt_hf, tiny_acte_config, tiny_tmt_config
from PIL import Image
from transformers import AutoConfig, AutoModel

from tmt_hf import ACTEConfig, ACTEModel, TMTForSemanticSegmentation, TMTImageProcessor
from tmt_hf.modeling_acte import ACTEClustering


def dense_reference(features, cell, iterations, kappa):
    """The paper's recurrence with an explicit positions x regions matrix (test-only, O(h w |R|))."""
    _, d, h, w = features.shape
    gh, gw = h // cell, w // cell
    x = features[0].reshape(d, -1).T  # (P, d)
    py, px = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cy, cx = (py // cell).flatten(), (px // cell).flatten()
    ry, rx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ry, rx = ry.flatten(), rx.flatten()
    near = ((cy[:, None] - ry[None]).abs() <= 1) & ((cx[:, None] - rx[None]).abs() <= 1)  # (P, R)
    a = ((cy * gw + cx)[:, None] == torch.arange(gh * gw)[None]).float()
    for _ in range(iterations):
        f = (a.T @ x) / a.sum(0)[:, None].clamp_min(1e-6)
        cos = F.normalize(x, dim=1) @ F.normalize(f, dim=1).T
        s = torch.exp(kappa * cos) * near
        a = s / s.sum(1, keepdim=True)
    return a, near


def to_dense(assignments, cell):
    """Our (B, 9, h, w) neighbourhood assignments as a (P, R) matrix, for the first image."""
    _, _, h, w = assignments.shape
    gh, gw = h // cell, w // cell
    dense = torch.zeros(h * w, gh * gw)
    for k in range(9):
        dy, dx = k // 3 - 1, k % 3 - 1
        for y in range(h):
            for x in range(w):
                ry, rx = y // cell + dy, x // cell + dx
                if 0 <= ry < gh and 0 <= rx < gw:
                    dense[y * w + x, ry * gw + rx] += assignments[0, k, y, x]
                else:
                    assert assignments[0, k, y, x] == 0  # out-of-grid centres get no weight
    return dense


def test_clustering_matches_the_dense_recurrence():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 12, 16)
    config = ACTEConfig(cell_size=4, num_iterations=3, kappa=5.0)
    assignments, regions = ACTEClustering(config)(features)
    reference, near = dense_reference(features, 4, 3, 5.0)
    dense = to_dense(assignments, 4)
    assert (assignments >= 0).all()
    assert torch.allclose(assignments.sum(1), torch.ones(1, 12, 16), atol=1e-5)
    assert (dense[~near] == 0).all()  # zero outside the 3x3 neighbourhood
    assert torch.allclose(dense, reference, atol=1e-5)
    expected_regions = (reference.T @ features[0].reshape(8, -1).T) / reference.sum(0)[:, None]
    assert torch.allclose(regions[0].reshape(8, -1).T, expected_regions, atol=1e-4)


def test_hard_regions_follow_piece_boundaries():
    """Two orthogonal feature pieces split at x = 6, inside a cell; large κ moves positions to pure regions."""
    features = torch.zeros(1, 2, 16, 16)
    features[0, 0, :, :6] = 1.0
    features[0, 1, :, 6:] = 1.0
    features[0, :, 9:, :] = features[0, :, 9:, :].flip(0)  # a second boundary at y = 9 swaps the pieces
    config = ACTEConfig(cell_size=4, num_iterations=5, kappa=50.0)
    assignments, _ = ACTEClustering(config)(features)
    hard = ACTEModel.hard_regions(assignments, 4)[0]
    piece = features[0, 0] > 0.5
    for region in hard.unique():
        members = piece[hard == region]
        assert members.all() or (~members).all(), f"region {region} straddles a boundary"
    grid = (torch.arange(16)[:, None] // 4) * 4 + torch.arange(16)[None] // 4
    assert any(not (piece[grid == g].all() or (~piece[grid == g]).all()) for g in grid.unique())  # the grid straddles


def test_outputs_shapes_and_ranges_non_square():
    model = ACTEModel(tiny_acte_config()).eval()  # stride 4, cell 2: sizes in multiples of 8
    out = model(torch.randn(2, 3, 48, 80))
    assert out.transferability.shape == out.focus_map.shape == (2, 12, 20)
    assert out.region_assignments.shape == (2, 9, 12, 20)
    assert out.region_transferability.shape == out.domain_logits.shape == out.region_focus.shape == (2, 6, 10)
    assert out.semantic_logits.shape == (2, 5, 6, 10)
    for name in ("transferability", "focus_map", "region_transferability", "region_focus", "region_uncertainty"):
        value = getattr(out, name)
        assert value.min() >= 0 and value.max() <= 1, name
    assert out.loss is None
    no_head = ACTEModel(tiny_acte_config(num_semantic_classes=0)).eval()(torch.randn(1, 3, 16, 24))
    assert no_head.region_uncertainty is None
    assert torch.allclose(no_head.region_focus, 1 - no_head.region_transferability)


def toy_domains(batch, generator):
    """Domain 0: smooth noise; domain 1: the same with a high-frequency checkerboard patch (a local shift)."""
    images = F.interpolate(torch.randn(batch, 3, 8, 8, generator=generator), size=(32, 32), mode="bilinear")
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float() * 2 - 1
    images[batch // 2 :, :, 8:24, 8:24] += 2 * checker[8:24, 8:24]
    return images, torch.tensor([0] * (batch // 2) + [1] * (batch - batch // 2))


def test_training_lowers_the_discriminator_loss():
    torch.manual_seed(0)
    model = ACTEModel(tiny_acte_config(num_semantic_classes=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        images, domains = toy_domains(8, generator)
        loss = model(images, domain_labels=domains).domain_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_loss_with_labels_ignores_255():
    model = ACTEModel(tiny_acte_config())
    labels = torch.full((2, 32, 32), 255)
    out = model(torch.randn(2, 3, 32, 32), domain_labels=torch.tensor([0, 1]), labels=labels)
    assert out.semantic_loss == 0 and torch.isfinite(out.loss)
    labels[0, :16] = 3
    out = model(torch.randn(2, 3, 32, 32), domain_labels=torch.tensor([0, 1]), labels=labels)
    assert out.semantic_loss > 0 and torch.allclose(out.loss, out.domain_loss + out.semantic_loss)


def test_bad_inputs():
    model = ACTEModel(tiny_acte_config())
    with pytest.raises(ValueError, match=r"divisible by cell_size \* feature_stride = 8"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"domain_labels must have shape \(2,\)"):
        model(torch.randn(2, 3, 32, 32), domain_labels=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="0 \\(source\\) or 1 \\(target\\)"):
        model(torch.randn(2, 3, 32, 32), domain_labels=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"shape \(batch_size, 3, height, width\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="labels must have shape"):
        model(torch.randn(2, 3, 32, 32), labels=torch.zeros(2, 16, 16, dtype=torch.long))


def test_tmt_with_acte_computes_its_own_map_and_round_trips(tmp_path):
    acte = ACTEModel(tiny_acte_config()).eval()
    acte.save_pretrained(tmp_path / "acte")
    TMTForSemanticSegmentation(tiny_tmt_config(tma_init=1.0)).save_pretrained(tmp_path / "source")
    model = TMTForSemanticSegmentation.from_pretrained(
        tmp_path / "source", acte=ACTEModel.from_pretrained(tmp_path / "acte")
    )
    assert model.config.acte_config.cell_size == 2 and not any(p.requires_grad for p in model.acte.parameters())
    model.train()
    assert not model.acte.training  # the ACTE stays frozen in eval mode
    model.eval()
    pixels = torch.randn(1, 3, 64, 96)
    out = model(pixels)
    expected = F.adaptive_avg_pool2d(acte(pixels).focus_map[:, None], (4, 6))[:, 0]
    assert torch.allclose(out.focus_map, expected, atol=1e-6)
    unbiased = TMTForSemanticSegmentation.from_pretrained(tmp_path / "source").eval()(pixels)
    assert not torch.allclose(out.logits, unbiased.logits)  # the ACTE map changes the prediction

    model.save_pretrained(tmp_path / "tmt")
    reloaded = TMTForSemanticSegmentation.from_pretrained(tmp_path / "tmt").eval()
    assert reloaded.acte is not None
    assert torch.equal(reloaded(pixels).logits, out.logits)
    assert isinstance(AutoModel.from_pretrained(tmp_path / "acte"), ACTEModel)
    assert AutoConfig.from_pretrained(tmp_path / "acte").model_type == "acte"


def test_fresh_interpreter_loads_acte_and_tmt_with_acte(tmp_path):
    acte = ACTEModel(tiny_acte_config()).eval()
    acte.save_pretrained(tmp_path / "acte")
    model = TMTForSemanticSegmentation(tiny_tmt_config(tma_init=1.0)).attach_acte(acte).eval()
    model.save_pretrained(tmp_path / "tmt")
    TMTImageProcessor(size={"height": 64, "width": 96}).save_pretrained(tmp_path / "tmt")
    pixels = torch.randn(1, 3, 64, 96)
    torch.save({"pixels": pixels, "focus": acte(pixels).focus_map, "logits": model(pixels).logits}, tmp_path / "ref.pt")
    Image.fromarray(np.random.randint(0, 255, (40, 70, 3), dtype=np.uint8)).save(tmp_path / "street.png")
    out = run_without_tmt_hf(
        f"""
        import torch
        import torch.nn.functional as F
        from PIL import Image
        from transformers import AutoModel, AutoModelForSemanticSegmentation, pipeline
        ref = torch.load({str(tmp_path / "ref.pt")!r})
        acte = AutoModel.from_pretrained({str(tmp_path / "acte")!r}, trust_remote_code=True).eval()
        assert type(acte).__name__ == "ACTEModel"
        assert torch.equal(acte(ref["pixels"]).focus_map, ref["focus"])
        tmt = AutoModelForSemanticSegmentation.from_pretrained({str(tmp_path / "tmt")!r}, trust_remote_code=True).eval()
        assert torch.equal(tmt(ref["pixels"]).logits, ref["logits"])
        segmenter = pipeline("image-segmentation", model={str(tmp_path / "tmt")!r}, trust_remote_code=True)
        assert segmenter.model.acte is not None
        inputs = segmenter.image_processor(Image.open({str(tmp_path / "street.png")!r}), return_tensors="pt")
        out = segmenter.model(**inputs)
        own = F.adaptive_avg_pool2d(segmenter.model.acte(inputs["pixel_values"]).focus_map[:, None], out.focus_map.shape[-2:])[:, 0]
        assert torch.allclose(out.focus_map, own, atol=1e-6)
        assert segmenter(Image.open({str(tmp_path / "street.png")!r}))[0]["mask"].size == (70, 40)
        print("OK")
        """,
        tmp_path,
    )
    assert out.strip() == "OK"


def test_visualisation_figures(tmp_path):
    from tmt_hf.visualize import acte_maps, colorize, save_acte_figure

    acte = ACTEModel(tiny_acte_config()).eval()
    image = Image.fromarray(np.random.randint(0, 255, (64, 128, 3), dtype=np.uint8))
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
    maps = acte_maps(acte, pixels)
    assert maps["regions"].shape == maps["grid"].shape == maps["transferability"].shape == (16, 32)
    segmentation = np.random.randint(0, 19, (64, 128))
    path = save_acte_figure(image, maps, str(tmp_path / "maps.png"), segmentation=segmentation)
    figure = Image.open(path)
    assert figure.width > 4 * 128 and np.asarray(figure).std() > 0
    coloured = np.asarray(colorize(np.array([[0, 13], [255, 10]])))
    assert coloured[0, 0].tolist() == [128, 64, 128] and coloured[0, 1].tolist() == [0, 0, 142]
    assert coloured[1, 0].tolist() == [0, 0, 0]


def test_segmentation_colours_follow_the_label_space():
    from tmt_hf.data import IDD_LEVEL1_CLASSES, get_label_space
    from tmt_hf.visualize import CITYSCAPES_PALETTE, colorize, palette_of

    idd = palette_of(get_label_space("idd_level1").id2label)
    assert len(idd) == len(IDD_LEVEL1_CLASSES) and idd[3].tolist() == [0, 0, 142]  # vehicles: Cityscapes' car colour
    coloured = np.asarray(colorize(np.array([[6, 2], [255, 0]]), idd))
    assert coloured[0, 0].tolist() == [70, 130, 180] and coloured[0, 1].tolist() == [220, 20, 60]  # sky, living things
    assert coloured[1, 0].tolist() == [0, 0, 0]
    assert np.array_equal(palette_of(get_label_space("cityscapes").id2label), np.asarray(CITYSCAPES_PALETTE))
    custom = palette_of({0: "water", 1: "boat", 2: "sky"})  # no registered space: a fixed colour per class
    assert custom.shape == (3, 3) and np.array_equal(custom, palette_of({0: "water", 1: "boat", 2: "sky"}))


def test_source_like_regions_score_as_transferable():
    """t = min(1, (1 - p) / p): a region that confidently looks like source transfers (t = 1), unlike with H(p)."""
    logits = torch.tensor([[[-6.0, 0.0, 2.0, 6.0]]])  # source-like, undecided, target-like, very target-like
    model = ACTEModel(tiny_acte_config(relative_scoring=False))
    t = model.transferability(logits)[0, 0]
    assert torch.allclose(t[:2], torch.ones(2)) and t[2] == pytest.approx(float(torch.exp(torch.tensor(-2.0))))
    assert t[3] < 0.01
    model.config.transferability_score = "entropy"
    entropy = model.transferability(logits)[0, 0]
    assert entropy[0] < 0.05 and entropy[1] == pytest.approx(1.0)  # v0.1: source-like scored like target-like
    # Relative scoring: an image-wide offset of every logit moves no region's score.
    relative = ACTEModel(tiny_acte_config())
    assert torch.allclose(relative.transferability(logits), relative.transferability(logits + 3.0))


def test_local_normalisation_removes_a_veil_and_keeps_colour():
    """`"local"` standardisation: invariant to a gain and a grey offset (haze), not to a colour difference."""
    from tmt_hf.modeling_acte import normalize_input

    image = torch.rand(1, 3, 32, 48)
    veiled = 0.4 * image + 0.7  # a uniform veil: lower contrast, lifted towards grey, the same on every channel
    assert torch.allclose(normalize_input(image, "local"), normalize_input(veiled, "local"), atol=1e-4)
    tinted = image.clone()
    tinted[:, 0] += 0.3  # a red cast is colour, not a veil
    assert not torch.allclose(normalize_input(image, "local"), normalize_input(tinted, "local"), atol=1e-2)
    # "image+local" stacks both standardisations, and an ACTE built on it runs with twice the input channels.
    both = normalize_input(image, "image+local")
    assert both.shape == (1, 6, 32, 48) and torch.equal(both[:, 3:], normalize_input(image, "local"))
    model = ACTEModel(tiny_acte_config(discriminator_input_normalization="image+local", input_normalization="local"))
    out = model(pixel_values=torch.randn(2, 3, 32, 64), domain_labels=torch.tensor([0, 1]))
    assert out.focus_map.shape == (2, 8, 16) and torch.isfinite(out.loss)
