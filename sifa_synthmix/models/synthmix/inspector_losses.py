"""Losses and accuracy for the inspectors. Domain labels: 1 = target, 0 = source.

The target map of a real source image is all zeros, of a real target image all
ones, of a mixed image its k x k mask. The same losses serve as L_cls (the
inspector learns the true map) and as L_adv^mix (the generators want the
inspector to answer the mask on S_mix / T_mix). All computed in float32.
"""
import tensorflow as tf

LOSS_KINDS = ("bce", "lsgan")


def _domain_loss(logits, targets, kind):
    """Mean sigmoid cross-entropy ("bce") or mean squared error of the raw outputs ("lsgan")."""
    logits = tf.cast(logits, tf.float32)
    targets = tf.reshape(tf.cast(targets, tf.float32), tf.shape(logits))
    if kind == "bce":
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))
    if kind == "lsgan":
        return tf.reduce_mean(tf.square(logits - targets))
    raise ValueError(f"kind must be one of {LOSS_KINDS}, got {kind!r}")


def inspector_loss(patch_logits, aux_logit, target_mask_k, kind="bce", with_aux=True):
    """Loss on the k x k map [B, k, k, 1] plus (with_aux) the loss of the auxiliary logit [B, 1]
    against the share of target cells, mean(target_mask_k) per sample."""
    target_mask_k = tf.cast(target_mask_k, tf.float32)
    loss = _domain_loss(patch_logits, target_mask_k, kind)
    if not with_aux:
        return loss
    target_share = tf.reduce_mean(target_mask_k, axis=tf.range(1, tf.rank(target_mask_k)))
    return loss + _domain_loss(aux_logit, target_share, kind)


def image_inspector_loss(logit, label, kind="bce"):
    """Loss of one logit per image ([B] or [B, 1]) against its target share `label` [B]."""
    return _domain_loss(logit, label, kind)


def per_patch_accuracy(patch_logits, target_mask_k, decision_threshold=0.0):
    """Share of cells whose decision (logit > threshold: target) matches target_mask_k > 0.5.

    The default threshold 0 suits sigmoid logits; use 0.5 for the LSGAN kind.
    """
    predicted_target = tf.cast(patch_logits, tf.float32) > decision_threshold
    true_target = tf.reshape(tf.cast(target_mask_k, tf.float32), tf.shape(patch_logits)) > 0.5
    return tf.reduce_mean(tf.cast(predicted_target == true_target, tf.float32))
