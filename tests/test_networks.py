"""SIFA sub-networks: official parameter counts and shapes, small forward passes, custom layers."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.config import ModelConfig
from sifa_synthmix.models.layers import AlwaysOnDropout, BilinearResize, ChannelZeroPad, InstanceNorm, UnaddedBiasConv2D
from sifa_synthmix.models.networks import SIFANetworks, build_de_B, build_e_B, build_g_A
from sifa_synthmix.models.traced_model import STATIC_BATCH_MIN_PIXELS, TracedModel, compiled_step
from sifa_synthmix.training.task import set_graph_optimizer

# Trainable parameters of the official TF1 graph at its defaults (docs/sifa_reference.md).
OFFICIAL_PARAMETER_COUNTS = {
    "g_A": 2_849_537,
    "e_B": 27_519_472,
    "de_B": 1_902_848,
    "s_B": 2_560,
    "s_B_ll": 2_560,
    "d_A": 2_771_712,
    "d_B": 2_763_520,
    "d_P": 2_767_616,
    "d_P_ll": 2_767_616,
    "total": 43_347_441,
}
OFFICIAL_BATCH_NORM_MOVING_STATS = 16_096
TINY = ModelConfig(image_size=32, ngf=4, ndf=4, encoder_base=2, num_classes=3)
BATCH = 2


def discriminator_map_size(image_size):
    """Five 4x4 VALID convs after zero padding 2, strides 2, 2, 2, 1, 1."""
    for stride in (2, 2, 2, 1, 1):
        image_size = image_size // stride + 1
    return image_size


def run_all(networks, images, training):
    """One forward pass of every sub-network on `images`; returns {scope: outputs}."""
    latent, latent_ll = networks.e_B(images, training=training)
    logits = networks.s_B(latent)
    return {
        "g_A": networks.g_A(images),
        "e_B": (latent, latent_ll),
        "de_B": networks.de_B([latent, images]),
        "s_B": logits,
        "s_B_ll": networks.s_B_ll(latent_ll),
        "d_A": networks.d_A(images),
        "d_B": networks.d_B(images),
        "d_P": networks.d_P(logits),
        "d_P_ll": networks.d_P_ll(logits),
    }


def tiny_images(seed=0):
    return tf.random.stateless_uniform((BATCH, TINY.image_size, TINY.image_size, 1), (seed, 1), -1.0, 1.0)


@pytest.fixture(scope="module")
def default_networks():
    return SIFANetworks(ModelConfig())


@pytest.fixture(scope="module")
def tiny_networks():
    keras.utils.set_random_seed(1234)
    return SIFANetworks(TINY)


@pytest.fixture
def mixed_bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_parameter_counts_match_the_official_graph(default_networks):
    assert default_networks.parameter_counts() == OFFICIAL_PARAMETER_COUNTS
    moving_stats = sum(int(np.prod(w.shape)) for w in default_networks.e_B.non_trainable_weights)
    assert moving_stats == OFFICIAL_BATCH_NORM_MOVING_STATS


def test_models_carry_the_official_scope_names(default_networks):
    assert [getattr(default_networks, scope).name for scope in SIFANetworks.SCOPES] == list(SIFANetworks.SCOPES)


def test_output_shapes_at_the_official_size(default_networks):
    def output_shape(model, *input_shapes):
        specs = [keras.KerasTensor(shape) for shape in input_shapes]
        outputs = model.compute_output_spec(specs if len(specs) > 1 else specs[0])
        return [tuple(o.shape) for o in outputs] if isinstance(outputs, list) else tuple(outputs.shape)

    image, latent = (1, 256, 256, 1), (1, 32, 32, 512)
    assert discriminator_map_size(256) == 35
    assert output_shape(default_networks.e_B, image) == [latent, latent]
    assert output_shape(default_networks.g_A, image) == image
    assert output_shape(default_networks.de_B, latent, image) == image
    for segmenter in (default_networks.s_B, default_networks.s_B_ll):
        assert output_shape(segmenter, latent) == (1, 256, 256, 5)
    assert output_shape(default_networks.d_A, image) == (1, 35, 35, 2)
    assert output_shape(default_networks.d_B, image) == (1, 35, 35, 1)
    for discriminator in (default_networks.d_P, default_networks.d_P_ll):
        assert output_shape(discriminator, (1, 256, 256, 5)) == (1, 35, 35, 1)


@pytest.mark.parametrize("training", [True, False])
def test_tiny_forward_pass_shapes_and_finite_values(tiny_networks, training):
    outputs = run_all(tiny_networks, tiny_images(), training)
    size, latent_size, map_size = TINY.image_size, TINY.image_size // 8, discriminator_map_size(TINY.image_size)
    expected = {
        "g_A": [(BATCH, size, size, 1)],
        "e_B": [(BATCH, latent_size, latent_size, 32 * TINY.encoder_base)] * 2,
        "de_B": [(BATCH, size, size, 1)],
        "s_B": [(BATCH, size, size, TINY.num_classes)],
        "s_B_ll": [(BATCH, size, size, TINY.num_classes)],
        "d_A": [(BATCH, map_size, map_size, 2)],
        "d_B": [(BATCH, map_size, map_size, 1)],
        "d_P": [(BATCH, map_size, map_size, 1)],
        "d_P_ll": [(BATCH, map_size, map_size, 1)],
    }
    for scope, tensors in outputs.items():
        tensors = list(tensors) if isinstance(tensors, tuple) else [tensors]
        assert [tuple(t.shape) for t in tensors] == expected[scope], scope
        assert all(np.isfinite(t.numpy()).all() for t in tensors), scope
    for scope in ("g_A", "de_B"):
        assert np.abs(outputs[scope].numpy()).max() < 1.0  # tanh range


@pytest.mark.parametrize("build, with_latent", [(build_g_A, False), (build_de_B, True)])
def test_skip_connection_adds_the_input_image_before_tanh(build, with_latent):
    generator = build(TINY)
    last_conv = generator.get_layer("c6")
    last_conv.set_weights([np.zeros(w.shape, np.float32) for w in last_conv.weights])
    images = tiny_images(seed=3)
    latent_size = TINY.image_size // 8
    latent = tf.random.stateless_normal((BATCH, latent_size, latent_size, 32 * TINY.encoder_base), (3, 2))
    generated = generator([latent, images] if with_latent else images)
    np.testing.assert_allclose(generated.numpy(), np.tanh(images.numpy()), rtol=1e-6, atol=1e-6)


def test_dilated_conv_biases_are_trainable_but_never_added():
    """The official dilate_conv2d creates `biases` but leaves them out of its output."""
    encoder = build_e_B(TINY)
    dilated = [layer for layer in encoder.layers if isinstance(layer, UnaddedBiasConv2D)]
    assert sorted(layer.name for layer in dilated) == ["d1_c1", "d1_c2", "d2_c1", "d2_c2"]
    assert all(layer.bias.trainable and layer.bias.shape == (32 * TINY.encoder_base,) for layer in dilated)
    images = tiny_images(seed=4)
    before = [t.numpy() for t in encoder(images, training=False)]
    for layer in dilated:
        layer.bias.assign(np.full(layer.bias.shape, 5.0, np.float32))
    after = [t.numpy() for t in encoder(images, training=False)]
    for expected, actual in zip(before, after):
        np.testing.assert_array_equal(actual, expected)


def test_encoder_segmenter_discriminator_compile_with_xla(tiny_networks):
    """Covers batch norm in training mode, channel padding, the resize op and instance norm."""

    def forward(images):
        _, latent_ll = tiny_networks.e_B(images, training=True)
        logits = tiny_networks.s_B_ll(latent_ll)
        return logits, tiny_networks.d_P_ll(logits)

    images = tiny_images(seed=5)
    eager = forward(images)
    compiled = tf.function(forward, jit_compile=True)(images)
    for expected, actual in zip(eager, compiled):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_outputs_are_float32_under_mixed_bfloat16(mixed_bfloat16_policy):
    networks = SIFANetworks(TINY)
    outputs = run_all(networks, tiny_images(), training=True)
    latent, latent_ll = outputs.pop("e_B")
    assert latent.dtype == latent_ll.dtype == tf.bfloat16  # the policy really applies inside
    for scope, tensor in outputs.items():
        assert tensor.dtype == tf.float32, scope
        assert np.isfinite(tensor.numpy()).all(), scope


def numpy_instance_norm(x, gamma, beta, epsilon=1e-6):
    mean = x.mean(axis=(1, 2), keepdims=True)
    variance = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def test_instance_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(2, 5, 6, 3)).astype(np.float32)
    gamma, beta = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    layer = InstanceNorm()
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(layer(x).numpy(), numpy_instance_norm(x, gamma, beta), rtol=1e-5, atol=1e-5)


def test_instance_norm_keeps_float32_statistics_under_bfloat16():
    rng = np.random.default_rng(1)
    x = tf.cast(rng.normal(5.0, 3.0, size=(2, 8, 8, 4)), tf.bfloat16)
    layer = InstanceNorm(dtype="mixed_bfloat16")
    y = layer(x)
    assert y.dtype == tf.bfloat16
    assert layer.gamma.dtype == layer.beta.dtype == "float32"
    expected = numpy_instance_norm(tf.cast(x, tf.float32).numpy(), 1.0, 0.0)
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), expected, rtol=1e-2, atol=2e-2)


def test_fused_instance_norm_is_per_sample_and_bfloat16_matches_float32_to_its_rounding():
    """On a CPU the float32 and bfloat16 layers run on the fused batch-norm kernel: per sample (a
    sample 100 times larger changes nothing of the others), float32 as numpy, bfloat16 values and
    gradients as float32's up to bfloat16 rounding."""
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(3, 6, 7, 5)).astype(np.float32)
    x[1] *= 100.0
    gamma, beta = rng.normal(1.0, 0.3, size=5).astype(np.float32), rng.normal(size=5).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    results = {}
    for policy in ("float32", "mixed_bfloat16"):
        layer = InstanceNorm(dtype=policy)
        layer.build(x.shape)
        layer.set_weights([gamma, beta])
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(tf.cast(inputs, layer.compute_dtype))
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        results[policy] = [tf.cast(t, tf.float32).numpy()
                           for t in (y, *tape.gradient(loss, [inputs, layer.gamma, layer.beta]))]
        assert layer.fused
    np.testing.assert_allclose(results["float32"][0], numpy_instance_norm(x, gamma, beta), rtol=1e-4, atol=1e-4)
    for exact, rounded in zip(results["float32"], results["mixed_bfloat16"]):
        assert np.linalg.norm(rounded - exact) <= 1e-2 * np.linalg.norm(exact)
    half = InstanceNorm(dtype="mixed_float16")  # float16 keeps the element-wise float32 path
    half.build(x.shape)
    half.set_weights([gamma, beta])
    assert not half.fused
    np.testing.assert_allclose(tf.cast(half(tf.cast(x, tf.float16)), tf.float32).numpy(),
                               numpy_instance_norm(x, gamma, beta), rtol=1e-2, atol=2e-2)


