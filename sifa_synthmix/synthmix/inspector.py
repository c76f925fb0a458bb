"""The Mixup Inspector (paper, Sec. 2.3) and the ResNet image inspector of the Mixup/CutMix baselines.

Mixup Inspector: a PatchGAN-style encoder down to a small bottleneck, then a
decoder with skip connections up to k x k, so that each output cell judges the
domain of one (H/k) x (H/k) patch with the whole image as context.
"""
import keras

from sifa_synthmix.layers import InstanceNorm, conv_block, residual_block, truncated_normal

_WEIGHT_STDDEV = 0.02
_BOTTLENECK_SIZE = 4


def inspector_resolutions(image_size, k):
    """The encoder's feature sizes, image_size/2 down to the bottleneck.

    Halving stops at 4 x 4 (at k x k when k < 4; the decoder is then empty),
    or earlier at an odd size (e.g. 96 -> ... -> 6). Raises ValueError unless k divides image_size and image_size / k
    is a power of two of at least 2 (each layer halves or doubles the size).
    """
    bottleneck = min(k, _BOTTLENECK_SIZE)
    ratio = image_size // k
    if image_size % k or ratio < 2 or ratio & (ratio - 1):
        raise ValueError(f"image_size / k must be a power of two >= 2, got {image_size} / {k}")
    sizes = [image_size // 2]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= bottleneck:
        sizes.append(sizes[-1] // 2)
    return sizes


def build_mixup_inspector(image_size, k, ndf=64, max_channels=512, name="inspector"):
    """Inspector for (image_size, image_size, 1) images -> [patch_logits (k, k, 1), aux_logit (1,)].

    Encoder: 4x4 stride-2 convs, ndf doubling per layer up to max_channels,
    instance norm (none on the first layer), LeakyReLU 0.2. Decoder: 4x4
    stride-2 transposed convs with instance norm and ReLU, each followed by
    concatenation with the encoder feature of the same size. A 4x4 conv to one
    channel gives the patch logits; the auxiliary branch is a 4x4 conv on the
    bottleneck and global average pooling. Both outputs are float32 whatever
    the dtype policy.
    """
    sizes = inspector_resolutions(image_size, k)
    image = keras.Input((image_size, image_size, 1), name="image")
    x = image
    encoder_features = {}
    for depth, size in enumerate(sizes):
        first = depth == 0
        x = conv_block(x, min(ndf * 2 ** depth, max_channels), 4, strides=2, padding="same",
                       name=f"encoder{depth}", stddev=_WEIGHT_STDDEV, use_bias=first,
                       norm=None if first else "instance", activation="leaky_relu")
        encoder_features[size] = x
    bottleneck = x
    size = sizes[-1]
    while size < k:
        size *= 2
        skip = encoder_features[size]
        x = keras.layers.Conv2DTranspose(
            skip.shape[-1], 4, strides=2, padding="same", use_bias=False,
            kernel_initializer=truncated_normal(_WEIGHT_STDDEV), name=f"decoder{size}")(x)
        x = InstanceNorm(name=f"decoder{size}_instance_norm")(x)
        x = keras.layers.ReLU(name=f"decoder{size}_relu")(x)
        x = keras.layers.Concatenate(name=f"decoder{size}_skip")([x, skip])
    patch_logits = conv_block(x, 1, 4, padding="same", name="patch_logits",
                              stddev=_WEIGHT_STDDEV, use_bias=True, dtype="float32")
    aux_map = conv_block(bottleneck, 1, 4, padding="same", name="aux_conv",
                         stddev=_WEIGHT_STDDEV, use_bias=True, dtype="float32")
    aux_logit = keras.layers.GlobalAveragePooling2D(name="aux_logit", dtype="float32")(aux_map)
    return keras.Model(image, [patch_logits, aux_logit], name=name)


def build_resnet_inspector(image_size, width=16, stages=4, max_channels=256, name="resnet_inspector"):
    """Small ResNet classifier for the Mixup/CutMix baselines: one domain logit per image.

    A 3x3 stem conv, then `stages` stages of [3x3 stride-2 conv (width doubling
    up to max_channels), residual block], all with instance norm and ReLU, then
    global average pooling and a dense layer. The logit is float32.
    """
    image = keras.Input((image_size, image_size, 1), name="image")
    x = conv_block(image, width, 3, padding="same", name="stem", stddev=_WEIGHT_STDDEV,
                   use_bias=False, norm="instance", activation="relu")
    for stage in range(stages):
        filters = min(width * 2 ** (stage + 1), max_channels)
        x = conv_block(x, filters, 3, strides=2, padding="same", name=f"stage{stage}_down",
                       stddev=_WEIGHT_STDDEV, use_bias=False, norm="instance", activation="relu")
        x = residual_block(x, filters, name=f"stage{stage}_res", norm="instance",
                           use_bias=False, stddev=_WEIGHT_STDDEV)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logit = keras.layers.Dense(1, kernel_initializer=truncated_normal(_WEIGHT_STDDEV),
                               name="logit", dtype="float32")(x)
    return keras.Model(image, logit, name=name)
