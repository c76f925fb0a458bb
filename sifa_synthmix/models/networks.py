"""The nine SIFA sub-networks as Keras functional models named after the official scopes; e_B + s_B
alone (the target segmenter), its logits, and the dtype policy the networks are built under.

Layer by layer as in the official TF1 `model.py` (see docs/sifa_reference.md). Outputs that
leave the networks (images, segmentation logits, discriminator maps) are float32 under any
mixed precision policy; the e_B latents stay in the compute dtype.
"""
import math

import keras

from sifa_synthmix.config import ModelConfig
from sifa_synthmix.models import replicas
from sifa_synthmix.models.layers import BilinearResize, conv_block, residual_block, upsample_block
from sifa_synthmix.models.traced_model import TracedModel

# e_B residual blocks r1..r12: (width as a multiple of encoder_base, max-pool 2 after the block).
_ENCODER_BLOCKS = (
    (1, True), (2, True), (4, False), (4, True), (8, False), (8, False),
    (16, False), (16, False), (16, False), (16, False), (32, False), (32, False),
)
# Discriminator c1..c4: (width as a multiple of ndf, stride, instance norm); c5 follows.
_DISCRIMINATOR_CONVS = ((1, 2, False), (2, 2, True), (4, 2, True), (8, 1, True))


def _image_input(cfg, channels=1, name="image"):
    return keras.Input((cfg.image_size, cfg.image_size, channels), name=name)


def _latent_width(cfg):
    return 32 * cfg.encoder_base


def _image_output(features, image, skip):
    """tanh(image + features) with the skip connection, else tanh(features); float32."""
    if skip:
        features = keras.layers.Add(dtype="float32", name="skip_add")([image, features])
    return keras.layers.Activation("tanh", dtype="float32", name="t1")(features)


def build_g_A(cfg: ModelConfig) -> keras.Model:
    """ResNet generator A->B: image (H, W, 1) -> image (H, W, 1)."""
    ngf = cfg.ngf
    image = _image_input(cfg)
    x = keras.layers.ZeroPadding2D(3, name="c1_pad")(image)
    x = conv_block(x, ngf, 7, name="c1", stddev=0.02, use_bias=True, norm="instance", activation="relu")
    for name, filters in (("c2", 2 * ngf), ("c3", 4 * ngf)):
        x = conv_block(x, filters, 3, name=name, strides=2, padding="same", stddev=0.02, use_bias=True,
                       norm="instance", activation="relu")
    for index in range(1, 10):
        x = residual_block(x, 4 * ngf, name=f"r{index}", norm="instance", use_bias=True, stddev=0.02)
    x = upsample_block(x, 2 * ngf, name="c4")
    x = upsample_block(x, ngf, name="c5")
    x = conv_block(x, 1, 7, name="c6", padding="same", stddev=0.02, use_bias=True)
    return TracedModel(image, _image_output(x, image, cfg.skip), name="g_A")


def build_e_B(cfg: ModelConfig) -> keras.Model:
    """Shared target encoder: image -> [latent (c3), latent_ll (r12)], both (H/8, W/8, 32 fb).

    Batch norm throughout: call it with training=True or False. Built inside a strategy with
    several replicas and `cfg.sync_batch_norm`, its statistics are the global batch's.
    """
    fb = cfg.encoder_base
    norm = "sync_batch" if cfg.sync_batch_norm and replicas.num_replicas() > 1 else "batch"
    encoder_conv = dict(stddev=0.01, use_bias=False, norm=norm, activation="relu")
    image = _image_input(cfg)
    x = conv_block(image, fb, 7, name="c1", padding="same", **encoder_conv)
    for index, (multiple, pool_after) in enumerate(_ENCODER_BLOCKS, start=1):
        x = residual_block(x, multiple * fb, name=f"r{index}", norm=norm, use_bias=False, stddev=0.01)
        if pool_after:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"r{index}_pool")(x)
    latent_ll = x
    for name in ("d1", "d2"):
        x = residual_block(x, _latent_width(cfg), name=name, norm=norm, use_bias="unadded", stddev=0.01,
                           dilation_rate=2)
    for name in ("c2", "c3"):
        x = conv_block(x, _latent_width(cfg), 3, name=name, padding="same", **encoder_conv)
    return TracedModel(image, [x, latent_ll], name="e_B")


