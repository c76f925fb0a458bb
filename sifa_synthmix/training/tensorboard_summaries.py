"""What a run writes to TensorBoard, each tag named and described.

Tags keep SIFA's names (A the labelled source domain, B the target; g_A, d_B, ... the scopes)
and name the run's modalities, e.g. images/fake_B_MR_to_CT. Groups: loss/ (each update's loss
and its terms), dice/, lr/, updates/ (skipped updates), loss_scale/ (mixed_float16), synthmix/
and inspector/ (mixing protocols), signal/ (the adaptation signal, adaptation_signal.py), images/,
masks/ (prediction | truth), mix/ (mixed image | mask | Inspector's answer), legend/ and eval/
(written by --mode=evaluate, evaluation/run_evaluation.py, and by the learning curve). Every tag
carries a description, which TensorBoard shows beside its chart.

The HParams plugin gets an experiment config (the run's settings without paths and cadences,
integers as integer domains; metrics: the final target Dice and ASSD and a few key losses), a
session start record per training session and a session end record.
"""
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from sifa_synthmix import visualize
from sifa_synthmix.config import flat_settings

# Settings that do not change what is trained: not hyperparameters.
BOOKKEEPING_SETTINGS = ("output_dir", "data.data_dir", "data.source_train_list", "data.target_train_list",
                        "data.target_val_list", "data.stats_file", "save_every", "keep_checkpoints",
                        "log_every", "image_every", "max_nonfinite", "eval_every")
# A run stopped by a signal can be resumed: HParams has no status for that, so "unknown".
SESSION_STATUS = {"success": api_pb2.STATUS_SUCCESS, "stopped": api_pb2.STATUS_UNKNOWN,
                  "failed": api_pb2.STATUS_FAILURE}
_MASK_COLOURS = "each class in its colour over the image (legend/classes), background not coloured"

