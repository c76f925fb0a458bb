"""SIFA + SynthMix (and the Mixup/CutMix baselines, plain SIFA, Model 0) in the eager train
step: where the gradients go, that g_A's loss holds the S_mix term, and that every protocol
trains (docs: ../shared/docs/synthmix.md)."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.models.networks import SIFANetworks
from sifa_synthmix.models.synthmix.inspector_losses import inspector_loss
from sifa_synthmix.training.synthmix_task import MixingTask
from sifa_synthmix.training.task import SIFATask
from test_train_step import (EXPECTED_METRICS, assert_all_finite, build_seeded,
                             check_each_update_changes_only_its_own_variables, random_batch,
                             tiny_config)

# Eager steps run the networks op by op (conftest.networks_run_inline).
pytestmark = pytest.mark.usefixtures("networks_run_inline")


LAMBDA_INSPECTOR = 0.1


@pytest.fixture(scope="module")
def synthmix_task():
    task = build_seeded(tiny_config(decoder_dropout=0.0, protocol="synthmix", lambda_inspector=LAMBDA_INSPECTOR))
    assert isinstance(task, MixingTask) and task.patch_level
    return task


def test_each_update_changes_only_its_own_variables_and_the_inspector_only_its_own(synthmix_task):
    """The inspector update moves the inspector alone, no SIFA update moves the inspector, and
    g_A's update (which now reads the inspector) still moves g_A alone."""
    assert synthmix_task.update_order[-1] == "inspector"
    moved_statistics, _ = check_each_update_changes_only_its_own_variables(synthmix_task)
    assert "inspector" not in moved_statistics


def g_A_update_gradients(task, ctx, lambda_inspector, monkeypatch):
    """Runs update_g_A with the given lambda_I but, instead of applying the gradients, returns
    (loss, gradients w.r.t. g_A's variables); the weights are left as they were."""
    monkeypatch.setattr(task, "mix_cfg", dataclasses.replace(task.mix_cfg, lambda_inspector=lambda_inspector))
    captured = {}

    def capture(ctx, optimizer, tape, loss, variables):
        del ctx, optimizer
        captured["loss"] = float(loss)
        captured["gradients"] = [g.numpy() for g in tape.gradient(loss, variables)]

    monkeypatch.setattr(task, "minimize", capture)
    task.update_g_A(ctx)
    return captured["loss"], captured["gradients"]


def test_g_A_minimises_the_S_mix_term(synthmix_task, monkeypatch):
    task = synthmix_task
    source, labels, target = random_batch(seed=4)
    ctx = task.new_context(source, labels, target)  # one mask M for every run below
    loss_with, gradients_with = g_A_update_gradients(task, ctx, LAMBDA_INSPECTOR, monkeypatch)
    s_mix = float(ctx["metrics"]["mix_adv_S_mix"])
    loss_without, gradients_without = g_A_update_gradients(task, ctx, 0.0, monkeypatch)

    # The loss: lambda_I * L_adv^mix(S_mix) on top of SIFA's g_loss_A.
    assert s_mix > 0.1
    np.testing.assert_allclose(loss_with - loss_without, LAMBDA_INSPECTOR * s_mix, rtol=1e-4)

    # The gradient: the difference is lambda_I times the gradient of L_adv^mix on
    # S_mix = M * g_A(A) + (1 - M) * A with the inspector asked to answer the k x k mask.
    g_A = task.networks.g_A
    with tf.GradientTape() as tape:
        s_mix_images = ctx["mix_mask"] * g_A(source) + (1.0 - ctx["mix_mask"]) * source
        patch_logits, aux_logit = task.inspector(s_mix_images)
        term = LAMBDA_INSPECTOR * inspector_loss(patch_logits, aux_logit, ctx["mix_answer"])
    expected = tape.gradient(term, g_A.trainable_variables)
    scale = max(np.abs(g.numpy()).max() for g in expected)
    assert scale > 1e-6
    for with_, without, term_gradient in zip(gradients_with, gradients_without, expected):
        np.testing.assert_allclose(with_ - without, term_gradient, rtol=1e-3, atol=1e-2 * scale)


