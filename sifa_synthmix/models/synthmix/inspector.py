"""The Mixup Inspector (paper, Sec. 2.3) and the PreAct-ResNet-18 image inspector of the Mixup/CutMix
baselines.

Mixup Inspector: a PatchGAN-style encoder down to a small bottleneck, then a
decoder with skip connections up to k x k, so that each output cell judges the
domain of one (H/k) x (H/k) patch with the whole image as context.
"""
import keras

from sifa_synthmix.models.layers import conv_block, instance_norm, truncated_normal

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
        x = instance_norm(x, "relu", norm_name=f"decoder{size}_instance_norm", activation_name=f"decoder{size}_relu")
        x = keras.layers.Concatenate(name=f"decoder{size}_skip")([x, skip])
    patch_logits = conv_block(x, 1, 4, padding="same", name="patch_logits",
                              stddev=_WEIGHT_STDDEV, use_bias=True, dtype="float32")
    aux_map = conv_block(bottleneck, 1, 4, padding="same", name="aux_conv",
                         stddev=_WEIGHT_STDDEV, use_bias=True, dtype="float32")
    aux_logit = keras.layers.GlobalAveragePooling2D(name="aux_logit", dtype="float32")(aux_map)
    return keras.Model(image, [patch_logits, aux_logit], name=name)


def _preact_block(x, filters, strides, name):
    """Pre-activation basic block: norm-ReLU, 3x3 conv (strides), norm-ReLU, 3x3 conv, plus the
    shortcut: the input, or a 1x1 projection of the pre-activated input when the shape changes."""
    pre = instance_norm(x, "relu", norm_name=f"{name}_pre_instance_norm", activation_name=f"{name}_pre_relu")
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                       kernel_initializer=truncated_normal(_WEIGHT_STDDEV),
                                       name=f"{name}_shortcut")(pre)
    y = conv_block(pre, filters, 3, strides=strides, padding="same", name=f"{name}_c1", stddev=_WEIGHT_STDDEV,
                   use_bias=False, norm="instance", activation="relu")
    y = conv_block(y, filters, 3, padding="same", name=f"{name}_c2", stddev=_WEIGHT_STDDEV, use_bias=False)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def build_resnet_inspector(image_size, ndf=64, name="resnet_inspector"):
    """PreAct-ResNet-18 as in Mixup's reference code, one domain logit per image: the inspector
    of the Mixup/CutMix baselines.

    3x3 stem conv with norm and ReLU; four stages of two pre-activation basic blocks, widths
    ndf * (1, 2, 4, 8) (64..512 at ndf=64), strides 1, 2, 2, 2; global average pooling; a dense
    layer to one float32 logit. Instance norm where the reference has batch norm: the task runs
    the inspector once on stacked batches of source, target and mixed images (and on batches of
    fakes alone), so batch statistics would let it tell the domains by the batch rather than by
    each image; per-image statistics keep every image judged on its own, as SIFA's
    discriminators and the Mixup Inspector are.
    """
    image = keras.Input((image_size, image_size, 1), name="image")
    x = conv_block(image, ndf, 3, padding="same", name="stem", stddev=_WEIGHT_STDDEV,
                   use_bias=False, norm="instance", activation="relu")
    for stage, (multiple, strides) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2)), start=1):
        for block in (1, 2):
            x = _preact_block(x, ndf * multiple, strides if block == 1 else 1, name=f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logit = keras.layers.Dense(1, kernel_initializer=truncated_normal(_WEIGHT_STDDEV),
                               name="logit", dtype="float32")(x)
    return keras.Model(image, logit, name=name)
