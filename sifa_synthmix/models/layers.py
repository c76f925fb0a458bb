"""Keras 3 layers and conv blocks that reproduce the official SIFA (TF1) building blocks.

The block helpers take and return KerasTensors, so the builders in `networks.py` read like
the official graph. Layer names follow the official variable scopes (`r1/c1` becomes
`r1_c1`, its instance norm `r1_c1_instance_norm`) so official checkpoints can be mapped.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import ops


def truncated_normal(stddev):
    """The official weight initializer (TF1 `truncated_normal_initializer`, cut at 2 stddev)."""
    return keras.initializers.TruncatedNormal(mean=0.0, stddev=stddev)


# The official blocks' activations (LeakyReLU with slope 0.2) and the suffix of their layer names.
ACTIVATIONS = {None: lambda x: x, "relu": tf.nn.relu, "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.2)}
ACTIVATION_SUFFIXES = {"relu": "relu", "leaky_relu": "lrelu"}


# In bfloat16, oneDNN's batch-norm kernel took 1.7-5.5 times as long per sample on 4, 8, 24 or 40
# channels as on the same data transposed into a multiple of 16 channels (docs/benchmarks.md,
# "Instance norm by channel count"). In float32 per sample took at most 1.2 times as long.
CHANNEL_BLOCK = 16


def _per_sample(batch_size, channels, dtype):
    """Whether the fused instance norm runs per sample (else with the batch transposed into
    channels): with a static batch size, unless in bfloat16 only the transposed form's N * C
    channels fill whole channel blocks."""
    if batch_size is None:
        return False
    if dtype != "bfloat16":
        return True
    return channels % CHANNEL_BLOCK == 0 or batch_size * channels % CHANNEL_BLOCK != 0


class InstanceNorm(keras.layers.Layer):
    """Per-sample, per-channel normalisation over H and W with a learned scale and offset.

    Matches `tf.contrib.layers.instance_norm` (epsilon 1e-6, gamma ones, beta zeros). The
    statistics and the affine transform are computed in float32 even under a mixed
    precision policy; the result is cast back to the compute dtype.

    On a CPU, in float32 and bfloat16, it runs as one fused batch-norm kernel instead
    (`_fused_call`): the reference path's casts and a dozen element-wise ops forward and back took
    about a third of a bfloat16 step at 256 x 256 and a sixth of a float32 one
    (benchmarks.op_profile); the kernel computes the same statistics in float32, its output in
    the compute dtype. Not under float16, nor on a GPU, whose cuDNN batch norm takes no epsilon
    below 1e-5.

    `activation` ("relu", "leaky_relu" or None) is applied to the result. On the fused path it
    runs on the kernel's output, where TensorFlow's graph optimizer merges a ReLU into the
    batch-norm kernel (one pass over the activation fewer, forward).
    """

    def __init__(self, epsilon=1e-6, activation=None, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.epsilon = epsilon
        self.activation = activation

    def build(self, input_shape):
        channels = (input_shape[-1],)
        # autocast=False: gamma and beta stay float32 inside the float32 arithmetic below.
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma", autocast=False)
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta", autocast=False)
        self.fused = self.compute_dtype in ("float32", "bfloat16") and not tf.config.list_physical_devices("GPU")

    def call(self, inputs):
        if self.fused:
            return self._fused_call(inputs)
        x = ops.cast(inputs, "float32")
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        centred = x - mean
        variance = ops.mean(ops.square(centred), axis=(1, 2), keepdims=True)
        normalised = centred * ops.rsqrt(variance + self.epsilon)
        return ACTIVATIONS[self.activation](ops.cast(normalised * self.gamma + self.beta, self.compute_dtype))

    def _fused_call(self, inputs):
        """Instance norm of [N, H, W, C] as batch norm with training statistics. With a static
        batch size, of each sample alone: splitting the batch axis shares memory, so only the
        concatenation copies. Otherwise, or where in bfloat16 C is not a multiple of the kernel's
        channel block and N * C is (`_per_sample`), of one image [1, H, W, N * C] whose channels
        are the (sample, channel) pairs, gamma and beta tiled over the samples: two transposes."""
        if _per_sample(inputs.shape[0], inputs.shape[-1], self.compute_dtype):
            return self.fused_per_sample(inputs)
        return self.fused_transposed(inputs)

    def fused_per_sample(self, inputs):
        """The fused form of each sample alone (needs a static batch size)."""
        samples = [self._batch_norm(sample, self.gamma, self.beta) for sample in tf.split(inputs, inputs.shape[0])]
        return tf.concat(samples, 0) if len(samples) > 1 else samples[0]

    def fused_transposed(self, inputs):
        """The fused form of the batch transposed into channels."""
        shape = tf.shape(inputs)
        n, h, w, c = shape[0], shape[1], shape[2], shape[3]
        stacked = tf.reshape(tf.transpose(inputs, [1, 2, 0, 3]), [1, h, w, n * c])
        outputs = self._batch_norm(stacked, tf.tile(self.gamma, [n]), tf.tile(self.beta, [n]))
        return tf.transpose(tf.reshape(outputs, [h, w, n, c]), [2, 0, 1, 3])

    def _batch_norm(self, x, scale, offset):
        """The fused kernel, then the activation: adjacent, so that the graph optimizer can merge a
        ReLU into the kernel."""
        outputs = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)[0]
        return ACTIVATIONS[self.activation](outputs)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "activation": self.activation}


class FusedBatchNorm(keras.layers.Layer):
    """Batch norm as the official graph runs it, on the fused kernel.

    TF1's `contrib.layers.batch_norm` (the official `batch_norm`) runs 4D inputs through
    FusedBatchNormV3 and, with `updates_collections=None`, moves its statistics on every
    training-mode call: moving = momentum * moving + (1 - momentum) * batch statistic, where the
    batch variance is Bessel-corrected (n / (n - 1)) as the fused kernel returns it. One op
    forward and one backward, where Keras' BatchNormalization builds about twenty and keeps the
    uncorrected variance. Same weights as Keras' layer: gamma, beta, moving_mean, moving_variance
    (float32 under any policy). Not synchronised over replicas: "sync_batch" uses Keras' layer.
    """

    def __init__(self, momentum=0.9, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = (input_shape[-1],)
        for name, initializer, trainable in (("gamma", "ones", True), ("beta", "zeros", True),
                                             ("moving_mean", "zeros", False), ("moving_variance", "ones", False)):
            setattr(self, name, self.add_weight(shape=channels, initializer=initializer, name=name,
                                                trainable=trainable, autocast=False))

    def call(self, inputs, training=None):
        outputs, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=self.gamma, offset=self.beta, mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, exponential_avg_factor=1.0 - self.momentum if training else 1.0,
            data_format="NHWC", is_training=bool(training))[:3]
        if training:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return outputs

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


class ChannelZeroPad(keras.layers.Layer):
    """Zero-pads the channel axis by `padding` channels on each side (the res_ds shortcut)."""

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        self.padding = padding

    def call(self, inputs):
        return ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [self.padding, self.padding]])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2 * self.padding)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


class BilinearResize(keras.layers.Layer):
    """Bilinear resize to `size` = (height, width) with TF1 `tf.image.resize_images` semantics.

    TF1 maps output pixel i to source coordinate i * in / out (no half-pixel centres, no
    corner alignment); TF2's `tf.image.resize` uses half-pixel centres and gives other values.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(size)

    def call(self, inputs):
        resized = tf.raw_ops.ResizeBilinear(
            images=inputs, size=self.size, align_corners=False, half_pixel_centers=False
        )
        return ops.cast(resized, self.compute_dtype)  # the op always returns float32

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def instance_norm(x, activation, *, norm_name, activation_name):
    """InstanceNorm with its activation inside, then an identity layer named `activation_name`
    where the activation layer of earlier versions stood: a run's checkpoint keys its
    non-trainable variables by layer position, so the positions stay those of earlier runs."""
    x = InstanceNorm(activation=activation, name=norm_name)(x)
    return x if activation is None else keras.layers.Identity(name=activation_name)(x)


