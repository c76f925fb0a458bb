"""The reference rows of a comparison: e_B + s_B trained with SIFA's segmentation loss alone.

"source only" trains on labelled source slices (no adaptation: the gap SIFA has to close);
"oracle" trains on labelled target slices (the ceiling). Same networks, loss terms and
optimizer settings as SIFA's segmentation update, without the deep-supervision head, the
adversarial terms and the generators. Its step computes no adaptation signal (source only sees no
target image): the trainer takes it from s_B's prediction on each logged target batch.
"""
import tensorflow as tf

from sifa_synthmix.models import losses
from sifa_synthmix.models.networks import SegmenterNetworks, set_precision, target_logits
from sifa_synthmix.training.optimization import (build_adam, count_skipped_updates, loss_scale_items, loss_scale_values,
                                                 minimize_if_finite, statistics_snapshot)
from sifa_synthmix.training.task import SEG_L2_WEIGHT, foreground_dice, segmentation_losses, set_graph_optimizer

TRAIN_DOMAINS = ("source", "target")


class SegmenterTask:
    """Trains e_B + s_B on one domain's labels: cross-entropy + Dice + 1e-4 L2, as in SIFA."""

    def __init__(self, cfg):
        if cfg.train_domain not in TRAIN_DOMAINS:
            raise ValueError(f"unknown train domain {cfg.train_domain!r}; expected one of {TRAIN_DOMAINS}")
        self.cfg = cfg
        set_precision(cfg.runtime.precision)
        set_graph_optimizer(cfg.runtime.graph_optimizer)
        self.networks = SegmenterNetworks(cfg.model)
        self.variables = self.networks.e_B.trainable_variables + self.networks.s_B.trainable_variables
        self.optimizer, loss_scale = build_adam(cfg.base_lr, 0.9, "adam_seg", cfg.runtime.precision, self.variables)
        self.loss_scales = {self.optimizer.name: loss_scale}

    def parameter_counts(self):
        return self.networks.parameter_counts()

    def learning_rates(self):
        return {"seg": self.optimizer.learning_rate}

    def loss_scale_values(self):
        return loss_scale_values(self.loss_scales)

    def checkpoint_items(self):
        return {"e_B": self.networks.e_B, "s_B": self.networks.s_B, "seg_optimizer": self.optimizer,
                **loss_scale_items(self.loss_scales)}

    def predict_logits(self, images):
        return target_logits(self.networks, images)

    def train_step(self, source_images, source_labels, target_images, target_labels=None):
        """One update on the training domain's batch; returns (metrics, images)."""
        if self.cfg.train_domain == "source":
            images, labels = source_images, source_labels
        else:
            images, labels = target_images, target_labels
        statistics = statistics_snapshot(self.networks.e_B)
        with tf.GradientTape() as tape:
            latent, _ = self.networks.e_B(images, training=True)
            logits = self.networks.s_B(latent)
            seg_losses = segmentation_losses(logits, labels, self.cfg.runtime.seg_loss_batch)
            terms = {f"seg_{k}": v for k, v in seg_losses.items()}
            terms["seg_l2"] = SEG_L2_WEIGHT * losses.l2_regularisation(self.variables)
            loss = tf.add_n(list(terms.values()))
        loss_scale = self.loss_scales[self.optimizer.name]
        skipped, overflowed = minimize_if_finite(self.optimizer, tape, loss, self.variables, loss_scale,
                                                 restore_on_skip=statistics)
        metrics = dict(terms, seg_loss=loss, dice_train=foreground_dice(logits, labels))
        count_skipped_updates(metrics, skipped, None if loss_scale is None else overflowed)
        return metrics, {"seg_image": images, "seg_logits": logits, "seg_labels": labels}