def build_de_B(cfg: ModelConfig) -> keras.Model:
    """Decoder B->A: [latent (H/8, W/8, 32 fb), image (H, W, 1)] -> image (H, W, 1).

    The image only feeds the skip connection. With cfg.decoder_dropout > 0, dropout follows
    every conv of the residual blocks in training and inference, as in the official code.
    """
    ngf = cfg.ngf
    size = cfg.image_size // 8
    latent = keras.Input((size, size, _latent_width(cfg)), name="latent")
    image = _image_input(cfg)
    x = conv_block(latent, 4 * ngf, 3, name="c1", padding="same", stddev=0.02, use_bias=False,
                   norm="instance", activation="relu")
    for index in range(1, 5):
        x = residual_block(x, 4 * ngf, name=f"r{index}", norm="instance", use_bias=False, stddev=0.01,
                           dropout=cfg.decoder_dropout)
    for name, filters in (("c3", 2 * ngf), ("c4", 2 * ngf), ("c5", ngf)):
        x = upsample_block(x, filters, name=name)
    x = conv_block(x, 1, 7, name="c6", padding="same", stddev=0.02, use_bias=False)
    return TracedModel([latent, image], _image_output(x, image, cfg.skip), name="de_B")


def build_segmenter(cfg: ModelConfig, name: str) -> keras.Model:
    """1x1 conv to class logits, then TF1 bilinear resize to (H, W): latent -> logits (float32)."""
    size = cfg.image_size // 8
    latent = keras.Input((size, size, _latent_width(cfg)), name="latent")
    x = conv_block(latent, cfg.num_classes, 1, name="c8", padding="same", stddev=0.01, use_bias=False)
    logits = BilinearResize((cfg.image_size, cfg.image_size), dtype="float32", name="resize")(x)
    return TracedModel(latent, logits, name=name)


def build_discriminator(cfg: ModelConfig, name: str, in_channels: int, out_channels: int = 1) -> keras.Model:
    """PatchGAN discriminator: zero-pad 2 before every 4x4 VALID conv, no biases; float32 map.

    d_A uses out_channels=2 (channel 0 main, channel 1 auxiliary).
    """
    inputs = _image_input(cfg, in_channels, name="inputs")
    x = inputs
    for index, (multiple, strides, instance_norm) in enumerate(_DISCRIMINATOR_CONVS, start=1):
        x = keras.layers.ZeroPadding2D(2, name=f"c{index}_pad")(x)
        x = conv_block(x, multiple * cfg.ndf, 4, name=f"c{index}", strides=strides, stddev=0.02, use_bias=False,
                       norm="instance" if instance_norm else None, activation="leaky_relu")
    x = keras.layers.ZeroPadding2D(2, name="c5_pad")(x)
    x = conv_block(x, out_channels, 4, name="c5", stddev=0.02, use_bias=False, dtype="float32")
    return TracedModel(inputs, x, name=name)


def set_precision(precision):
    """Sets the global Keras dtype policy: float32, mixed_float16 or mixed_bfloat16."""
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown precision {precision!r}")
    keras.mixed_precision.set_dtype_policy(precision)


def target_logits(networks, images):
    """Target-domain segmentation logits: e_B (batch norm in inference mode), then s_B."""
    latent, _ = networks.e_B(images, training=False)
    return networks.s_B(latent)


def target_to_source(networks, images):
    """fake_A = de_B(e_B(images)) as the train step computes it: e_B in training mode (batch norm
    with this batch's statistics; it also moves e_B's moving averages), de_B's dropout on."""
    latent, _ = networks.e_B(images, training=True)
    return networks.de_B([latent, images])


def parameter_counts(networks) -> dict:
    """Trainable parameter count per scope of `networks` (its SCOPES), plus "total"."""
    counts = {
        scope: sum(math.prod(weight.shape) for weight in getattr(networks, scope).trainable_weights)
        for scope in networks.SCOPES
    }
    counts["total"] = sum(counts.values())
    return counts


class SIFANetworks:
    """The nine SIFA sub-networks, one attribute per official scope."""

    SCOPES = ("g_A", "e_B", "de_B", "s_B", "s_B_ll", "d_A", "d_B", "d_P", "d_P_ll")

    def __init__(self, cfg: ModelConfig):
        self.config = cfg
        self.g_A = build_g_A(cfg)
        self.e_B = build_e_B(cfg)
        self.de_B = build_de_B(cfg)
        self.s_B = build_segmenter(cfg, "s_B")
        self.s_B_ll = build_segmenter(cfg, "s_B_ll")
        self.d_A = build_discriminator(cfg, "d_A", in_channels=1, out_channels=2)
        self.d_B = build_discriminator(cfg, "d_B", in_channels=1)
        self.d_P = build_discriminator(cfg, "d_P", in_channels=cfg.num_classes)
        self.d_P_ll = build_discriminator(cfg, "d_P_ll", in_channels=cfg.num_classes)

    def parameter_counts(self) -> dict:
        return parameter_counts(self)


class SegmenterNetworks:
    """e_B and s_B alone under their SIFA scope names, so checkpoints line up with SIFA runs: the
    target segmenter at inference, and the networks of the reference rows (segmenter_task)."""

    SCOPES = ("e_B", "s_B")

    def __init__(self, cfg: ModelConfig):
        self.e_B = build_e_B(cfg)
        self.s_B = build_segmenter(cfg, "s_B")

    def parameter_counts(self) -> dict:
        return parameter_counts(self)
