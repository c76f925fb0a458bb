"""SIFA's losses against plain numpy versions of the official formulas."""
import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.models import losses

NUM_CLASSES = 5


def _softmax(logits):
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _numpy_weighted_cross_entropy(logits, onehot):
    probabilities = _softmax(logits)
    total = onehot.sum()
    loss = 0.0
    for i in range(onehot.shape[-1]):
        weight = 1.0 - onehot[..., i].sum() / total
        loss = loss - weight * onehot[..., i] * np.log(np.clip(probabilities[..., i], 0.005, 1.0))
    return loss.mean()


def _numpy_dice_loss(logits, onehot):
    probabilities = _softmax(logits)
    classes = onehot.shape[-1]
    dice = sum(
        2.0 * (probabilities[..., i] * onehot[..., i]).sum()
        / ((probabilities[..., i] ** 2).sum() + onehot[..., i].sum() + 1e-7)
        for i in range(classes))
    return 1.0 - dice / classes


@pytest.fixture
def segmentation_batch():
    """Logits [2, 8, 8, 5] and one-hot labels with some 'no class' pixels (label 5 -> all-zero row)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(2, 8, 8, NUM_CLASSES)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES + 1, size=(2, 8, 8))
    labels[0, 0, :] = NUM_CLASSES
    onehot = np.eye(NUM_CLASSES + 1, dtype=np.float32)[labels][..., :NUM_CLASSES]
    assert (onehot.sum(-1) == 0).any()
    return logits, onehot


SEGMENTATION_LOSSES = pytest.mark.parametrize("loss, reference", [
    (losses.weighted_cross_entropy, _numpy_weighted_cross_entropy),
    (losses.dice_loss, _numpy_dice_loss),
])


@SEGMENTATION_LOSSES
def test_segmentation_loss_matches_numpy(segmentation_batch, loss, reference):
    logits, onehot = segmentation_batch
    expected = reference(logits.astype(np.float64), onehot)
    np.testing.assert_allclose(loss(logits, onehot), expected, rtol=1e-5)


def test_weighted_cross_entropy_clips_probabilities():
    """Two pixels, one of each class, both predicted as class 0 with certainty: the class-1
    pixel costs weight 0.5 times -log(0.005) (not -log(~0)); the class-0 pixel costs 0."""
    logits = np.array([[[[100.0, -100.0], [100.0, -100.0]]]], np.float32)
    onehot = np.array([[[[0.0, 1.0], [1.0, 0.0]]]], np.float32)
    expected = 0.5 * -np.log(0.005) / 2
    np.testing.assert_allclose(losses.weighted_cross_entropy(logits, onehot), expected, rtol=1e-5)


def test_weighted_cross_entropy_without_labelled_pixels_is_zero():
    logits = np.ones((1, 2, 2, 3), np.float32)
    assert float(losses.weighted_cross_entropy(logits, np.zeros_like(logits))) == 0.0


@SEGMENTATION_LOSSES
def test_segmentation_loss_reads_the_number_of_classes_and_accepts_float16(loss, reference):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 4, 3)).astype(np.float16)
    onehot = np.eye(3, dtype=np.float16)[rng.integers(0, 3, size=(1, 4, 4))]
    value = loss(tf.constant(logits), tf.constant(onehot))
    assert value.dtype == tf.float32
    expected = reference(logits.astype(np.float64), onehot.astype(np.float64))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_lsgan_and_cycle_losses_match_numpy():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(2, 3, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(losses.lsgan_generator(fake), np.mean((fake - 1) ** 2), rtol=1e-6)
    np.testing.assert_allclose(losses.lsgan_discriminator(real, fake),
                               0.5 * (np.mean((real - 1) ** 2) + np.mean(fake ** 2)), rtol=1e-6)
    np.testing.assert_allclose(losses.cycle_consistency(real, fake),
                               np.mean(np.abs(real - fake)), rtol=1e-6)


def test_l2_regularisation_matches_numpy():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in ((3, 3, 2, 4), (4,))]
    variables = [tf.Variable(array) for array in arrays]
    expected = sum((array.astype(np.float64) ** 2).sum() / 2 for array in arrays)
    np.testing.assert_allclose(losses.l2_regularisation(variables), expected, rtol=1e-5)
    assert float(losses.l2_regularisation([])) == 0.0
