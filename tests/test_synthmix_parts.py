"""SynthMix parts: masks, mixing, the inspectors and their losses, and a toy run in which the
Mixup Inspector learns to tell the domain of each patch."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.models.synthmix.inspector import build_mixup_inspector, build_resnet_inspector
from sifa_synthmix.models.synthmix.inspector_losses import image_inspector_loss, inspector_loss, per_patch_accuracy
from sifa_synthmix.models.synthmix.masks import SynthMixMask
from sifa_synthmix.models.synthmix.mixing import cutmix, mix, mixup


# --- masks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lam, expected_share", [(0.3, 0.3), ("uniform", 0.5)])
def test_share_of_ones_follows_lambda(lam, expected_share):
    mask_k, mask = SynthMixMask(8, 32, lam=lam, seed=0)(400)
    assert abs(float(tf.reduce_mean(mask_k)) - expected_share) < 0.02
    per_sample_share = tf.reduce_mean(mask_k, axis=[1, 2, 3]).numpy()
    # Uniform lambda spreads the per-sample shares (std of U(0,1) is 0.29); a fixed one does not.
    assert (per_sample_share.std() > 0.2) == (lam == "uniform")


def test_nearest_mask_is_binary_and_constant_on_each_block():
    k, size = 4, 32
    mask_k, mask = SynthMixMask(k, size, seed=1)(6)
    assert mask_k.shape == (6, k, k, 1) and mask.shape == (6, size, size, 1)
    assert mask.dtype == tf.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    block = size // k
    blocks = mask.numpy().reshape(6, k, block, k, block)
    np.testing.assert_array_equal(blocks, np.broadcast_to(
        mask_k.numpy().reshape(6, k, 1, k, 1), blocks.shape))


def test_bilinear_mask_is_soft_between_cells():
    mask_k, mask = SynthMixMask(4, 32, lam=0.5, interpolation="bilinear", seed=2)(8)
    values = mask.numpy()
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert ((values > 0.0) & (values < 1.0)).any()


def test_mask_rejects_k_that_does_not_divide_the_image_size():
    with pytest.raises(ValueError):
        SynthMixMask(6, 32)


def test_masks_are_reproducible_under_a_seed_and_fresh_on_every_call():
    first, second = SynthMixMask(8, 32, seed=3), SynthMixMask(8, 32, seed=3)
    np.testing.assert_array_equal(first(4)[0], second(4)[0])
    assert not np.array_equal(first(4)[0], first(4)[0])


def test_mask_batch_size_from_a_reference_batch_inside_tf_function():
    layer = SynthMixMask(4, 16, seed=4)
    draw = tf.function(lambda images: layer(images))
    mask_k, mask = draw(tf.zeros([5, 16, 16, 1]))
    assert mask_k.shape == (5, 4, 4, 1) and mask.shape == (5, 16, 16, 1)


# --- mixing --------------------------------------------------------------------------------

def test_mix_matches_numpy_for_images_and_one_hot_labels():
    rng = np.random.default_rng(5)
    mask = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    for channels in (1, 5):
        target, source = rng.normal(size=(2, 2, 8, 8, channels)).astype(np.float32)
        np.testing.assert_array_equal(mix(target, source, mask),
                                      mask * target + (1 - mask) * source)


def test_mixup_label_is_the_share_of_target():
    rng = np.random.default_rng(6)
    target, source = rng.normal(size=(2, 64, 8, 8, 1)).astype(np.float32)
    mixed, lam = mixup(target, source, seed=keras.random.SeedGenerator(6))
    weights = lam.numpy()[:, None, None, None]
    np.testing.assert_allclose(mixed, weights * target + (1 - weights) * source, rtol=1e-5, atol=1e-6)
    assert 0.0 <= lam.numpy().min() and lam.numpy().max() <= 1.0 and lam.numpy().std() > 0.2


def test_cutmix_pastes_one_box_whose_share_is_the_label():
    target, source = np.ones((64, 16, 16, 1), np.float32), np.zeros((64, 16, 16, 1), np.float32)
    mixed, share = cutmix(target, source, seed=keras.random.SeedGenerator(7))
    mixed = mixed.numpy()[..., 0]
    np.testing.assert_allclose(mixed.mean(axis=(1, 2)), share, rtol=1e-6)
    for sample in mixed:
        rows, cols = np.flatnonzero(sample.any(axis=1)), np.flatnonzero(sample.any(axis=0))
        if rows.size:  # the ones fill exactly the box spanned by their rows and columns
            assert sample[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
            assert sample.sum() == rows.size * cols.size
    assert share.numpy().std() > 0.15


# --- inspectors ----------------------------------------------------------------------------

@pytest.mark.parametrize("k", [4, 8, 16, 32])
def test_inspector_outputs_k_by_k_logits_at_256(k):
    model = build_mixup_inspector(256, k)
    patch_logits, aux_logit = model.outputs
    assert model.name == "inspector"
    assert tuple(patch_logits.shape[1:]) == (k, k, 1) and tuple(aux_logit.shape[1:]) == (1,)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_small_inspector_runs_at_32(k):
    patch_logits, aux_logit = build_mixup_inspector(32, k, ndf=8)(np.zeros((3, 32, 32, 1), np.float32))
    assert patch_logits.shape == (3, k, k, 1) and aux_logit.shape == (3, 1)


@pytest.mark.parametrize("image_size, k", [(32, 32), (32, 3), (48, 16)])
def test_inspector_rejects_sizes_it_cannot_reach(image_size, k):
    with pytest.raises(ValueError):
        build_mixup_inspector(image_size, k)


def test_inspector_parameter_count_at_k8_256_ndf64():
    count = build_mixup_inspector(256, 8, ndf=64).count_params()
    print(f"Mixup Inspector parameters (k=8, 256x256, ndf=64): {count:,}")
    assert count == 15_365_954


def test_inspector_outputs_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        outputs = build_mixup_inspector(32, 8, ndf=8)(np.zeros((2, 32, 32, 1), np.float32))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert [output.dtype for output in outputs] == [tf.float32, tf.float32]


def test_resnet_inspector_gives_one_logit_per_image():
    model = build_resnet_inspector(32, ndf=4)
    logits = model(np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype(np.float32))
    assert logits.shape == (4, 1) and logits.dtype == tf.float32
    assert model.get_layer("stage4_block2_add").output.shape[1:] == (4, 4, 32)  # strides 1, 2, 2, 2; width 8 ndf


def preact_resnet18_hand_count(ndf, in_channels=1):
    """Trainable parameters of PreAct-ResNet-18 with instance norm (gamma and beta per channel),
    convs without bias and a dense layer to one logit, counted block by block."""
    def norm(c):
        return 2 * c

    def conv(k, c_in, c_out):
        return k * k * c_in * c_out

    count = conv(3, in_channels, ndf) + norm(ndf)  # stem: conv, norm (then ReLU)
    width = ndf
    for multiple in (1, 2, 4, 8):
        out = ndf * multiple
        for block in (1, 2):
            count += norm(width) + conv(3, width, out) + norm(out) + conv(3, out, out)
            if width != out:
                count += conv(1, width, out)  # projection shortcut
            width = out
    return count + 8 * ndf + 1  # dense: 8 ndf weights and a bias


def test_resnet_inspector_parameter_count_at_ndf64_is_preact_resnet18():
    model = build_resnet_inspector(256, ndf=64)
    assert preact_resnet18_hand_count(64) == 11_165_505
    assert model.count_params() == 11_165_505
    widths = [model.get_layer(f"stage{s}_block2_c2").filters for s in (1, 2, 3, 4)]
    assert widths == [64, 128, 256, 512]
    assert model.get_layer("stage4_block2_add").output.shape[1:] == (32, 32, 512)


# --- inspector losses ----------------------------------------------------------------------

def _numpy_sigmoid_cross_entropy(logits, labels):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


@pytest.fixture
def inspector_outputs():
    rng = np.random.default_rng(8)
    patch_logits = rng.normal(scale=2.0, size=(3, 4, 4, 1)).astype(np.float32)
    aux_logit = rng.normal(size=(3, 1)).astype(np.float32)
    target_mask_k = (rng.random((3, 4, 4, 1)) > 0.5).astype(np.float32)
    target_mask_k[0] = 0.0  # a real source image
    target_mask_k[1] = 1.0  # a real target image
    return patch_logits, aux_logit, target_mask_k


def test_inspector_loss_matches_numpy(inspector_outputs):
    patch_logits, aux_logit, target_mask_k = inspector_outputs
    share = target_mask_k.mean(axis=(1, 2, 3))[:, None]
    bce = (_numpy_sigmoid_cross_entropy(patch_logits, target_mask_k).mean()
           + _numpy_sigmoid_cross_entropy(aux_logit, share).mean())
    lsgan = ((patch_logits - target_mask_k) ** 2).mean() + ((aux_logit - share) ** 2).mean()
    np.testing.assert_allclose(inspector_loss(patch_logits, aux_logit, target_mask_k), bce, rtol=1e-5)
    np.testing.assert_allclose(inspector_loss(patch_logits, aux_logit, target_mask_k, kind="lsgan"),
                               lsgan, rtol=1e-5)
    patch_only = _numpy_sigmoid_cross_entropy(patch_logits, target_mask_k).mean()
    np.testing.assert_allclose(inspector_loss(patch_logits, aux_logit, target_mask_k, with_aux=False),
                               patch_only, rtol=1e-5)


def test_image_inspector_loss_matches_numpy():
    logit, label = np.array([[2.0], [-1.0], [0.5]], np.float32), np.array([1.0, 0.0, 0.3], np.float32)
    np.testing.assert_allclose(image_inspector_loss(logit, label),
                               _numpy_sigmoid_cross_entropy(logit[:, 0], label).mean(), rtol=1e-5)


def test_per_patch_accuracy_matches_numpy(inspector_outputs):
    patch_logits, _, target_mask_k = inspector_outputs
    expected = ((patch_logits > 0) == (target_mask_k > 0.5)).mean()
    np.testing.assert_allclose(per_patch_accuracy(patch_logits, target_mask_k), expected)


# --- the Inspector learns on a toy pair of domains ----------------------------------------

TOY_SIZE = 32


def _smooth_source(generator, batch_size):
    """Low-frequency noise: a 4 x 4 random field upsampled, plus faint pixel noise."""
    coarse = generator.normal([batch_size, 4, 4, 1])
    smooth = tf.image.resize(coarse, [TOY_SIZE, TOY_SIZE], method="bicubic")
    return 0.5 * smooth + 0.05 * generator.normal([batch_size, TOY_SIZE, TOY_SIZE, 1])


def _striped_target(generator, batch_size):
    """Stripes of period 4 (horizontal or vertical, random phase and contrast), an offset and noise."""
    rows, cols = tf.meshgrid(tf.range(TOY_SIZE), tf.range(TOY_SIZE), indexing="ij")
    coordinate = tf.where(generator.uniform([batch_size, 1, 1]) < 0.5, rows, cols)
    phase = generator.uniform([batch_size, 1, 1], 0, 4, dtype=tf.int32)
    stripes = tf.cast((coordinate + phase) // 2 % 2, tf.float32) * 2.0 - 1.0
    contrast = generator.uniform([batch_size, 1, 1], 0.2, 0.6)
    offset = 0.3 * generator.normal([batch_size, 1, 1])
    noise = 0.05 * generator.normal([batch_size, TOY_SIZE, TOY_SIZE])
    return (contrast * stripes + offset + noise)[..., tf.newaxis]


def _unaligned_mixes(generator, masks, batch_size):
    mask_k, mask = masks(batch_size)
    mixed = mix(_striped_target(generator, batch_size), _smooth_source(generator, batch_size), mask)
    return mixed, mask_k


@pytest.mark.parametrize("k", [4, 8])
def test_inspector_learns_the_domain_of_each_patch(k):
    keras.utils.set_random_seed(0)
    generator = tf.random.Generator.from_seed(0)
    masks = SynthMixMask(k, TOY_SIZE, seed=0)
    inspector = build_mixup_inspector(TOY_SIZE, k, ndf=16)
    optimizer = keras.optimizers.Adam(5e-4, beta_1=0.5)
    batch_size = 8

    @tf.function
    def train_step():
        source = _smooth_source(generator, batch_size)
        target = _striped_target(generator, batch_size)
        mixed, mask_k = _unaligned_mixes(generator, masks, batch_size)
        images = tf.concat([source, target, mixed], axis=0)
        target_maps = tf.concat([tf.zeros_like(mask_k), tf.ones_like(mask_k), mask_k], axis=0)
        with tf.GradientTape() as tape:
            patch_logits, aux_logit = inspector(images, training=True)
            loss = inspector_loss(patch_logits, aux_logit, target_maps)
        variables = inspector.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    def accuracy_on_fresh_mixes():
        mixed, mask_k = _unaligned_mixes(generator, masks, 64)
        return float(per_patch_accuracy(inspector(mixed)[0], mask_k))

    assert accuracy_on_fresh_mixes() < 0.8
    for _ in range(200):
        train_step()
    assert accuracy_on_fresh_mixes() > 0.9
