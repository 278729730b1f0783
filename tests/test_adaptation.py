"""The adaptation objectives of tmt_hf.adaptation, each on its own."""

import math

import pytest
import torch
import torch.nn.functional as F

from tmt_hf import TMTConfig, TMTForSemanticSegmentation
from tmt_hf.adaptation import (
    AdversarialAlignment,
    GradientReversal,
    block_masks,
    class_mix_masks,
    dann_coefficient,
    ema_update,
    mix,
    pseudo_labels,
    weighted_cross_entropy,
)


def test_gradient_reversal_is_identity_forward_and_minus_coefficient_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = GradientReversal.apply(x, 0.3)
    torch.testing.assert_close(y, x)
    upstream = torch.randn(3, 4)
    y.backward(upstream)
    torch.testing.assert_close(x.grad, -0.3 * upstream)


def test_dann_coefficient_ramps_from_zero_to_one():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_coefficient(2.0) == dann_coefficient(1.0)  # clipped past the end of training
    values = [dann_coefficient(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_weighted_cross_entropy_weights_each_labelled_pixel():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 4, 4), torch.randint(5, (2, 4, 4))
    labels[0, 0] = 255
    plain = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(weighted_cross_entropy(logits, labels), plain)
    torch.testing.assert_close(weighted_cross_entropy(logits, labels, torch.ones(2, 4, 4)), plain)
    weights = torch.rand(2, 4, 4)
    pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    torch.testing.assert_close(weighted_cross_entropy(logits, labels, weights), (weights * pixel).sum() / 28)
    assert weighted_cross_entropy(logits, torch.full((2, 4, 4), 255)).item() == 0.0  # all ignored: 0, not NaN
    with pytest.raises(ValueError, match="must have the labels' shape"):
        weighted_cross_entropy(logits, labels, torch.ones(2, 4))


def test_adversarial_alignment_reverses_the_domain_gradient_and_weights_tokens_by_the_focus_map():
    torch.manual_seed(0)
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32)).eval()
    pixel_values = torch.randn(4, 3, 32, 32)
    unlabelled = torch.full((4, 32, 32), 255)  # no segmentation loss: only the domain loss has gradients
    domains = torch.tensor([1, 1, 0, 0])
    focus = torch.zeros(4, 32, 32)
    focus[:, :16] = 1.0  # the top half of every image

    wrapper = AdversarialAlignment(model, "focus", weight=0.5, steps=10)
    wrapper.step.fill_(10)  # the end of the ramp
    loss, logs = wrapper(pixel_values, unlabelled, domains, focus)
    loss.backward()
    encoder_grad = model.vit.embeddings.patch_embeddings.projection.weight.grad.clone()
    discriminator_grad = wrapper.discriminator[0].weight.grad.clone()
    assert wrapper.step.item() == 11 and "domain_loss" in logs

    model.zero_grad()
    wrapper.discriminator.zero_grad()
    tokens = model(pixel_values, output_hidden_states=[4]).hidden_states[4][:, 1:].unflatten(1, (2, 2))
    logits = wrapper.discriminator(tokens[:, :1])[..., 0]  # the focused (top) tokens only
    expected = F.binary_cross_entropy_with_logits(logits, domains.float()[:, None, None].expand_as(logits))
    (0.5 * expected).backward()
    assert logs["domain_loss"] == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(discriminator_grad, wrapper.discriminator[0].weight.grad)  # the discriminator learns
    torch.testing.assert_close(  # the encoder gets the reversed gradient
        encoder_grad, -dann_coefficient(1.0) * model.vit.embeddings.patch_embeddings.projection.weight.grad
    )
    with pytest.raises(ValueError, match="focus alignment needs a focus map"):
        wrapper(pixel_values, unlabelled, domains)
    with pytest.raises(ValueError, match="level must be one of"):
        AdversarialAlignment(model, "region", weight=0.5, steps=10)