def _instance_norm_forward_and_back(layer, upstream, input_signature=None):
    """A tf.function of the layer's float32 output and the gradients of sum(output * upstream) by
    its input, gamma and beta."""
    def forward_and_back(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = tf.cast(layer(tf.cast(inputs, layer.compute_dtype)), tf.float32)
            loss = tf.reduce_sum(y * upstream)
        return y, tape.gradient(loss, [inputs, layer.gamma, layer.beta])

    return tf.function(forward_and_back, input_signature=input_signature)


def test_fused_instance_norm_gives_the_same_with_and_without_a_static_batch_size():
    """With the batch size known, each sample is normalised on its own; traced without it, the
    batch is transposed into channels. Both give the same values and gradients."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(2.0, 3.0, size=(3, 5, 6, 4)).astype(np.float32))
    layer = InstanceNorm(activation="relu")
    layer.build(x.shape)
    layer.set_weights([rng.normal(1.0, 0.3, size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)])
    upstream = rng.normal(size=x.shape).astype(np.float32)
    static = _instance_norm_forward_and_back(layer, upstream)
    batch_free = _instance_norm_forward_and_back(layer, upstream, [tf.TensorSpec([None, 5, 6, 4])])
    for name, function in (("static", static), ("batch-free", batch_free)):
        ops = {op.type for op in function.get_concrete_function(x).graph.get_operations()}
        assert ("Transpose" in ops) == (name == "batch-free"), name
    for per_sample, stacked in zip(tf.nest.flatten(static(x)), tf.nest.flatten(batch_free(x))):
        np.testing.assert_allclose(per_sample.numpy(), stacked.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy, batch, channels, transposes", [
    ("mixed_bfloat16", 2, 16, False), ("mixed_bfloat16", 2, 8, True), ("mixed_bfloat16", 3, 4, False),
    ("mixed_bfloat16", None, 16, True), ("float32", 2, 8, False), ("float32", None, 16, True)])
def test_fused_instance_norm_form_follows_the_kernels_channel_block(policy, batch, channels, transposes):
    """Per sample where the batch size is static, except in bfloat16 where only N * C fills whole
    channel blocks (C = 8, N = 2: transposed, 1.75-4.15 times as fast in the layer benchmark);
    transposed where the batch size is unknown."""
    layer = InstanceNorm(activation="relu", dtype=policy)
    layer.build((batch, 8, 8, channels))
    function = tf.function(layer, input_signature=[tf.TensorSpec([batch, 8, 8, channels], layer.compute_dtype)])
    ops = {op.type for op in function.get_concrete_function().graph.get_operations()}
    assert ("Transpose" in ops) == transposes
    assert ("Split" in ops) == (not transposes)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_instance_norm_applies_its_activation_also_where_the_graph_optimizer_fuses_it(policy):
    """The activation inside the layer (on the fused path right after the batch-norm kernel, where
    the graph optimizer merges a ReLU into it) gives activation(norm) and the gradient of the
    float32 element-wise layer, with the optimizer off and on; float16 takes the element-wise
    path."""
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, size=(2, 6, 7, 4)).astype(np.float32)
    gamma, beta = rng.normal(1.0, 0.3, size=4).astype(np.float32), rng.normal(size=4).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    normalised = numpy_instance_norm(x, gamma, beta)
    expected = {"relu": np.maximum(normalised, 0.0),
                "leaky_relu": np.where(normalised > 0, normalised, 0.2 * normalised)}
    tolerance = 1e-4 if policy == "float32" else 3e-2
    saved_options = tf.config.optimizer.get_experimental_options()
    try:
        for graph_optimizer in ("off", "on"):
            set_graph_optimizer(graph_optimizer)
            for activation, values in expected.items():
                layers = {}
                for name, layer_policy in (("tested", policy), ("reference", "float32")):
                    layers[name] = InstanceNorm(activation=activation, dtype=layer_policy)
                    layers[name].build(x.shape)
                    layers[name].set_weights([gamma, beta])
                layers["reference"].fused = False
                y, (gradient, _, _) = _instance_norm_forward_and_back(layers["tested"], upstream)(tf.constant(x))
                _, (reference_gradient, _, _) = _instance_norm_forward_and_back(layers["reference"], upstream)(
                    tf.constant(x))
                y, gradient, reference_gradient = y.numpy(), gradient.numpy(), reference_gradient.numpy()
                message = f"{activation}, graph optimizer {graph_optimizer}"
                np.testing.assert_allclose(y, values, rtol=tolerance, atol=tolerance, err_msg=message)
                assert (np.linalg.norm(gradient - reference_gradient)
                        <= tolerance * np.linalg.norm(reference_gradient)), message
    finally:
        tf.config.optimizer.set_experimental_options(saved_options)


def test_bilinear_resize_uses_tf1_sampling_for_a_2x2_upsample():
    image = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32).reshape(1, 2, 2, 1)
    # TF1: output pixel i samples source i * 2 / 4, clamped at the last row / column.
    expected = np.array(
        [[0.0, 0.5, 1.0, 1.0], [1.0, 1.5, 2.0, 2.0], [2.0, 2.5, 3.0, 3.0], [2.0, 2.5, 3.0, 3.0]], np.float32
    )
    np.testing.assert_allclose(BilinearResize((4, 4))(image).numpy()[0, :, :, 0], expected)


def numpy_tf1_resize_bilinear(images, out_height, out_width):
    def weights(in_size, out_size):
        source = np.arange(out_size) * (in_size / out_size)
        lower = np.floor(source).astype(int)
        return lower, np.minimum(lower + 1, in_size - 1), (source - lower).astype(np.float32)

    top, bottom, dy = weights(images.shape[1], out_height)
    left, right, dx = weights(images.shape[2], out_width)
    rows = images[:, top] * (1 - dy)[None, :, None, None] + images[:, bottom] * dy[None, :, None, None]
    return rows[:, :, left] * (1 - dx)[None, None, :, None] + rows[:, :, right] * dx[None, None, :, None]


def test_bilinear_resize_matches_tf1_semantics_for_uneven_ratios():
    images = np.random.default_rng(2).normal(size=(2, 3, 5, 4)).astype(np.float32)
    resized = BilinearResize((8, 12))(images).numpy()
    np.testing.assert_allclose(resized, numpy_tf1_resize_bilinear(images, 8, 12), rtol=1e-5, atol=1e-5)


def test_channel_zero_pad_pads_both_sides_of_the_channel_axis():
    x = np.ones((1, 2, 2, 2), np.float32)
    padded = ChannelZeroPad(3)(x).numpy()
    assert padded.shape == (1, 2, 2, 8)
    np.testing.assert_array_equal(padded[0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0])


def test_de_B_drops_after_each_residual_conv_by_default_as_the_official_graph(default_networks):
    """The official build_decoder leaves build_resnet_block's keep_rate=0.75: dropout (rate 0.25)
    after each of the 8 convs of de_B's residual blocks, before their instance norm."""
    de_B = default_networks.de_B
    dropouts = [layer for layer in de_B.layers if isinstance(layer, AlwaysOnDropout)]
    assert [layer.name for layer in dropouts] == [f"r{b}_c{c}_dropout" for b in range(1, 5) for c in (1, 2)]
    assert all(layer.rate == 0.25 for layer in dropouts)
    names = [layer.name for layer in de_B.layers]
    for layer in dropouts:
        conv = layer.name.removesuffix("_dropout")
        assert names.index(conv) + 1 == names.index(layer.name) == names.index(f"{conv}_instance_norm") - 1
    assert not any(isinstance(layer, AlwaysOnDropout) for scope in SIFANetworks.SCOPES if scope != "de_B"
                   for layer in getattr(default_networks, scope).layers)


def test_always_on_dropout_keeps_three_quarters_in_both_modes_and_its_stream_is_checkpointed(tmp_path):
    layer = AlwaysOnDropout(0.25)
    ones = tf.ones([64, 64, 8])
    first = layer(ones, training=False).numpy()
    assert set(np.unique(first)) == {0.0, np.float32(1 / 0.75)}
    assert abs((first > 0).mean() - 0.75) < 0.01
    saved = tf.train.Checkpoint(layer=layer).write(str(tmp_path / "ckpt"))
    second = layer(ones, training=True).numpy()
    assert abs((second > 0).mean() - 0.75) < 0.01 and not np.array_equal(first, second)
    tf.train.Checkpoint(layer=layer).read(saved).assert_consumed()
    np.testing.assert_array_equal(layer(ones).numpy(), second)  # the restored stream repeats itself


def _function_calls(graph):
    return [op for op in graph.get_operations() if op.type in ("PartitionedCall", "StatefulPartitionedCall")]


def test_a_step_calls_networks_as_functions_except_under_xla(tiny_networks):
    """Each network is one traced function that the step calls; under XLA it is traced inline
    (XLA compiled a nested network function again at every call: 50 s per step at 32 px)."""
    def step(images):
        return tiny_networks.d_B(tiny_networks.g_A(images))

    spec = tf.TensorSpec([BATCH, TINY.image_size, TINY.image_size, 1])
    assert len(_function_calls(compiled_step(step).get_concrete_function(spec).graph)) == 2
    assert not _function_calls(compiled_step(step, jit_compile=True).get_concrete_function(spec).graph)


@pytest.mark.parametrize("size, transposes", [(256, False), (32, True)])
def test_networks_with_instance_norm_on_large_images_are_traced_with_their_batch_size(size, transposes):
    """From STATIC_BATCH_MIN_PIXELS up, a traced network with instance norm knows its batch size, so
    its instance norm runs per sample; below, batches of any size share one trace (transposed form)."""
    assert size * size >= STATIC_BATCH_MIN_PIXELS or transposes
    image = keras.Input((size, size, 1))
    model = TracedModel(image, InstanceNorm(activation="relu")(keras.layers.Conv2D(2, 3, padding="same")(image)))
    batch = tf.zeros([2, size, size, 1])
    model(batch)
    traced = next(iter(model._traced_calls.values()))  # pylint: disable=protected-access
    ops = {op.type for op in traced.get_concrete_function(batch).graph.get_operations()}
    assert ("Transpose" in ops) == transposes
