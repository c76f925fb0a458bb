"""Evaluates a trained run on its target test volumes: restore e_B + s_B, predict, score, report,
and put the scores into the run's TensorBoard events (eval/, the HParams metrics)."""
import tensorflow as tf

from sifa_synthmix.data import inputs, layout as layout_lib
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.evaluation import result_files
from sifa_synthmix.evaluation.methods import method_name
from sifa_synthmix.evaluation.metrics import AVERAGE
from sifa_synthmix.evaluation.report import affine_by_volume, evaluate_volumes, missed_by_volume, spacing_by_volume
from sifa_synthmix.prediction.inference import inference_precision, restore_target_segmenter, run_data
from sifa_synthmix.runs.run_folder import (EVAL_DIR, EVAL_LOCK_FILE, TENSORBOARD_DIR, check_data_fingerprint,
                                           load_run_config, require_run_folder)
from sifa_synthmix.runs.run_lock import RunLock


def evaluate_run(run_dir, checkpoint=None, flip=None, assd_unit="voxel", batch_size=16, write_images=False,
                 log=print):
    """Writes RUN/eval (metrics.json/csv, table.md, predictions/*.nii.gz, colour tables; with
    write_images the test images and ground truth too) and the eval/ scalars into RUN/tb at the
    evaluated step; returns the record."""
    run_dir = require_run_folder(run_dir)
    cfg = load_run_config(run_dir)
    recorded = run_data(run_dir, cfg)  # the run folder's own contradictions first
    data = layout_lib.PreparedLayout(cfg.data.data_dir)
    modality = cfg.data.target_modality
    if not data.test_volumes(modality):
        raise DataError(f"{data.test_dir(modality)}: no test volumes (*.npz) to evaluate")
    info = data.read_info() if data.info_path.is_file() else {}
    volumes = inputs.labelled_test_volumes(data.root, info, modality, log)
    check_data_fingerprint(run_dir, cfg, inputs.data_facts(cfg.data), "evaluate", log)
    inputs.check_classes(cfg.data.data_dir, info, cfg.model.num_classes)
    class_names = recorded.class_names
    precision = inference_precision(cfg.runtime.precision)
    predict_logits, restored = restore_target_segmenter(run_dir, cfg, checkpoint, log, precision)
    step = restored.step
    log(f"evaluating {restored.path} (step {step}) on {len(volumes)} {modality} test volumes in {precision}")
    # Written beside RUN/eval and swapped in whole: a failed or killed evaluation leaves the previous
    # one; under a lock of its own, so that a second evaluation of the run cannot clear this one's.
    with (RunLock(run_dir, log, EVAL_LOCK_FILE, "evaluated"),
          result_files.replaced_folder(run_dir / EVAL_DIR) as eval_dir):
        record = evaluate_volumes(
            predict_logits, volumes, recorded.target_range, class_names, eval_dir,
            batch_size=batch_size, flip=bool(info.get("flip_test_volumes", False)) if flip is None else flip,
            spacing=spacing_by_volume(info, modality) or None, spacing_unit=assd_unit,
            method=method_name(cfg.to_dict()), affines=affine_by_volume(info, modality),
            missed=missed_by_volume(info, modality), write_images=write_images,
            checkpoint=restored.path, step=step, image_size=cfg.model.image_size)
    writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD_DIR))
    with writer.as_default():
        write_eval_scalars(record, step, cfg.data.target_modality)
    writer.close()
    return record


def write_eval_scalars(record, step, target_modality):
    """eval/ scalars of an evaluation record (metrics.json), at the evaluated step: the HParams
    metrics eval/dice_mean and eval/assd_mean among them (training/tensorboard_summaries.py)."""
    unit, volumes, modality = record["assd_unit"], len(record["volumes"]), target_modality.upper()
    for key, values in record["summary"].items():
        name = "mean" if key == AVERAGE else key.replace(" ", "_")
        what = "the mean over classes" if key == AVERAGE else key
        tf.summary.scalar(f"eval/dice_{name}", values["dice_mean"], step=step,
                          description=f"{modality} test Dice of {what}, mean over {volumes} volumes.")
        tf.summary.scalar(f"eval/assd_{name}", values["assd_mean"], step=step,
                          description=f"{modality} test ASSD ({unit}) of {what}, mean over the volumes "
                                      "where it is defined.")
