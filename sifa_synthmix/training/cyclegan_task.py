"""The CycleGAN baseline of the SynthMix paper's Tables 1-3: image-level adaptation only, SIFA's
"image alignment" baseline.

The translation is SIFA's: g_A (A -> B) and de_B reading e_B (B -> A), trained with the cycle
losses and the image adversaries d_B and d_A (one output channel: no auxiliary head). e_B + s_B
learn to segment g_A(A) with the source labels: cross-entropy + Dice + L2, as SIFA's
segmentation update without its other terms. There is no output-space adversary (d_P, d_P_ll),
no deep-supervision head (s_B_ll), and g_loss_B never reaches e_B: e_B is the segmenter's
encoder, which de_B reads and does not train. The updates run in SIFA's order, without d_P and
d_P_ll, each seeing the weights the previous one left, or in SIFA's merged schedule
(--update_schedule=merged: one forward pass feeds the generators' and the segmenter's updates).
"""
import tensorflow as tf

from sifa_synthmix.models import losses
from sifa_synthmix.models.networks import (SIFANetworks, build_de_B, build_discriminator, build_e_B, build_g_A,
                                           build_segmenter)
from sifa_synthmix.training import adaptation_signal
from sifa_synthmix.training.task import SEG_L2_WEIGHT, SIFATask, foreground_dice, segmentation_losses

UPDATE_ORDER = ("g_A", "d_B", "seg", "de_B", "d_A")
UPDATE_SCOPES = {"g_A": ("g_A",), "d_B": ("d_B",), "seg": ("e_B", "s_B"), "de_B": ("de_B",), "d_A": ("d_A",)}


class CycleGANNetworks:
    """The SIFA networks image-level adaptation trains, under their SIFA scope names."""

    SCOPES = ("g_A", "e_B", "de_B", "s_B", "d_A", "d_B")

    def __init__(self, cfg):
        self.config = cfg
        self.g_A = build_g_A(cfg)
        self.e_B = build_e_B(cfg)
        self.de_B = build_de_B(cfg)
        self.s_B = build_segmenter(cfg, "s_B")
        self.d_A = build_discriminator(cfg, "d_A", in_channels=1)
        self.d_B = build_discriminator(cfg, "d_B", in_channels=1)

    parameter_counts = SIFANetworks.parameter_counts  # per scope of SCOPES, plus "total"


class CycleGANTask(SIFATask):
    """SIFA's translation and a segmenter trained on the translated source images."""

    UPDATE_ORDER = UPDATE_ORDER
    UPDATE_SCOPES = UPDATE_SCOPES

    def build_model(self):
        return CycleGANNetworks(self.cfg.model)

    def seg_loss(self, ctx, latents, g_loss_B, d_A_fake, variables):
        """e_B + s_B's loss on fake_B with the source labels: cross-entropy + Dice + L2, neither
        g_loss_B nor d_A's output (unused arguments, part of SIFA's signature) in it; also records
        the batch Dice and the logits image. Returns (loss, terms, {}, {})."""
        del g_loss_B, d_A_fake
        logits = self.networks.s_B(latents["latent_fake_B"])
        terms = segmentation_losses(logits, ctx["gt_A"], self.cfg.runtime.seg_loss_batch)
        terms["l2"] = SEG_L2_WEIGHT * losses.l2_regularisation(variables)
        ctx["metrics"]["dice_fake_B"] = foreground_dice(logits, ctx["gt_A"])
        ctx["images"]["seg_logits"] = logits
        return terms["ce"] + terms["dice"] + terms["l2"], terms, {}, {}

    def update_seg(self, ctx):
        """e_B + s_B on g_A(A) (g_A as its update left it) with the source labels."""
        n = self.networks
        ctx["fake_B"] = n.g_A(ctx["A"])
        variables = self.scope_variables(UPDATE_SCOPES["seg"])
        with tf.GradientTape() as tape:
            latent_fake_B, _ = n.e_B(ctx["fake_B"], training=True)
            loss, terms, _, _ = self.seg_loss(ctx, {"latent_fake_B": latent_fake_B}, None, None, variables)
        self.minimize(ctx, self.seg_optimizer, tape, loss, variables)
        self.record_seg_loss(ctx, loss, terms, {})

    def adaptation_measures(self, ctx):
        """The adaptation signal's measures without d_P: s_B (a 1x1 conv and a resize) on the
        e_B features of B that the de_B update computed after the seg update (merged schedule:
        the forward pass's)."""
        return adaptation_signal.step_measures(self.networks.s_B(ctx["latent_B"]), ctx["gt_A"])

    def update_d_A(self, ctx):
        """d_A on real A against pooled fake_A, like d_B (no auxiliary head, so no cycle_A term)."""
        self.update_image_discriminator(ctx, "d_A", ctx["A"], ctx["pooled_fake_A"])