# Step metrics (task.train_step) -> description; {A}, {B}, {seg_input} name the run's images.
METRIC_DESCRIPTIONS = {
    "g_loss_A": "g_A's update ({A} -> {B} generator): lambda_cycle x the L1 cycle consistency of both "
                "cycles, + LSGAN loss against d_B, + lambda_I x L_adv^mix of S_mix with a mixing protocol.",
    "d_loss_B": "d_B's update: LSGAN loss of d_B on real {B} images against pooled fake_B ({A} translated "
                "to look {B}).",
    "seg_loss": "The seg update's loss (e_B, s_B, s_B_ll): cross-entropy + Dice on {seg_input}, 0.1 x "
                "those of s_B_ll, L2, and the adversarial terms loss/seg_adv_*.",
    "seg_ce": "Weighted cross-entropy of s_B's prediction on {seg_input} against its labels.",
    "seg_dice": "Dice loss (1 - soft Dice over the classes) of s_B's prediction on {seg_input}.",
    "seg_ce_ll": "Weighted cross-entropy of s_B_ll (deep supervision on e_B's low-level features) on "
                 "{seg_input}; weight 0.1.",
    "seg_dice_ll": "Dice loss of s_B_ll on {seg_input}; weight 0.1.",
    "seg_l2": "L2 regularisation of the segmenter's weights, as added to its loss.",
    "seg_adv_g_loss_B": "Adversarial term of the seg update: de_B's generator loss through e_B's "
                        "features (weight 0.1).",
    "seg_adv_d_P": "Adversarial term of the seg update: s_B's prediction on {B} made to look like its "
                   "prediction on fake_B to d_P (weight 0.1).",
    "seg_adv_d_P_ll": "Adversarial term of the seg update: the same for s_B_ll and d_P_ll (weight 0.01).",
    "seg_adv_d_A_aux": "Adversarial term of the seg update: d_A's auxiliary channel on fake_A (decoded "
                       "from {B}'s features) made to answer as for cycle_A (weight 0.1).",
    "g_loss_B": "de_B's update ({B} -> {A} decoder): lambda_cycle x the L1 cycle consistency, + LSGAN "
                "loss against d_A, + lambda_I x L_adv^mix of T_mix with a mixing protocol.",
    "d_loss_A": "d_A's update: LSGAN loss on real {A} against pooled fake_A ({B} translated to look "
                "{A}), plus its auxiliary channel on cycle_A against pooled fake_A.",
    "d_loss_P": "d_P's update: LSGAN loss telling s_B's predictions on fake_B (real) from those on "
                "{B} (fake).",
    "d_loss_P_ll": "d_P_ll's update: the same for s_B_ll's predictions.",
    "dice_fake_B": "Foreground Dice of s_B on this step's fake_B ({A} translated to look {B}) against "
                   "the {A} labels.",
    "mix_adv_S_mix": "L_adv^mix of g_A: the Mixup Inspector's loss on S_mix = M * fake_B + (1 - M) * A "
                     "with answer M; enters g_A's loss x lambda_I.",
    "mix_adv_T_mix": "L_adv^mix of de_B: the Mixup Inspector's loss on T_mix = M * B + (1 - M) * fake_A "
                     "with answer M; enters de_B's loss x lambda_I.",
    "inspector_cls": "L_cls: the Mixup Inspector's loss, mean over {A} images (answer 0), {B} images "
                     "(answer 1) and an unaligned mix M' * B + (1 - M') * A (answer M').",
    "inspector_accuracy_source": "Share of the Mixup Inspector's decisions (per cell for SynthMix, per "
                                 "image for Mixup/CutMix) that are right on {A} images.",
    "inspector_accuracy_target": "Share of the Mixup Inspector's decisions that are right on {B} images.",
    "inspector_accuracy_unaligned_mix": "Share of the Mixup Inspector's decisions that are right on "
                                        "unaligned mixes M' * B + (1 - M') * A.",
    "inspector_accuracy_S_mix": "Share of the Mixup Inspector's decisions that are right on S_mix: "
                                "fake_B cells read as {B}, {A} cells as {A}. g_A wants it high (its "
                                "L_adv^mix asks for the answer M).",
    "inspector_accuracy_T_mix": "Share of the Mixup Inspector's decisions that are right on T_mix: "
                                "{B} cells read as {B}, fake_A cells as {A}. de_B wants it high (its "
                                "L_adv^mix asks for the answer M).",
    "skipped_updates": "Updates of this step skipped because a loss or gradient was not finite; "
                       "--max_nonfinite steps in a row with one stop the run.",
    "loss_scale_overflows": "Updates of this step skipped because the float16-scaled gradients "
                            "overflowed (mixed_float16); that optimizer's loss scale was halved.",
}
# signal/ scalars (adaptation_signal.py): measure -> description; {A}, {B} name the run's
# modalities and {cls} the class of a volume ratio.
SIGNAL_DESCRIPTIONS = {
    "target_foreground_slices": "Share of {B} training slices where s_B predicts any foreground pixel; compare "
                                "signal/source_foreground_slices. Near 0: s_B finds no anatomy on the target.",
    "source_foreground_slices": "Share of {A} training slices with any labelled foreground: what "
                                "signal/target_foreground_slices should come near.",
    "volume_ratio": "Pixels of {B} training slices predicted as {cls}, as a share of all pixels, over the share "
                    "of {A} pixels labelled {cls}: near 1 when the target predictions cover the class as the source "
                    "anatomy does; near 0 when the class vanished on the target.",
    "target_entropy": "Mean over {B} pixels of the entropy of s_B's softmax / log(classes): 0 sure, 1 uniform.",
    "d_P_accuracy": "Share of d_P's patch decisions that are right (output >= 0.5: a prediction on fake_B), on "
                    "s_B's predictions on fake_B and on {B}: 0.5 when d_P cannot tell them apart, 1 when it "
                    "always can.",
}
IMAGE_DESCRIPTIONS = {
    "A": "A: {A} training images (the labelled source domain).",
    "B": "B: {B} training images (the unlabelled target domain).",
    "fake_B": "fake_B = g_A(A): {A} images translated to look {B}.",
    "fake_A": "fake_A = de_B(e_B(B)): {B} images translated to look {A}.",
    "cycle_A": "cycle_A = de_B(e_B(fake_B)): {A} images translated to {B} and back.",
    "cycle_B": "cycle_B = g_A(fake_A): {B} images translated to {A} and back.",
}
# mix/ panels: (mixed image, what white means in the mask).
MIX_PANELS = {
    "S_mix": ("S_mix = M * fake_B + (1 - M) * A", "taken from fake_B ({A} translated to look {B})"),
    "T_mix": ("T_mix = M * B + (1 - M) * fake_A", "taken from B ({B})"),
    "unaligned": ("the unaligned mix M' * B + (1 - M') * A", "taken from B ({B})"),
}