def test_global_alignment_scores_one_mean_token_per_image():
    torch.manual_seed(0)
    model = TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32)).eval()
    wrapper = AdversarialAlignment(model, "global", weight=1.0, steps=10)
    pixel_values, domains = torch.randn(2, 3, 32, 32), torch.tensor([1, 0])
    _, logs = wrapper(pixel_values, torch.full((2, 32, 32), 255), domains)
    with torch.no_grad():
        tokens = model(pixel_values, output_hidden_states=[4]).hidden_states[4][:, 1:].mean(1)
        expected = F.binary_cross_entropy_with_logits(wrapper.discriminator(tokens)[:, 0], domains.float())
    assert logs["domain_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_ema_update_makes_the_teacher_the_moving_average_of_the_student():
    torch.manual_seed(0)
    student, teacher = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        student.weight.copy_(torch.randn(3))
        student.running_mean.copy_(torch.randn(3))
    student.num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, decay=0.9)
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * student.state_dict()[name])
        else:  # integer buffers are copied
            assert torch.equal(value, student.state_dict()[name])
    assert not teacher.weight.requires_grad or teacher.weight.grad is None
    ema_update(teacher, student, decay=0.0)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), student.state_dict().values()))
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, bias=False), 0.9)


def test_pseudo_labels_take_the_argmax_and_weigh_images_by_their_confident_share():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1] = 10.0  # image 0: class 1 everywhere, confident
    logits[1, 2, 0] = 10.0  # image 1: class 2 on the top row (confident), a tie on the bottom row
    labels, weights = pseudo_labels(logits, threshold=0.9)
    assert labels[0].eq(1).all() and labels[1, 0].eq(2).all()
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.5])[:, None, None].expand(2, 2, 2))
    gate = torch.ones(2, 2, 2)
    gate[:, :, 0] = 0.0  # a trust map: the left column is not trusted
    _, gated = pseudo_labels(logits, threshold=0.9, gate=gate)
    assert gated[:, :, 0].eq(0).all() and torch.equal(gated[:, :, 1], weights[:, :, 1])
    with pytest.raises(ValueError, match="gate"):
        pseudo_labels(logits, 0.9, gate=torch.ones(2, 2))


def test_class_mix_masks_select_half_the_classes_of_each_image():
    labels = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 255]], [[5, 5, 5, 5], [5, 5, 5, 5]]])
    generator = torch.Generator().manual_seed(0)
    masks = class_mix_masks(labels, generator)
    chosen = labels[0][masks[0]].unique()
    assert len(chosen) == 2 and not masks[0][labels[0] == 255].any()
    for c in range(4):  # a class is pasted whole or not at all
        assert masks[0][labels[0] == c].all() or not masks[0][labels[0] == c].any()
    assert masks[1].all()  # one class: it is the half
    assert not class_mix_masks(torch.full((1, 2, 2), 255)).any()


def test_mix_pastes_where_the_mask_is_true():
    pasted, background = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[True, False], [False, True]]])
    mixed = mix(pasted, background, mask)
    assert torch.equal(mixed[0, :, 0, 0], torch.ones(3)) and torch.equal(mixed[0, :, 0, 1], torch.zeros(3))
    assert torch.equal(
        mix(torch.full((1, 2, 2), 7), torch.zeros(1, 2, 2, dtype=torch.long), mask), torch.tensor([[[7, 0], [0, 7]]])
    )
    with pytest.raises(ValueError, match="do not fit"):
        mix(pasted, background, torch.ones(1, 3, 3, dtype=torch.bool))


def test_block_masks_hide_whole_blocks_at_the_ratio():
    generator = torch.Generator().manual_seed(0)
    masks = block_masks((64, 32, 48), block_size=8, ratio=0.7, generator=generator)
    assert masks.shape == (64, 32, 48) and masks.dtype == torch.bool
    blocks = masks.unflatten(1, (4, 8)).unflatten(3, (6, 8))  # (batch, 4, 8, 6, 8)
    assert (blocks.all(dim=(2, 4)) | ~blocks.any(dim=(2, 4))).all()  # constant inside each block
    assert abs(masks.float().mean().item() - 0.7) < 0.05
    assert block_masks((1, 5, 5), 4, 1.0).all() and not block_masks((1, 5, 5), 4, 0.0).any()
    with pytest.raises(ValueError, match="ratio"):
        block_masks((1, 4, 4), 2, 1.5)


def _tiny_segmenter():
    torch.manual_seed(0)
    return TMTForSemanticSegmentation(TMTConfig.from_preset("tiny", image_size=32, decoder_dropout=0.0))


