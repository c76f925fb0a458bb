"""The SIFA training task: networks, optimizers, fake pools, and the train step, in one of two
update schedules (--update_schedule).

official (the default): the seven updates run in the official order and each one sees the weights
as the previous update left them. Unlike the TF1 graph, a value is computed once and reused while
its inputs and weights are unchanged, and a tape only records the forward passes it
differentiates.

merged (as SIFA-pytorch's update_GAN / update_seg): one forward pass of every network per step,
recorded by one persistent tape, gives every generator-side loss from the weights the step starts
with; g_A and de_B take one update from it, e_B + s_B + s_B_ll one, and then each discriminator is
updated on the forward pass's outputs, detached (image discriminators on the fake pools' batches).
The losses and their weights are the official ones; only what each loss is evaluated on differs
(docs/benchmarks.md, "The merged update schedule and the peer").

Networks with only per-sample normalisation (g_A, de_B, discriminators) run once on stacked
batches; e_B (batch norm) always sees one batch at a time, as in the official graph.
"""
import functools
import operator

import tensorflow as tf

from sifa_synthmix.models import losses, replicas
from sifa_synthmix.models.fake_pool import FakeImagePool
from sifa_synthmix.models.networks import SIFANetworks, set_precision, target_logits, target_to_source
from sifa_synthmix.training import adaptation_signal
from sifa_synthmix.training.optimization import (build_adam, count_skipped_updates, loss_scale_items, loss_scale_values,
                                                 minimize_if_finite, statistics_snapshot)

SEG_L2_WEIGHT = 1e-4
DEEP_SUPERVISION_WEIGHT = 0.1
SEG_ADVERSARIAL_WEIGHTS = {"g_loss_B": 0.1, "d_P": 0.1, "d_P_ll": 0.01, "d_A_aux": 0.1}

UPDATE_ORDER = ("g_A", "d_B", "seg", "de_B", "d_A", "d_P", "d_P_ll")
# Updates that run e_B in training mode, so move its batch-norm statistics.
E_B_TRAINING_UPDATES = ("g_A", "seg", "de_B")
# The variables each update may change, by scope.
UPDATE_SCOPES = {
    "g_A": ("g_A",), "d_B": ("d_B",), "seg": ("e_B", "s_B", "s_B_ll"), "de_B": ("de_B",),
    "d_A": ("d_A",), "d_P": ("d_P",), "d_P_ll": ("d_P_ll",),
}
# The merged schedule's update of the two generators, g_A and de_B, from one loss; the other
# updates keep their official names and scopes.
GENERATORS = "generators"
MERGED_GENERATOR_UPDATES = ("g_A", "de_B")


def merged_order(official_order):
    """The merged schedule's updates: the generators, the segmenter, then the discriminators
    (and the Inspector) in their official order."""
    rest = tuple(name for name in official_order if name not in (*MERGED_GENERATOR_UPDATES, "seg"))
    return (GENERATORS, "seg") + rest


def add_terms(terms):
    """The sum of loss terms, added left to right."""
    return functools.reduce(operator.add, terms)


def run_stacked(model, batches):
    """Runs a network whose layers act on each sample alone once on several equal batches.

    `batches` holds tensors, or lists of tensors for a multi-input model; returns one output
    per batch.
    """
    if isinstance(batches[0], (list, tuple)):
        inputs = [tf.concat(parts, axis=0) for parts in zip(*batches)]
    else:
        inputs = tf.concat(batches, axis=0)
    outputs = model(inputs)
    if isinstance(outputs, (list, tuple)):
        return list(zip(*(tf.split(output, len(batches), axis=0) for output in outputs)))
    return tf.split(outputs, len(batches), axis=0)


def foreground_dice(logits, onehot):
    """Mean Dice over foreground classes of argmax predictions: the batch Dice SIFA logs
    (under a strategy, of the global batch)."""
    num_classes = onehot.shape[-1]
    prediction = tf.one_hot(tf.argmax(logits, axis=-1), num_classes)[..., 1:]
    truth = tf.cast(onehot, tf.float32)[..., 1:]
    axes = tf.range(tf.rank(truth) - 1)
    intersection, sizes = tf.unstack(replicas.cross_replica_sum(tf.stack([
        tf.reduce_sum(prediction * truth, axis=axes),
        tf.reduce_sum(prediction, axis=axes) + tf.reduce_sum(truth, axis=axes)])))
    return tf.reduce_mean(2.0 * intersection / (sizes + 1e-7))