def _safe(name):
    return name.replace(" ", "_")


class RunSummaries:
    """Tag names and descriptions of one run, which name its modalities, and the writing of
    the records that are not per-step scalars."""

    def __init__(self, cfg, class_names):
        self.cfg = cfg
        self.class_names = list(class_names)
        self.A, self.B = cfg.data.source_modality.upper(), cfg.data.target_modality.upper()
        if cfg.kind == "segmenter":
            domain = "A" if cfg.train_domain == "source" else "B"
            self.seg_input_name = f"{domain}_{getattr(self, domain)}"
            self.seg_input = f"{domain} ({getattr(self, domain)} images with their labels)"
        else:
            self.seg_input_name = f"fake_B_{self.A}_to_{self.B}"
            self.seg_input = f"fake_B ({self.A} translated to look {self.B}, with the {self.A} labels)"

    def _text(self, template):
        return template.format(A=self.A, B=self.B, seg_input=self.seg_input)

    # ------------------------------------------------------------------- tags
    def step_scalar(self, metric):
        """(tag, description) of a step metric."""
        if metric == "dice_fake_B":
            tag = f"dice/fake_B_{self.A}_to_{self.B}"
        elif metric.startswith("inspector_accuracy_"):
            tag = f"inspector/accuracy_{metric.removeprefix('inspector_accuracy_')}"
        elif metric == "inspector_cls":
            tag = "synthmix/L_cls"
        elif metric.startswith("mix_adv_"):
            tag = f"synthmix/L_adv_mix_{metric.removeprefix('mix_adv_')}"
        elif metric in ("skipped_updates", "loss_scale_overflows"):
            tag = f"updates/{metric}"
        else:
            tag = f"loss/{metric}"
        return tag, self._text(METRIC_DESCRIPTIONS.get(metric, f"Step metric {metric}."))

    def batch_dice(self, split):
        """(tag, description) of s_B's Dice on a target batch, split "train" or "val"."""
        what = "this step's training batch" if split == "train" else "a validation batch"
        return (f"dice/B_{self.B}_{split}_batch",
                f"Foreground Dice of s_B on {what} of {self.B} images against their labels (monitoring "
                "only: target labels are never trained on, except by the oracle).")

    def signal_scalars(self, adaptation):
        """{(tag, description): value} of a window's adaptation signal, the measures it leaves
        undefined left out."""
        if self.cfg.kind == "segmenter":
            window = "the logged batches alone, s_B's target prediction with e_B in inference mode"
        else:
            window = "mean over the steps since the previous log line, s_B's target predictions from the train step"
        named = [(f"signal/{measure}", measure, "", adaptation[measure])
                 for measure in ("target_foreground_slices", "source_foreground_slices", "target_entropy",
                                 "d_P_accuracy")]
        named += [(f"signal/volume_ratio_{_safe(name)}", "volume_ratio", name, values["volume_ratio"])
                  for name, values in adaptation["classes"].items()]
        return {(tag, f"{SIGNAL_DESCRIPTIONS[measure].format(A=self.A, B=self.B, cls=name)} ({window}; no "
                      "target labels used.)"): value
                for tag, measure, name, value in named if value is not None}

    @staticmethod
    def learning_rate(name):
        return f"lr/{name}", f"Learning rate of the {name} optimizer."

    @staticmethod
    def loss_scale(name):
        return (f"loss_scale/{name}", f"Dynamic loss scale of the {name} optimizer (mixed_float16): halved "
                "after an overflow, doubled after 2000 applied updates in a row.")

    def image(self, name):
        """(tag, description) of a training image: A, B, fake_A, fake_B, cycle_A or cycle_B."""
        domains = {"A": self.A, "B": self.B, "fake_B": f"{self.A}_to_{self.B}", "fake_A": f"{self.B}_to_{self.A}",
                   "cycle_A": self.A, "cycle_B": self.B}
        return f"images/{name}_{domains[name]}", self._text(IMAGE_DESCRIPTIONS[name])

    def mix_panel(self, tag):
        """Description of a mix/ image (mixed image | mask | Inspector's answer)."""
        mixed, white = MIX_PANELS[tag.removeprefix("mix/")]
        return self._text(f"Left: {mixed}. Middle: the mask (white: {white}; black: from the other image; "
                          f"grey: a share of each). Right: the Mixup Inspector's answer (white: judged {{B}}, "
                          "the target; black: judged source).")

    def mask_pair(self, which):
        """(tag, description) of a prediction | truth panel: the seg update's input ("train_input")
        or the target batch ("target")."""
        if which == "train_input":
            return (f"masks/train_input_{self.seg_input_name}",
                    f"Left: s_B's prediction on {self.seg_input}, the segmentation loss's input; right: "
                    f"the true labels; {_MASK_COLOURS}.")
        return (f"masks/B_{self.B}", f"Left: s_B's prediction on {self.B} training images (e_B in inference "
                f"mode); right: their true labels; {_MASK_COLOURS}.")

    # --------------------------------------------------------------- records
    def write_legend(self):
        """legend/classes: the colour of each class in the masks/ panels."""
        tf.summary.image("legend/classes", visualize.legend_image(self.class_names), step=0,
                         description="The class colours of the masks/ panels.")

    def hparam_values(self):
        """The run's settings as HParams values: without paths and cadences, lists as "a,b"."""
        return {key: ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
                for key, value in flat_settings(self.cfg.to_dict()).items() if key not in BOOKKEEPING_SETTINGS}

    def experiment_metrics(self):
        metrics = [hparams_api.Metric("eval/dice_mean", display_name=f"{self.B} test Dice",
                                      description="Mean Dice over classes and test volumes (--mode=evaluate)."),
                   hparams_api.Metric("eval/assd_mean", display_name=f"{self.B} test ASSD",
                                      description="Mean ASSD over classes and test volumes (--mode=evaluate).")]
        # The same list for every kind of run: TensorBoard takes one run's config for a whole logdir.
        metrics += [hparams_api.Metric(self.step_scalar(m)[0]) for m in ("seg_loss", "g_loss_A", "g_loss_B")]
        metrics.append(hparams_api.Metric(self.batch_dice("val")[0]))
        return metrics

    def write_session_start(self, trial_id):
        """The experiment config (domains: integers as integer intervals, booleans as both
        values) and this session's hyperparameters."""
        values = self.hparam_values()
        hparams = [hparams_api.HParam(key, _domain(value)) for key, value in values.items()]
        hparams_api.hparams_config(hparams=hparams, metrics=self.experiment_metrics())
        hparams_api.hparams(values, trial_id=trial_id)

    @staticmethod
    def write_session_end(status, step):
        """status: a key of SESSION_STATUS."""
        record = hparams_summary.session_end_pb(SESSION_STATUS[status])
        tf.summary.experimental.write_raw_pb(record.SerializeToString(), step=step)


def _domain(value):
    if isinstance(value, bool):
        return hparams_api.Discrete([False, True])
    if isinstance(value, int):
        return hparams_api.IntInterval(min(value, 0), max(value, 2 ** 31 - 1))
    return None