def test_self_training_teacher_is_the_moving_average_of_the_student():
    from tmt_hf.adaptation import SelfTraining

    student = _tiny_segmenter()
    wrapper = SelfTraining(student, ema_decay=0.75).train()
    assert not wrapper.teacher.training and not any(p.requires_grad for p in wrapper.teacher.parameters())
    teacher_before = {k: v.clone() for k, v in wrapper.teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1)
    student_before = {k: v.clone() for k, v in student.state_dict().items()}  # the forward moves BatchNorm's stats
    images, labels = torch.randn(2, 3, 32, 32), torch.randint(19, (2, 32, 32))
    wrapper(images[:1], labels[:1], images, labels, images)
    expected = {k: 0.75 * v + 0.25 * student_before[k] for k, v in teacher_before.items() if v.is_floating_point()}
    for name, value in expected.items():
        torch.testing.assert_close(wrapper.teacher.state_dict()[name], value)
    wrapper.eval()(images[:1], labels[:1], images, labels, images)  # no update outside training
    for name, value in expected.items():
        assert wrapper.teacher.state_dict()[name].equal(value)


def test_self_training_losses_follow_the_pasted_classes_the_trust_and_the_masks():
    from tmt_hf.adaptation import SelfTraining

    student = _tiny_segmenter().eval()
    wrapper = SelfTraining(student, ema_decay=0.0, threshold=0.0, mask_ratio=0.5)
    wrapper.training = False  # keep the teacher as it is, and the student deterministic
    labelled, labelled_labels = torch.randn(1, 3, 32, 32), torch.randint(19, (1, 32, 32))
    source, target = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    one_class = torch.full((2, 32, 32), 7)  # one class per source image: it is the pasted half, covering everything
    _, logs = wrapper(labelled, labelled_labels, source, one_class, target, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = F.cross_entropy(student(pixel_values=source).logits, one_class)  # the mixed images are the sources
    assert logs["mixed_loss"] == pytest.approx(expected.item(), rel=1e-4)
    assert logs["pseudo_label_weight"] == 1.0 and logs["masked_loss"] > 0

    nothing_pasted = torch.full((2, 32, 32), 255)  # unlabelled sources: the mixed images are the targets
    zero_trust = torch.zeros(2, 32, 32)
    _, logs = wrapper(labelled, labelled_labels, source, nothing_pasted, target, trust=zero_trust)
    assert logs["mixed_loss"] == 0.0 and logs["masked_loss"] == 0.0 and logs["pseudo_label_weight"] == 0.0
    _, trusted = wrapper(labelled, labelled_labels, source, nothing_pasted, target, trust=torch.ones(2, 32, 32))
    assert trusted["mixed_loss"] > 0 and trusted["masked_loss"] > 0
    loss, logs = wrapper(labelled[:0], labelled_labels[:0], source, nothing_pasted, target, trust=zero_trust)
    assert logs["supervised_loss"] == 0.0 and loss.item() == 0.0  # no labels anywhere: nothing to learn
    with pytest.raises(ValueError, match="ema_decay"):
        SelfTraining(student, ema_decay=1.0)


def test_weighted_block_masks_hide_where_the_weight_is():
    from tmt_hf.adaptation import weighted_block_masks

    weights = torch.zeros(256, 16, 32)
    weights[:, :, 16:] = 1.0  # only the right half has weight
    masks = weighted_block_masks(weights, block_size=8, ratio=0.25, generator=torch.Generator().manual_seed(0))
    assert not masks[:, :, :16].any()
    assert abs(masks.float().mean().item() - 0.25) < 0.03  # the same share overall, all on the right
    uniform = weighted_block_masks(torch.ones(256, 16, 32), 8, 0.25, torch.Generator().manual_seed(0))
    assert abs(uniform.float().mean().item() - 0.25) < 0.03


def test_class_balanced_pseudo_labels_keep_a_share_of_every_predicted_class():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 16, 16)
    logits[:, 0] += 6.0  # class 0 confident and frequent: it would take every pixel above a global threshold
    labels, weights = pseudo_labels(logits, threshold=0.99, class_quantile=0.5)
    confidence = logits.softmax(1).max(1).values
    for cls in labels.unique():
        selected = weights[labels == cls]
        assert 0.45 <= selected.mean().item() <= 0.55 + 1e-6 or (confidence[labels == cls] >= 0.99).all()
        assert set(selected.unique().tolist()) <= {0.0, 1.0}
    # the kept pixels of a class are its most confident ones
    for cls in labels.unique():
        kept, dropped = confidence[(labels == cls) & (weights == 1)], confidence[(labels == cls) & (weights == 0)]
        if len(dropped):
            assert kept.min() >= dropped.max()
    _, everything = pseudo_labels(logits, threshold=0.0, class_quantile=0.5)
    assert everything.eq(1).all()  # a threshold every pixel meets keeps every pixel
    with pytest.raises(ValueError, match="class_quantile"):
        pseudo_labels(logits, 0.9, class_quantile=1.5)
