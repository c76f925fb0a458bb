"""Every precision trains (issue 13): float32, mixed_float16 and mixed_bfloat16 runs of SIFA and
SIFA+SynthMix from the same weights and data, and float16's dynamic loss scaling recovering from a
scale far too large, for the GAN, segmentation and Inspector optimizers and the segmenter task."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import step_reference as reference
from sifa_synthmix.training.task_factory import build_task
from test_train_step import check_each_update_changes_only_its_own_variables

# Eager steps run the networks op by op (conftest.networks_run_inline).
pytestmark = pytest.mark.usefixtures("networks_run_inline")


PROTOCOLS = ("none", "synthmix")
MIXED_PRECISIONS = ("mixed_float16", "mixed_bfloat16")
# Of the float32 run from the same weights and data, measured: the loss before any update
# (g_loss_A of the first step) within 2e-4 (float16) and 2e-3 (bfloat16); every loss of three steps
# within 11% for both (float32 runs that differ only in rounding drift apart by a few percent too).
FIRST_LOSS_RTOL = 1e-2
STEP_LOSS_RTOL = 0.25
# A float16 loss scale that does not overflow these tiny networks in their first step, so that
# every update of it applies; the default 2^15 overflows in the GAN updates (tested below).
MODERATE_SCALE = 2.0 ** 10
HUGE_SCALE = 2.0 ** 24  # 512 times Keras' initial 2^15 (at 2^20 the Inspector's gradients do not overflow)
STEPS = 3


@pytest.fixture(autouse=True)
def float32_policy_afterwards():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def fixed_task(protocol, precision, kind="sifa", loss_scale=None):
    """A task of the reference config, with reference weights (and, under float16, `loss_scale`)."""
    cfg = reference.reference_config(protocol)
    runtime = dataclasses.replace(cfg.runtime, precision=precision)
    task = build_task(dataclasses.replace(cfg, runtime=runtime, kind=kind))
    reference.set_fixed_weights(task)
    for scale in task.loss_scales.values():
        if scale is not None and loss_scale is not None:
            scale.scale.assign(loss_scale)
    return task


def trained_losses(task):
    """Step 1 update by update (each changes exactly its scopes), then STEPS - 1 train steps;
    returns step 1's g_loss_A (before any update) and every float metric of the later steps."""
    _, first_step = check_each_update_changes_only_its_own_variables(task)
    history = [{"g_loss_A": float(first_step["g_loss_A"])}]
    for _ in range(STEPS - 1):
        metrics, _ = task.train_step(*reference.fixed_batch())
        assert int(metrics["skipped_updates"]) == 0 and int(metrics.get("loss_scale_overflows", 0)) == 0
        history.append({k: float(v) for k, v in metrics.items() if v.dtype.is_floating})
        assert all(np.isfinite(v) for v in history[-1].values()), history[-1]
    return history


@pytest.fixture(scope="module")
def float32_losses():
    return {protocol: trained_losses(fixed_task(protocol, "float32")) for protocol in PROTOCOLS}


@pytest.mark.parametrize("precision", MIXED_PRECISIONS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mixed_precision_trains_close_to_float32(precision, protocol, float32_losses):
    task = fixed_task(protocol, precision, loss_scale=MODERATE_SCALE)
    assert task.networks.e_B.get_layer("c1").compute_dtype == precision.removeprefix("mixed_")
    history = trained_losses(task)
    reference_history = float32_losses[protocol]
    np.testing.assert_allclose(history[0]["g_loss_A"], reference_history[0]["g_loss_A"], rtol=FIRST_LOSS_RTOL)
    for step, (ours, theirs) in enumerate(zip(history[1:], reference_history[1:]), start=2):
        assert ours.keys() == theirs.keys()
        for name, value in theirs.items():
            if not name.startswith(("dice_", "inspector_accuracy_", "signal_")):  # argmax and threshold counts
                np.testing.assert_allclose(ours[name], value, rtol=STEP_LOSS_RTOL, err_msg=f"step {step} {name}")


def steps_until_no_overflow(task, limit=16):
    """Trains until a step has no overflow; returns (overflowed steps, {optimizer: scales seen})."""
    step_function = tf.function(task.train_step, autograph=False)
    scales = {name: [float(v)] for name, v in task.loss_scale_values().items()}
    for step in range(1, limit + 1):
        metrics, _ = step_function(*reference.fixed_batch())
        assert int(metrics["skipped_updates"]) == 0  # overflows are not non-finite updates
        for name, value in task.loss_scale_values().items():
            scales[name].append(float(value))
        if int(metrics["loss_scale_overflows"]) == 0:
            return step - 1, scales
    raise AssertionError(f"still overflowing after {limit} steps: {scales}")


@pytest.mark.parametrize("kind, protocol", [("sifa", "synthmix"), ("segmenter", "none")])
def test_a_huge_loss_scale_comes_down_and_then_the_weights_update(kind, protocol):
    task = fixed_task(protocol, "mixed_float16", kind=kind, loss_scale=HUGE_SCALE)
    expected = {"gan", "seg", "inspector"} if kind == "sifa" else {"seg"}
    assert set(task.loss_scale_values()) == expected
    weights = [v.numpy().copy() for scope in task.networks.SCOPES
               for v in getattr(task.networks, scope).trainable_variables]
    overflowed_steps, scales = steps_until_no_overflow(task)
    assert 1 <= overflowed_steps <= 12
    for name, seen in scales.items():
        assert seen[0] == HUGE_SCALE and seen[-1] < HUGE_SCALE, (name, seen)
        halvings = [np.log2(earlier / later) for earlier, later in zip(seen, seen[1:])]
        assert all(h >= 0 and h == int(h) for h in halvings), (name, seen)  # only halvings while it comes down
    after = [v.numpy() for scope in task.networks.SCOPES for v in getattr(task.networks, scope).trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert sum(not np.array_equal(a, b) for a, b in zip(after, weights)) > 0.9 * len(weights)