def _normalise_and_activate(x, norm, activation, name):
    """norm: "instance", "batch", "sync_batch" (statistics over all replicas of a tf.distribute
    strategy) or None; activation: "relu", "leaky_relu" or None."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    activation_name = activation and f"{name}_{ACTIVATION_SUFFIXES[activation]}"
    if norm == "instance":
        return instance_norm(x, activation, norm_name=f"{name}_instance_norm", activation_name=activation_name)
    if norm == "batch":
        x = FusedBatchNorm(momentum=0.9, epsilon=1e-3, name=f"{name}_batch_norm")(x)
    elif norm == "sync_batch":
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, synchronized=True,
                                            name=f"{name}_batch_norm")(x)
    elif norm is not None:
        raise ValueError(f"unknown norm {norm!r}")
    if activation == "relu":
        x = keras.layers.ReLU(name=activation_name)(x)
    elif activation == "leaky_relu":
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=activation_name)(x)
    return x


class UnaddedBiasConv2D(keras.layers.Conv2D):
    """A Conv2D whose bias is created and trained but never added to its output.

    The official `dilate_conv2d` (e_B's d1/d2 blocks) creates `biases` and leaves them out of
    its result; they still count among the official 43,347,441 trainable parameters, and the
    seg update's L2 term is their only gradient. Keeping the variable keeps both facts and
    maps official checkpoints one to one.
    """

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.kernel)
        return outputs if self.activation is None else self.activation(outputs)


class AlwaysOnDropout(keras.layers.Layer):
    """Dropout that is active in training and inference, like a TF1 `tf.nn.dropout` with a
    constant keep rate: each unit is kept with probability 1 - rate and scaled by 1 / (1 - rate).

    The random draws are stateless, keyed by (seed, number of calls), both held in a
    non-trainable weight: a checkpoint saves the stream with the model, so a resumed run drops
    the same units as an uninterrupted one. The seed is drawn from numpy's generator when the
    layer is built (keras.utils.set_random_seed makes it the run's).
    """

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def build(self, input_shape):
        del input_shape
        seed = int(np.random.randint(0, 2 ** 31 - 1))
        self.random_state = self.add_weight(shape=(2,), dtype="int64", trainable=False, name="random_state",
                                            initializer=keras.initializers.Constant([seed, 0]))

    def call(self, inputs):
        draws = tf.random.stateless_uniform(tf.shape(inputs), seed=self.random_state)
        self.random_state.assign_add(tf.constant([0, 1], tf.int64))
        kept = tf.cast(draws >= self.rate, inputs.dtype)
        return inputs * kept / tf.cast(1.0 - self.rate, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


def conv_block(x, filters, kernel_size, *, name, stddev, use_bias, strides=1, padding="valid",
               dilation_rate=1, norm=None, activation=None, dtype=None, dropout=0.0):
    """Conv2D, then optional dropout, norm and activation: the official `general_conv2d` (no
    bias), `general_conv2d_ga` (bias) and `dilate_conv2d` (dilation 2, use_bias="unadded": a
    bias that is never added, see UnaddedBiasConv2D)."""
    conv = UnaddedBiasConv2D if use_bias == "unadded" else keras.layers.Conv2D
    x = conv(
        filters, kernel_size, strides=strides, padding=padding, dilation_rate=dilation_rate,
        use_bias=bool(use_bias), kernel_initializer=truncated_normal(stddev), name=name, dtype=dtype,
    )(x)
    if dropout:
        x = AlwaysOnDropout(dropout, name=f"{name}_dropout")(x)
    return _normalise_and_activate(x, norm, activation, name)


def upsample_block(x, filters, *, name):
    """The official `general_deconv2d` as used by g_A and de_B: 3x3 stride-2 transposed conv
    (SAME, bias, stddev 0.02), instance norm, ReLU."""
    x = keras.layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", use_bias=True,
        kernel_initializer=truncated_normal(0.02), name=name,
    )(x)
    return _normalise_and_activate(x, "instance", "relu", name)


def residual_block(x, filters, *, name, norm, use_bias, stddev, dilation_rate=1, dropout=0.0):
    """Two zero-padded VALID 3x3 convs; out = ReLU(block + shortcut).

    Covers the official resnet blocks (dilation 1, pad 1) and drn blocks (dilation 2, pad 2,
    use_bias="unadded"); `use_bias` is conv_block's.
    When `filters` exceeds the input width (res_ds), the shortcut is the input zero-padded
    on the channel axis by half the difference on each side.
    """
    shortcut = x
    in_channels = x.shape[-1]
    for conv_name, activation in (("c1", "relu"), ("c2", None)):
        x = keras.layers.ZeroPadding2D(dilation_rate, name=f"{name}_{conv_name}_pad")(x)
        x = conv_block(
            x, filters, 3, name=f"{name}_{conv_name}", stddev=stddev, use_bias=use_bias,
            dilation_rate=dilation_rate, norm=norm, activation=activation, dropout=dropout,
        )
    if filters != in_channels:
        shortcut = ChannelZeroPad((filters - in_channels) // 2, name=f"{name}_shortcut_pad")(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(x)
