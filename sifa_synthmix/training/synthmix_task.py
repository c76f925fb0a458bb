"""SIFA with a mixing protocol (SynthMix, or the Mixup/CutMix baselines) in the same train step.

Per step (docs: ../shared/docs/synthmix.md):
- one mask M is drawn for the aligned mixes: S_mix = M * fake_B + (1 - M) * A goes into g_loss_A,
  T_mix = M * B + (1 - M) * fake_A into g_loss_B, each as lambda_I * L_adv^mix with the
  inspector asked to answer M (its target-looking part);
- after SIFA's updates (the seven of the official schedule, or the merged schedule's, whose one
  forward pass holds both mix terms), the inspector is trained on A (answer 0), B (answer 1) and
  an unaligned mix of A and B with a fresh mask (answer M'), minimising lambda_I * L_cls.
For SynthMix the answer is the k x k block mask, and the inspector's auxiliary term (its
score against mean(M)) is part of L_cls and, unless --noaux_in_adversarial, of L_adv^mix (the
paper does not say which). For Mixup and CutMix the answer is the target share of the image and
the inspector is a PreAct-ResNet-18 with one logit per image.
"""
import keras
import tensorflow as tf

from sifa_synthmix.models import replicas
from sifa_synthmix.models.synthmix import inspector as inspector_lib, mixing
from sifa_synthmix.models.synthmix.inspector_losses import image_inspector_loss, inspector_loss, per_patch_accuracy
from sifa_synthmix.models.synthmix.masks import SynthMixMask
from sifa_synthmix.training import task as sifa_task
from sifa_synthmix.training.optimization import build_adam
from sifa_synthmix.visualize import grey_to_rgb

INPUT_KINDS = ("source", "target", "unaligned_mix")