@pytest.mark.parametrize("aux_in_adversarial", [True, False])
def test_aux_term_enters_L_adv_mix_only_when_asked(synthmix_task, monkeypatch, aux_in_adversarial):
    """--aux_in_adversarial: the generators' L_adv^mix holds the Inspector's auxiliary term or
    only its k x k map term."""
    task = synthmix_task
    monkeypatch.setattr(task, "mix_cfg", dataclasses.replace(task.mix_cfg, aux_in_adversarial=aux_in_adversarial))
    source, labels, target = random_batch(seed=6)
    ctx = task.new_context(source, labels, target)
    fake_B = task.networks.g_A(source)
    term = task.mix_loss_A(ctx, fake_B)
    patch_logits, aux_logit = task.inspector(ctx["mix_mask"] * fake_B + (1.0 - ctx["mix_mask"]) * source)
    full = float(inspector_loss(patch_logits, aux_logit, ctx["mix_answer"]))
    patch_only = float(inspector_loss(patch_logits, aux_logit, ctx["mix_answer"], with_aux=False))
    assert full - patch_only > 1e-3
    expected = full if aux_in_adversarial else patch_only
    np.testing.assert_allclose(float(term), LAMBDA_INSPECTOR * expected, rtol=1e-5)


# --- every protocol trains --------------------------------------------------------------------

PROTOCOLS = {
    "synthmix": dict(protocol="synthmix"),
    "mixup": dict(protocol="mixup"),
    "cutmix": dict(protocol="cutmix"),
    "none": dict(protocol="none"),
    "model_0": dict(protocol="synthmix", image_discriminators=False),
}
MIX_METRICS = ("inspector_cls", "mix_adv_S_mix", "mix_adv_T_mix")


@pytest.mark.parametrize("variant", sorted(PROTOCOLS))
def test_two_eager_steps_of_every_protocol(variant):
    task = build_seeded(tiny_config(**PROTOCOLS[variant]))
    mixing = variant != "none"
    assert isinstance(task, MixingTask) == mixing and isinstance(task, SIFATask)
    image_discriminators = variant != "model_0"
    d_A_d_B_before = [v.numpy().copy() for scope in ("d_A", "d_B")
                      for v in getattr(task.networks, scope).trainable_variables]
    for step in range(2):
        metrics, _ = task.train_step(*random_batch(seed=10 + step))
        assert_all_finite(metrics)

    image_discriminator_metrics = {"d_loss_A", "d_loss_B"}
    expected = set(EXPECTED_METRICS) - (set() if image_discriminators else image_discriminator_metrics)
    assert expected <= set(metrics)
    assert image_discriminators == bool(image_discriminator_metrics & set(metrics))
    assert image_discriminators == ({"d_A", "d_B"} <= set(task.update_order))
    assert mixing == (set(MIX_METRICS) <= set(metrics))
    d_A_d_B_after = [v.numpy() for scope in ("d_A", "d_B")
                     for v in getattr(task.networks, scope).trainable_variables]
    unchanged = all(np.array_equal(b, a) for b, a in zip(d_A_d_B_before, d_A_d_B_after))
    assert unchanged != image_discriminators
    expected_gan_updates = 6 if image_discriminators else 4
    assert int(task.gan_optimizer.iterations) == 2 * expected_gan_updates

    counts = task.parameter_counts()
    sifa_total = sum(counts[scope] for scope in SIFANetworks.SCOPES)
    if mixing:
        inspector = sum(int(np.prod(v.shape)) for v in task.inspector.trainable_variables)
        assert counts["inspector"] == inspector > 0
        assert counts["total"] == sifa_total + inspector == task.networks.parameter_counts()["total"] + inspector
        assert int(task.inspector_optimizer.iterations) == 2
    else:
        assert "inspector" not in counts and counts["total"] == sifa_total