def segmentation_losses(logits, onehot, batch="global"):
    """SIFA's weighted cross-entropy and Dice loss; under a strategy their batch statistics are
    the global batch's or (batch="replica") each replica's."""
    over_replicas = batch == "global"
    return {"ce": losses.weighted_cross_entropy(logits, onehot, over_replicas=over_replicas),
            "dice": losses.dice_loss(logits, onehot, over_replicas=over_replicas)}


def set_graph_optimizer(setting):
    """Switches TensorFlow's graph optimizer (grappler) on or off for functions run from now on."""
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": setting == "off"})


class SIFATask:
    """Builds everything a SIFA run trains and runs its step (official/vision style).

    Subclasses add terms to the generator losses through `mix_loss_A` / `mix_loss_B`, more
    updates through `update_order`, and may switch off the image discriminators d_A and d_B.
    Update NAME runs as `update_NAME(ctx)`, or as `merged_update_NAME(ctx)` where the merged
    schedule has its own (`update_function`).
    """

    image_discriminators = True
    # A task with other networks (the CycleGAN baseline) names its own updates and their scopes.
    UPDATE_ORDER = UPDATE_ORDER
    UPDATE_SCOPES = UPDATE_SCOPES

    def __init__(self, cfg):
        self.cfg = cfg
        set_precision(cfg.runtime.precision)
        set_graph_optimizer(cfg.runtime.graph_optimizer)
        self.networks = self.build_model()
        self.loss_scales = {}  # optimizer name -> DynamicLossScale (mixed_float16 only)
        self.gan_optimizer, self.seg_optimizer = self.build_optimizers()
        batch_shape = (cfg.batch_size, cfg.model.image_size, cfg.model.image_size, 1)
        self.pool_A = FakeImagePool(cfg.pool_size, batch_shape, seed=cfg.seed, name="pool_A")
        self.pool_B = FakeImagePool(cfg.pool_size, batch_shape, seed=cfg.seed + 1, name="pool_B")

    def build_model(self):
        return SIFANetworks(self.cfg.model)

    def parameter_counts(self):
        return self.networks.parameter_counts()

    def learning_rates(self):
        return {"gan": self.gan_optimizer.learning_rate, "seg": self.seg_optimizer.learning_rate}

    def scope_variables(self, scopes):
        return [v for scope in scopes for v in getattr(self.networks, scope).trainable_variables]

    def build_optimizers(self):
        """One Adam (beta1 0.5) shared by the six GAN updates, as in the official graph (so its
        step count, and Adam's bias correction, advances once per update), and one for seg; each
        with its loss scale under mixed_float16."""
        gan_scopes = [s for name in self.UPDATE_ORDER if name != "seg" for s in self.UPDATE_SCOPES[name]]
        gan, self.loss_scales["adam_gan"] = build_adam(self.cfg.base_lr, 0.5, "adam_gan", self.cfg.runtime.precision,
                                                       self.scope_variables(gan_scopes))
        seg, self.loss_scales["adam_seg"] = build_adam(self.cfg.base_lr, 0.9, "adam_seg", self.cfg.runtime.precision,
                                                       self.scope_variables(self.UPDATE_SCOPES["seg"]))
        return gan, seg

    def checkpoint_items(self):
        """Everything a resumed run needs, for tf.train.Checkpoint."""
        items = {scope: getattr(self.networks, scope) for scope in self.networks.SCOPES}
        items.update(gan_optimizer=self.gan_optimizer, seg_optimizer=self.seg_optimizer,
                     pool_A=self.pool_A, pool_B=self.pool_B)
        items.update(loss_scale_items(self.loss_scales))
        return items

    def loss_scale_values(self):
        return loss_scale_values(self.loss_scales)

    @property
    def merged(self):
        return self.cfg.update_schedule == "merged"

    @property
    def update_order(self):
        """The updates of a step, in the order of the run's schedule."""
        order = merged_order(self.UPDATE_ORDER) if self.merged else self.UPDATE_ORDER
        if self.image_discriminators:
            return order
        return tuple(name for name in order if name not in ("d_A", "d_B"))

    def update_scopes(self, name):
        """The scopes whose variables update `name` changes."""
        if name == GENERATORS:
            return tuple(scope for update in MERGED_GENERATOR_UPDATES for scope in self.UPDATE_SCOPES[update])
        return self.UPDATE_SCOPES[name]

    def update_function(self, name):
        """The function of ctx that runs update `name` in the run's schedule."""
        if self.merged and hasattr(self, f"merged_update_{name}"):
            return getattr(self, f"merged_update_{name}")
        return getattr(self, f"update_{name}")

    def mix_loss_A(self, ctx, fake_B):
        """Extra term of g_loss_A (SynthMix's S_mix term); none in SIFA."""
        del ctx, fake_B
        return 0.0

    def mix_loss_B(self, ctx, fake_A):
        """Extra term of g_loss_B (SynthMix's T_mix term); none in SIFA."""
        del ctx, fake_A
        return 0.0

    # ----------------------------------------------------------------- losses
    def cycle_loss(self, ctx, cycle_A, cycle_B):
        weight = self.cfg.lambda_cycle
        return weight * (losses.cycle_consistency(ctx["A"], cycle_A) + losses.cycle_consistency(ctx["B"], cycle_B))

    def g_loss_A_terms(self, ctx, fake_B, cycle_A, cycle_B):
        """The terms of g_loss_A, in the order they are summed: the cycle loss, the mix term and
        (with image discriminators) lsgan_gen(d_B(fake_B)). Only the first reaches de_B's weights."""
        terms = [self.cycle_loss(ctx, cycle_A, cycle_B), self.mix_loss_A(ctx, fake_B)]
        if self.image_discriminators:
            terms.append(losses.lsgan_generator(self.networks.d_B(fake_B)))
        return terms

    def g_loss_B(self, ctx, latent_B, latent_fake_B):
        """g_loss_B = cycle + lsgan_gen(d_A_main(fake_A)) (+ mix term); also returns fake_A,
        the d_A output (None without image discriminators) and the cycle images."""
        n = self.networks
        fake_A, cycle_A = run_stacked(n.de_B, [[latent_B, ctx["B"]], [latent_fake_B, ctx["fake_B"]]])
        cycle_B = n.g_A(fake_A)
        loss = self.cycle_loss(ctx, cycle_A, cycle_B) + self.mix_loss_B(ctx, fake_A)
        d_A_fake = None
        if self.image_discriminators:
            d_A_fake = n.d_A(fake_A)
            loss += losses.lsgan_generator(d_A_fake[..., :1])
        return loss, fake_A, d_A_fake, (cycle_A, cycle_B)

    def encode_B_and_fake_B(self, ctx):
        """e_B in training mode on B, then on fake_B (one batch at a time, for batch norm)."""
        n = self.networks
        latent_B, latent_B_ll = n.e_B(ctx["B"], training=True)
        latent_fake_B, latent_fake_B_ll = n.e_B(ctx["fake_B"], training=True)
        return {"latent_B": latent_B, "latent_B_ll": latent_B_ll,
                "latent_fake_B": latent_fake_B, "latent_fake_B_ll": latent_fake_B_ll}

    def segmentation_terms(self, logits, logits_ll, onehot):
        batch = self.cfg.runtime.seg_loss_batch
        return {**segmentation_losses(logits, onehot, batch),
                **{f"{k}_ll": v for k, v in segmentation_losses(logits_ll, onehot, batch).items()}}

    def seg_loss(self, ctx, latents, g_loss_B, d_A_fake, variables):
        """The seg update's loss from e_B's encodings of B and fake_B, g_loss_B and d_A's output
        on fake_A: the segmentation terms on fake_B (deep supervision included), L2 and the
        adversarial terms. Returns the loss, its terms, its adversarial terms and the segmenters'
        logits as {"logits": (s_B on fake_B, on B), "logits_ll": (the same of s_B_ll)}."""
        n = self.networks
        pred_B, pred_fake_B = run_stacked(n.s_B, [latents["latent_B"], latents["latent_fake_B"]])
        pred_B_ll, pred_fake_B_ll = run_stacked(n.s_B_ll, [latents["latent_B_ll"], latents["latent_fake_B_ll"]])
        terms = self.segmentation_terms(pred_fake_B, pred_fake_B_ll, ctx["gt_A"])
        terms["l2"] = SEG_L2_WEIGHT * losses.l2_regularisation(variables)
        adversarial = {
            "g_loss_B": g_loss_B,
            "d_P": losses.lsgan_generator(n.d_P(pred_B)),
            "d_P_ll": losses.lsgan_generator(n.d_P_ll(pred_B_ll)),
        }
        if self.image_discriminators:
            adversarial["d_A_aux"] = losses.lsgan_generator(d_A_fake[..., 1:])
        loss = (terms["ce"] + terms["dice"] + terms["l2"]
                + DEEP_SUPERVISION_WEIGHT * (terms["ce_ll"] + terms["dice_ll"])
                + sum(SEG_ADVERSARIAL_WEIGHTS[k] * v for k, v in adversarial.items()))
        return loss, terms, adversarial, {"logits": (pred_fake_B, pred_B), "logits_ll": (pred_fake_B_ll, pred_B_ll)}

    def record_seg_loss(self, ctx, loss, terms, adversarial):
        metrics = ctx["metrics"]
        metrics["seg_loss"] = loss
        metrics.update({f"seg_{k}": v for k, v in terms.items()})
        metrics.update({f"seg_adv_{k}": v for k, v in adversarial.items()})

    def minimize(self, ctx, optimizer, tape, loss, variables):
        """An optimizer step that a non-finite loss or gradient, or a float16 overflow, skips
        (counted in the metrics); a skipped update leaves e_B's batch-norm statistics as the
        update found them."""
        loss_scale = self.loss_scales.get(optimizer.name)
        skipped, overflowed = minimize_if_finite(optimizer, tape, loss, variables, loss_scale,
                                                 restore_on_skip=ctx["statistics_before_update"])
        count_skipped_updates(ctx["metrics"], skipped, None if loss_scale is None else overflowed)

    # ---------------------------------------------------------------- updates
    # Each update reads and writes `ctx`, a dict of the step's tensors. In the official schedule a
    # value stays in ctx only while the weights and inputs it came from are unchanged; in the
    # merged one the forward pass's values stay all step: the discriminators are shown them.

    def update_g_A(self, ctx):
        n, metrics = self.networks, ctx["metrics"]
        fake_A = target_to_source(n, ctx["B"])
        variables = self.scope_variables(UPDATE_SCOPES["g_A"])
        with tf.GradientTape() as tape:
            fake_B, cycle_B = run_stacked(n.g_A, [ctx["A"], fake_A])
            latent_fake_B, _ = n.e_B(fake_B, training=True)
            cycle_A = n.de_B([latent_fake_B, fake_B])
            loss = add_terms(self.g_loss_A_terms(ctx, fake_B, cycle_A, cycle_B))
        self.minimize(ctx, self.gan_optimizer, tape, loss, variables)
        metrics["g_loss_A"] = loss
        if self.image_discriminators:
            # The pool gets fake_B from before this update, as in the official schedule.
            ctx["pooled_fake_B"] = self.pool_B(fake_B)

    def update_image_discriminator(self, ctx, scope, real_images, fake_images):
        """An LSGAN update of a one-channel image discriminator; records d_loss_<A|B>."""
        variables = self.scope_variables(self.UPDATE_SCOPES[scope])
        with tf.GradientTape() as tape:
            real, fake = run_stacked(getattr(self.networks, scope), [real_images, fake_images])
            loss = losses.lsgan_discriminator(real, fake)
        self.minimize(ctx, self.gan_optimizer, tape, loss, variables)
        ctx["metrics"][f"d_loss_{scope[2:]}"] = loss

    def update_d_B(self, ctx):
        self.update_image_discriminator(ctx, "d_B", ctx["B"], ctx["pooled_fake_B"])

    def update_seg(self, ctx):
        n = self.networks
        ctx["fake_B"] = n.g_A(ctx["A"])  # g_A has changed; it stays fixed until the next step
        variables = self.scope_variables(UPDATE_SCOPES["seg"])
        with tf.GradientTape() as tape:
            latents = self.encode_B_and_fake_B(ctx)
            g_loss_B, _, d_A_fake, _ = self.g_loss_B(ctx, latents["latent_B"], latents["latent_fake_B"])
            loss, terms, adversarial, _ = self.seg_loss(ctx, latents, g_loss_B, d_A_fake, variables)
        self.minimize(ctx, self.seg_optimizer, tape, loss, variables)
        self.record_seg_loss(ctx, loss, terms, adversarial)

    def update_de_B(self, ctx):
        # e_B changed in the seg update; these latents stay valid until the next step.
        ctx.update(self.encode_B_and_fake_B(ctx))
        variables = self.scope_variables(UPDATE_SCOPES["de_B"])
        with tf.GradientTape() as tape:
            loss, fake_A, _, cycles = self.g_loss_B(ctx, ctx["latent_B"], ctx["latent_fake_B"])
        self.minimize(ctx, self.gan_optimizer, tape, loss, variables)
        ctx["metrics"]["g_loss_B"] = loss
        ctx["images"].update(fake_A=fake_A, cycle_A=cycles[0], cycle_B=cycles[1])
        if self.image_discriminators:
            ctx["pooled_fake_A"] = self.pool_A(fake_A)

    def update_d_A(self, ctx):
        n = self.networks
        cycle_A = ctx.get("cycle_A")  # the merged forward pass's
        if cycle_A is None:
            cycle_A = n.de_B([ctx["latent_fake_B"], ctx["fake_B"]])  # de_B has changed
        variables = self.scope_variables(UPDATE_SCOPES["d_A"])
        with tf.GradientTape() as tape:
            real, pooled, cycled = run_stacked(n.d_A, [ctx["A"], ctx["pooled_fake_A"], cycle_A])
            loss = (losses.lsgan_discriminator(real[..., :1], pooled[..., :1])
                    + losses.lsgan_discriminator(cycled[..., 1:], pooled[..., 1:]))
        self.minimize(ctx, self.gan_optimizer, tape, loss, variables)
        ctx["metrics"]["d_loss_A"] = loss
        ctx["images"]["cycle_A"] = cycle_A

    def _update_output_discriminator(self, ctx, scope, segmenter, latent_key):
        """An LSGAN update of d_P or d_P_ll; returns the segmenter's logits on fake_B and on B
        and the discriminator's outputs on each (from before its update)."""
        n = self.networks
        logits = ctx.get(f"logits{latent_key}")  # the merged forward pass's
        if logits is None:  # e_B and the segmenters have changed
            logits = run_stacked(getattr(n, segmenter),
                                 [ctx[f"latent_fake_B{latent_key}"], ctx[f"latent_B{latent_key}"]])
        fake_B_logits, B_logits = logits
        variables = self.scope_variables(UPDATE_SCOPES[scope])
        with tf.GradientTape() as tape:
            real, fake = run_stacked(getattr(n, scope), [fake_B_logits, B_logits])
            loss = losses.lsgan_discriminator(real, fake)
        self.minimize(ctx, self.gan_optimizer, tape, loss, variables)
        ctx["metrics"][f"d_loss_{scope[2:]}"] = loss
        return fake_B_logits, B_logits, (real, fake)

    def update_d_P(self, ctx):
        pred_fake_B, ctx["pred_B"], ctx["d_P_outputs"] = self._update_output_discriminator(ctx, "d_P", "s_B", "")
        ctx["metrics"]["dice_fake_B"] = foreground_dice(pred_fake_B, ctx["gt_A"])
        ctx["images"]["seg_logits"] = pred_fake_B

    def adaptation_measures(self, ctx):
        """The adaptation signal's measures of the step (adaptation_signal.py), from what the d_P
        update computed: s_B's prediction on B (in the official schedule e_B as the seg update
        left it, in the merged one as the step found it; batch statistics of this B batch) and
        d_P's outputs."""
        return adaptation_signal.step_measures(ctx["pred_B"], ctx["gt_A"], ctx["d_P_outputs"])

    def update_d_P_ll(self, ctx):
        self._update_output_discriminator(ctx, "d_P_ll", "s_B_ll", "_ll")

    # -------------------------------------------------------- merged schedule
    # One forward pass under a persistent tape (merged_forward) gives every generator-side loss;
    # two backward passes of it update the generators and the segmenter. The discriminator
    # updates above then find the forward pass's values in ctx (cycle_A, logits, the pools'
    # batches) and train on them, detached: their tapes record only their own networks.

    def merged_forward(self, ctx):
        """Every network's forward pass of the merged step, from the weights the step starts with:
        g_loss_A, g_loss_B and the seg loss with all their terms, as the official updates define
        them, and the loss the generators' update minimises."""
        n, metrics = self.networks, ctx["metrics"]
        ctx["statistics_before_forward"] = statistics_snapshot(n.e_B)
        tape = ctx["tape"] = tf.GradientTape(persistent=True)
        with tape:
            ctx["fake_B"] = n.g_A(ctx["A"])
            latents = self.encode_B_and_fake_B(ctx)
            g_loss_B, fake_A, d_A_fake, cycles = self.g_loss_B(ctx, latents["latent_B"], latents["latent_fake_B"])
            seg_loss, terms, adversarial, logits = self.seg_loss(ctx, latents, g_loss_B, d_A_fake,
                                                                 self.scope_variables(self.update_scopes("seg")))
            g_loss_A_terms = self.g_loss_A_terms(ctx, ctx["fake_B"], *cycles)
            # The cycle loss is g_loss_A's and g_loss_B's; their other terms reach only g_A's weights
            # (through fake_B) or only de_B's (through fake_A). So the gradient of this sum is
            # g_loss_A's for g_A and g_loss_B's for de_B.
            ctx["generators_loss"] = g_loss_B + add_terms(g_loss_A_terms[1:])
        ctx["seg_loss"] = seg_loss
        metrics["g_loss_A"] = add_terms(g_loss_A_terms)
        metrics["g_loss_B"] = g_loss_B
        self.record_seg_loss(ctx, seg_loss, terms, adversarial)
        ctx.update(latents, **logits, cycle_A=cycles[0])
        ctx["images"].update(fake_A=fake_A, cycle_A=cycles[0], cycle_B=cycles[1])
        if self.image_discriminators:
            ctx["pooled_fake_B"] = self.pool_B(ctx["fake_B"])
            ctx["pooled_fake_A"] = self.pool_A(fake_A)

    def merged_update_generators(self, ctx):
        """g_A and de_B, one update of the shared GAN Adam from the forward pass."""
        variables = self.scope_variables(self.update_scopes(GENERATORS))
        self.minimize(ctx, self.gan_optimizer, ctx["tape"], ctx["generators_loss"], variables)

    def merged_update_seg(self, ctx):
        """e_B, s_B and s_B_ll from the forward pass; its tape is done with after this."""
        variables = self.scope_variables(self.update_scopes("seg"))
        self.minimize(ctx, self.seg_optimizer, ctx.pop("tape"), ctx["seg_loss"], variables)

    # ------------------------------------------------------------------- step
    def new_context(self, source_images, source_labels, target_images):
        return {"A": source_images, "gt_A": source_labels, "B": target_images,
                "metrics": {}, "images": {}, "statistics_before_update": ()}

    def statistics_to_restore(self, ctx, name):
        """What to put back if update `name` is skipped: e_B's batch-norm statistics as they were
        before its forward passes moved them, () when it moved none. In the merged schedule the
        forward pass moved them, and the seg update (e_B's) puts them back."""
        if self.merged:
            return ctx["statistics_before_forward"] if name == "seg" else ()
        return statistics_snapshot(self.networks.e_B) if name in E_B_TRAINING_UPDATES else ()

    def run_updates(self, ctx):
        """The step's updates in the run's schedule (the merged one starts with its forward pass)."""
        if self.merged:
            self.merged_forward(ctx)
        for name in self.update_order:
            ctx["statistics_before_update"] = self.statistics_to_restore(ctx, name)
            self.update_function(name)(ctx)

    def train_step(self, source_images, source_labels, target_images, target_labels=None):
        """One step of the run's update schedule; returns (metrics, images).

        Target labels are never used for training (unsupervised adaptation); the argument
        exists so that every task has one signature.
        """
        del target_labels
        ctx = self.new_context(source_images, source_labels, target_images)
        self.run_updates(ctx)
        ctx["metrics"].update(self.adaptation_measures(ctx))
        images = dict(ctx["images"], A=ctx["A"], B=ctx["B"], fake_B=ctx["fake_B"],
                      seg_image=ctx["fake_B"], seg_labels=ctx["gt_A"])
        return ctx["metrics"], images

    def predict_logits(self, images):
        return target_logits(self.networks, images)