class MixingTask(sifa_task.SIFATask):
    """SIFA + SynthMix (protocol "synthmix") or + Mixup / CutMix (image-level baselines)."""

    def __init__(self, cfg):
        self.mix_cfg = cfg.synthmix
        self.image_discriminators = cfg.synthmix.image_discriminators
        super().__init__(cfg)
        size = cfg.model.image_size
        self.patch_level = self.mix_cfg.protocol == "synthmix"
        if self.patch_level:
            self.inspector = inspector_lib.build_mixup_inspector(size, self.mix_cfg.k, ndf=self.mix_cfg.inspector_ndf)
            self.mask_layer = SynthMixMask(self.mix_cfg.k, size, lam=self.mix_cfg.lam,
                                           interpolation=self.mix_cfg.interpolation, seed=cfg.seed)
            self.seed_generator = self.mask_layer.seed_generator
        else:
            self.inspector = inspector_lib.build_resnet_inspector(size, ndf=self.mix_cfg.inspector_ndf)
            self.seed_generator = keras.random.SeedGenerator(cfg.seed)
        self.inspector_optimizer, self.loss_scales["adam_inspector"] = build_adam(
            cfg.base_lr, 0.5, "adam_inspector", cfg.runtime.precision, self.inspector.trainable_variables)

    @property
    def update_order(self):
        return super().update_order + ("inspector",)

    def parameter_counts(self):
        counts = super().parameter_counts()
        total = counts.pop("total")
        counts["inspector"] = sum(int(tf.size(v)) for v in self.inspector.trainable_variables)
        counts["total"] = total + counts["inspector"]
        return counts

    def checkpoint_items(self):
        return dict(super().checkpoint_items(), inspector=self.inspector,
                    inspector_optimizer=self.inspector_optimizer, mix_seed_state=self.seed_generator.state)

    # --------------------------------------------------------------- masks
    def draw_mask(self):
        """(mask to mix with, the inspector's answer): k x k block mask, or the target share.

        Drawn for the global batch; under a strategy every replica draws the same masks and
        keeps its slice, so the masks do not depend on the number of replicas."""
        batch_size = self.cfg.batch_size
        if self.patch_level:
            answer, mask = self.mask_layer(batch_size)  # (k x k mask, upsampled mask)
        elif self.mix_cfg.protocol == "mixup":
            mask, answer = mixing.mixup_mask(batch_size, seed=self.seed_generator)
        else:
            size = self.cfg.model.image_size
            mask, answer = mixing.cutmix_mask(batch_size, size, size, seed=self.seed_generator)
        return replicas.replica_slice(mask), replicas.replica_slice(answer)

    def constant_answer(self, batch_size, value):
        shape = [batch_size, self.mix_cfg.k, self.mix_cfg.k, 1] if self.patch_level else [batch_size]
        return tf.fill(shape, float(value))

    def inspector_loss(self, outputs, answer, with_aux=True):
        """L_cls or L_adv^mix; with_aux=False leaves out the Mixup Inspector's auxiliary term."""
        if self.patch_level:
            patch_logits, aux_logit = outputs
            return inspector_loss(patch_logits, aux_logit, answer, kind=self.mix_cfg.inspector_loss,
                                  with_aux=with_aux)
        return image_inspector_loss(outputs, answer, kind=self.mix_cfg.inspector_loss)

    def accuracy(self, outputs, answer):
        """Per-patch (SynthMix) or per-image accuracy of the inspector's decisions."""
        threshold = 0.5 if self.mix_cfg.inspector_loss == "lsgan" else 0.0
        logits = outputs[0] if self.patch_level else tf.reshape(outputs, [-1])
        return per_patch_accuracy(logits, answer, decision_threshold=threshold)

    def answer_image(self, outputs):
        """The inspector's answer as a [B, H, W, 1] probability image (k x k cells upsampled)."""
        logits = outputs[0] if self.patch_level else tf.reshape(outputs, [-1, 1, 1, 1])
        answer = tf.sigmoid(tf.cast(logits, tf.float32))
        if self.mix_cfg.inspector_loss == "lsgan":
            answer = tf.clip_by_value(tf.cast(logits, tf.float32), 0.0, 1.0)
        size = self.cfg.model.image_size
        return tf.image.resize(answer, [size, size], method="nearest")

    def _show(self, ctx, name, mixed, mask, outputs):
        """image | mask M | inspector answer, side by side, for TensorBoard."""
        size = self.cfg.model.image_size
        mask = tf.broadcast_to(tf.cast(mask, tf.float32), [tf.shape(mixed)[0], size, size, 1])
        panels = [grey_to_rgb(mixed), tf.image.grayscale_to_rgb(mask),
                  tf.image.grayscale_to_rgb(self.answer_image(outputs))]
        ctx["images"][f"mix/{name}"] = tf.concat(panels, axis=2)

    # --------------------------------------------------------------- step
    def new_context(self, source_images, source_labels, target_images):
        ctx = super().new_context(source_images, source_labels, target_images)
        ctx["mix_mask"], ctx["mix_answer"] = self.draw_mask()
        return ctx

    def _aligned_mix_loss(self, ctx, name, target_like, source_like):
        mixed = mixing.mix(target_like, source_like, ctx["mix_mask"])
        outputs = self.inspector(mixed)
        loss = self.inspector_loss(outputs, ctx["mix_answer"], with_aux=self.mix_cfg.aux_in_adversarial)
        ctx["metrics"][f"mix_adv_{name}"] = loss
        ctx["metrics"][f"inspector_accuracy_{name}"] = self.accuracy(outputs, ctx["mix_answer"])
        self._show(ctx, name, mixed, ctx["mix_mask"], outputs)
        return self.mix_cfg.lambda_inspector * loss

    def mix_loss_A(self, ctx, fake_B):
        return self._aligned_mix_loss(ctx, "S_mix", fake_B, ctx["A"])

    def mix_loss_B(self, ctx, fake_A):
        return self._aligned_mix_loss(ctx, "T_mix", ctx["B"], fake_A)

    def update_inspector(self, ctx):
        batch_size = ctx["A"].shape[0]  # this replica's
        mask, answer = self.draw_mask()
        unaligned = mixing.mix(ctx["B"], ctx["A"], mask)
        answers = (self.constant_answer(batch_size, 0.0), self.constant_answer(batch_size, 1.0), answer)
        variables = self.inspector.trainable_variables
        with tf.GradientTape() as tape:
            outputs = sifa_task.run_stacked(self.inspector, [ctx["A"], ctx["B"], unaligned])
            per_kind = [self.inspector_loss(o, a) for o, a in zip(outputs, answers)]
            classification = tf.add_n(per_kind) / len(per_kind)
            loss = self.mix_cfg.lambda_inspector * classification
        self.minimize(ctx, self.inspector_optimizer, tape, loss, variables)
        metrics = ctx["metrics"]
        metrics["inspector_cls"] = classification
        for kind, output, kind_answer in zip(INPUT_KINDS, outputs, answers):
            metrics[f"inspector_accuracy_{kind}"] = self.accuracy(output, kind_answer)
        self._show(ctx, "unaligned", unaligned, mask, outputs[2])
