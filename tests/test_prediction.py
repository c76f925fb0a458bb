"""--mode=predict on new scans (labels on each scan's own grid, NIfTI and DICOM alike, the same
labels as --mode=evaluate on a prepared test volume), and evaluation with only the run folder
and the test volumes."""
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf
from scipy import ndimage

from conftest import REPO, main_exit_code
from data_prep import phantom, phantom_anatomy
from sifa_synthmix.data import inputs
from sifa_synthmix.data.preprocessing import clip_and_standardise
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.models.networks import set_precision
from sifa_synthmix.prediction import label_files
from sifa_synthmix.prediction.inference import inference_precision, predict_volume, restore_target_segmenter, run_data
from sifa_synthmix.prediction.scan_prediction import on_scan_grid
from sifa_synthmix.prediction.scan_recipe import Recipe, recipe_for, scan_framing
from sifa_synthmix.runs.run_folder import load_run_config

TINY_FLAGS = f"--flagfile={REPO / 'configs' / 'tiny_cpu.flags'}"
SIZE, DEPTH = 32, phantom.default_depth(32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_phantom):
    """A tiny e_B + s_B trained on the tiny phantom's CT labels and evaluated: its folder. A few
    dozen steps at a high rate, seeded and op-deterministic, so that its predictions hold more
    than background (MYO and LAC: a run without --deterministic may end with background alone)."""
    run = tmp_path_factory.mktemp("predict") / "run"
    assert main_exit_code(TINY_FLAGS, f"--data_dir={tiny_phantom}", f"--output_dir={run}", "--model=segmenter",
                          "--train_domain=target", "--max_steps=60", "--base_lr=3e-3", "--save_every=60",
                          "--log_every=30", "--image_every=1000", "--deterministic") == 0
    assert main_exit_code("--mode=evaluate", f"--output_dir={run}") == 0
    for name in ("ct_test_00", "ct_test_01"):
        assert len(np.unique(evaluated_labels(run, name))) > 1  # else the comparisons below say little
    return run


def raw_ct_test_subject(index):
    """The phantom's CT test subject `index` as a scanner would give it (before clip and z-score)
    and the affine of its voxels; the prepared test volume is this, preprocessed."""
    rng = phantom_anatomy.subject_rng(0, "ct", "test", index)
    tissue, _ = phantom_anatomy.draw_anatomy(rng, phantom.voxel_grid(SIZE, DEPTH))
    return phantom.RENDERERS["ct"](rng, tissue), phantom.volume_affine(SIZE, DEPTH)  # float64, as rendered


def write_nifti(path, array, affine):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def predict(*argv):
    return main_exit_code("--mode=predict", *argv)


def evaluated_labels(run, name):
    return label_files.read_label_volume(run / "eval" / "predictions" / f"{name}.nii.gz")


def test_a_raw_test_scan_predicts_what_evaluate_predicted(trained, tiny_phantom, tmp_path):
    image, affine = raw_ct_test_subject(0)
    with np.load(tiny_phantom / "ct" / "test" / "ct_test_00.npz") as arrays:
        np.testing.assert_array_equal(clip_and_standardise(image), arrays["arr_0"])  # the same volume
    (tmp_path / "scans").mkdir()
    scan = write_nifti(tmp_path / "scans" / "case.nii.gz", image, affine)
    out = tmp_path / "out"
    assert predict(f"--output_dir={trained}", f"--predict_input={scan.parent}", f"--predictions_dir={out}") == 0
    written = nib.load(str(out / "case.nii.gz"))
    np.testing.assert_array_equal(written.affine, nib.load(str(scan)).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), evaluated_labels(trained, "ct_test_00"))
    assert {"label_colours_itksnap.txt", "label_colours_slicer.ctbl"} <= {p.name for p in out.iterdir()}
    record = json.loads((out / "prediction.json").read_text())
    assert record["run"] == str(trained) and record["checkpoint"] == str(trained / "checkpoints" / "ckpt-60")
    assert record["step"] == 60 and record["precision"] == "float32" and record["class_names"][1] == "MYO"
    assert {key: record["recipe"][key] for key in ("orientation", "spacing_mm", "image_size", "crop")} == {
        "orientation": "PLS", "spacing_mm": None, "image_size": 32, "crop": "auto"}
    assert record["written"] == {"case.nii.gz": str(scan)} and record["failed"] == []
    assert isinstance(record["command"], list)


def reoriented(image, affine):
    """The same scan stored in another voxel order: axes permuted and flipped, the affine to match."""
    transform = np.array([[1, -1], [2, 1], [0, -1]])  # axis 0 -> new axis 1 flipped, 1 -> 2, 2 -> 0 flipped
    return (nib.orientations.apply_orientation(image, transform),
            affine @ nib.orientations.inv_ornt_aff(transform, image.shape))


def test_a_reoriented_scan_gets_its_own_grid_and_the_same_labels(trained, tmp_path):
    image, affine = raw_ct_test_subject(1)
    moved, moved_affine = reoriented(image, affine)
    assert moved.shape != image.shape and not np.allclose(moved_affine, affine)
    scan = write_nifti(tmp_path / "moved.nii", moved, moved_affine)
    out = tmp_path / "out"
    assert predict(f"--output_dir={trained}", f"--predict_input={scan}", f"--predictions_dir={out}",
                   "--save_probabilities") == 0
    written = nib.load(str(out / "moved.nii.gz"))
    assert written.shape == moved.shape
    np.testing.assert_allclose(written.affine, nib.load(str(scan)).affine, rtol=0, atol=1e-9)
    back = nib.orientations.apply_orientation(
        np.asarray(written.dataobj),
        nib.orientations.ornt_transform(nib.io_orientation(moved_affine), nib.io_orientation(affine)))
    np.testing.assert_array_equal(back, evaluated_labels(trained, "ct_test_01"))
    with np.load(out / "moved.npz") as saved:
        probabilities = saved["probabilities"]
    assert probabilities.shape == (5, *moved.shape)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), np.asarray(written.dataobj))


def test_a_scan_at_another_spacing_is_resampled_and_written_back_on_its_grid(trained, tmp_path):
    image, affine = raw_ct_test_subject(0)
    zoom = 1.6  # 8.125 mm pixels -> about 5.1 mm, and one more row than column
    fine = ndimage.zoom(image, (zoom, zoom * 1.05, 1), order=1)
    fine_affine = affine @ np.diag([(SIZE - 1) / (fine.shape[0] - 1), (SIZE - 1) / (fine.shape[1] - 1), 1, 1])
    scan = write_nifti(tmp_path / "fine.nii.gz", fine, fine_affine)
    out = tmp_path / "out"
    assert predict(f"--output_dir={trained}", f"--predict_input={scan}", f"--predictions_dir={out}",
                   f"--predict_spacing={phantom.voxel_spacing_mm(SIZE)[0]}") == 0
    written = nib.load(str(out / "fine.nii.gz"))
    assert written.shape == fine.shape
    np.testing.assert_allclose(written.affine, nib.load(str(scan)).affine, rtol=0, atol=1e-9)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) <= set(range(5))
    # Sampled back at the centres of the run's own voxels, the labels are mostly evaluate's: the
    # scan was interpolated twice (to the fine grid here, back to 8.125 mm by the recipe), and the
    # probabilities once more. Foreground voxels of either agreed at 0.93 when this was written
    # (oneDNN on an AVX-512 CPU); on an AVX2 CPU, whose kernels train the tiny run to other
    # weights, at 0.90 (Eigen) and 0.84 (oneDNN), where the same labels mirrored left-right, as a
    # grid mistake would put them, agreed at 0.67 and 0.56.
    evaluated = evaluated_labels(trained, "ct_test_00")
    centres = [np.rint(np.arange(SIZE) * (n - 1) / (SIZE - 1)).astype(int) for n in fine.shape[:2]]
    sampled = labels[np.ix_(centres[0], centres[1], np.arange(DEPTH))]

    def agreement(candidate):
        foreground = (candidate > 0) | (evaluated > 0)
        assert foreground.sum() > 100
        return np.mean(candidate[foreground] == evaluated[foreground])

    found, mirrored = agreement(sampled), agreement(sampled[::-1])
    assert found > 0.8 and found > mirrored + 0.15, (found, mirrored)


def write_dicom_series(folder, array, affine):
    """array (x, y, z int16) as one DICOM file per slice, with the geometry of `affine` (RAS+)."""
    folder.mkdir(parents=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection(direction.ravel().tolist())
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    orientation = "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1]))
    for z in range(array.shape[2]):
        piece = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2"), ("0020|0013", str(z + 1)),
                           ("0020|0032", "\\".join(f"{v:.4f}" for v in position)), ("0020|0037", orientation),
                           ("0018|0050", f"{spacing[2]:.4f}"), ("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{z}")):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(piece)
    return folder


def test_a_dicom_series_predicts_the_labels_of_the_same_nifti(trained, tmp_path):
    image, affine = raw_ct_test_subject(1)
    hounsfield = np.rint(image).astype(np.int16)
    (tmp_path / "nifti").mkdir()
    nifti = write_nifti(tmp_path / "nifti" / "case.nii.gz", hounsfield, affine)
    dicom = write_dicom_series(tmp_path / "dicom" / "case_dcm", hounsfield, affine)
    out = tmp_path / "out"
    assert predict(f"--output_dir={trained}", f"--predict_input={nifti},{dicom}", f"--predictions_dir={out}") == 0
    from_nifti, from_dicom = (nib.as_closest_canonical(nib.load(str(out / f"{name}.nii.gz")))
                              for name in ("case", "case_dcm"))
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(from_dicom.dataobj), np.asarray(from_nifti.dataobj))


def test_a_folder_of_scans_and_dicom_series_folders_is_predicted_whole(trained, tmp_path, capfd):
    """As the converters take them: scan files and DICOM series folders side by side, or series
    folders alone (without ITK's warnings about folders that hold no series); other entries are
    named in a note, and a single DICOM file is refused as one slice of its series."""
    image, affine = raw_ct_test_subject(1)
    hounsfield = np.rint(image).astype(np.int16)
    mixed, series_only = tmp_path / "mixed", tmp_path / "series"
    mixed.mkdir()
    write_nifti(mixed / "case.nii.gz", hounsfield, affine)
    write_dicom_series(mixed / "series_a", hounsfield, affine)
    (mixed / "notes.txt").write_text("not a scan")
    for name in ("series_b", "series_c"):
        write_dicom_series(series_only / name, hounsfield, affine)
    capfd.readouterr()
    for folder, names in ((mixed, ["case", "series_a"]), (series_only, ["series_b", "series_c"])):
        out = tmp_path / f"out_{folder.name}"
        assert predict(f"--output_dir={trained}", f"--predict_input={folder}", f"--predictions_dir={out}") == 0
        assert sorted(json.loads((out / "prediction.json").read_text())["written"]) == [
            f"{name}.nii.gz" for name in names]
    captured = capfd.readouterr()
    assert f"note: --predict_input={mixed}: ignored 1 entry that are neither scans nor DICOM series folders: " \
           "notes.txt" in captured.out
    assert "WARNING" not in captured.err and "No Series" not in captured.err, captured.err
    one_file = series_only / "series_b" / "slice000.dcm"
    out = tmp_path / "one"
    assert predict(f"--output_dir={trained}", f"--predict_input={one_file}", f"--predictions_dir={out}") == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(one_file) in errors[0] and "pass the folder that holds the series" in errors[0]


def test_a_bad_scan_is_one_error_line_and_the_others_are_written(trained, tmp_path, capsys):
    image, affine = raw_ct_test_subject(0)
    folder = tmp_path / "scans"
    folder.mkdir()
    write_nifti(folder / "good.nii.gz", image, affine)
    (folder / "broken.nii.gz").write_bytes(b"not a scan")
    out = tmp_path / "out"
    capsys.readouterr()
    code = predict(f"--output_dir={trained}", f"--predict_input={folder}", f"--predictions_dir={out}")
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and str(folder / "broken.nii.gz") in errors[0], captured.err
    assert (out / "good.nii.gz").is_file() and not (out / "broken.nii.gz").exists()
    progress = [line for line in captured.out.splitlines() if "good.nii.gz:" in line]
    assert len(progress) == 1 and "slices/s" in progress[0], captured.out


def test_a_scan_whose_files_do_not_fit_on_the_disk_leaves_neither(trained, tmp_path, capsys, monkeypatch):
    image, affine = raw_ct_test_subject(0)
    scan = write_nifti(tmp_path / "case.nii.gz", image, affine)
    out = tmp_path / "out"
    write_bytes = pathlib.Path.write_bytes

    def full_disk(path, data):
        if path.name.endswith(".npz.tmp"):  # the label map fitted, its probabilities do not
            write_bytes(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_disk)
    capsys.readouterr()
    code = predict(f"--output_dir={trained}", f"--predict_input={scan}", f"--predictions_dir={out}",
                   "--save_probabilities")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and str(scan) in errors[0] and "No space left" in errors[0], err
    assert sorted(p.name for p in out.iterdir()) == ["label_colours_itksnap.txt", "label_colours_slicer.ctbl",
                                                     "prediction.json"]
    record = json.loads((out / "prediction.json").read_text())
    assert record["written"] == {} and record["failed"] == [str(scan)]


@pytest.mark.parametrize("argv, parts", [
    (("--predict_input=/nonexistent/scan.nii.gz",), ("/nonexistent/scan.nii.gz", "does not exist")),
    (("--predict_input=/nonexistent/*.nii.gz",), ("no file or folder matches",)),
    ((), ("--predict_input",)),
], ids=["missing file", "empty glob", "no input"])
def test_bad_prediction_input_is_one_error_line_and_writes_nothing(trained, tmp_path, capsys, argv, parts):
    out = tmp_path / "out"
    code = predict(f"--output_dir={trained}", f"--predictions_dir={out}", *argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert all(part in errors[0] for part in parts), errors[0]
    assert not out.exists()


def test_resampled_probabilities_come_back_on_the_scan_grid():
    """Blocks of classes on a 16 x 16 x 2 prepared grid, read back on a scan grid of half the
    spacing and shifted by half a prepared voxel: away from the block edges, the block's class."""
    blocks = np.kron(np.arange(4).reshape(2, 2), np.ones((8, 8), int))[..., None].repeat(2, axis=2)
    logits = 10.0 * np.eye(5)[blocks]
    prepared_affine = np.diag([2.0, 2.0, 3.0, 1.0])
    scan_affine = np.diag([1.0, 1.0, 3.0, 1.0])
    scan_affine[:2, 3] = 0.5
    labels, probabilities = on_scan_grid(logits, prepared_affine, scan_affine, (32, 32, 2), True)
    assert labels.shape == (32, 32, 2) and probabilities.shape == (32, 32, 2, 5)
    world = np.arange(32) + 0.5  # scan voxel centres, mm; prepared block edges at 15 mm
    inner = np.abs(world - 15) > 1.5
    expected = np.add.outer(2 * (world >= 15), world >= 15)[..., None].repeat(2, axis=2)
    keep = np.ix_(inner & (world < 30), inner & (world < 30), [0, 1])
    np.testing.assert_array_equal(labels[keep], expected[keep])
    assert (labels[31] == 0).all()  # past the prepared grid's last voxel centre (30 mm): background


def test_evaluate_needs_no_training_records(trained, tiny_phantom, tmp_path, capsys):
    """The run's data with only dataset.json and the test volumes: the same predictions."""
    data = tmp_path / "data"
    shutil.copytree(tiny_phantom / "ct" / "test", data / "ct" / "test")
    shutil.copy(tiny_phantom / "dataset.json", data / "dataset.json")
    run = shutil.copytree(trained, tmp_path / "run")
    shutil.rmtree(run / "eval")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    config["data"]["data_dir"] = str(data)
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert main_exit_code("--mode=evaluate", f"--output_dir={run}") == 0, capsys.readouterr().err
    for name in ("ct_test_00", "ct_test_01"):
        np.testing.assert_array_equal(evaluated_labels(run, name), evaluated_labels(trained, name))


LOAD_EXPORT = """
import json, sys
import numpy as np
import tensorflow as tf

folder, slices_path, out_path = sys.argv[1:]
model = tf.saved_model.load(folder)
low, high = json.load(open(folder + "/sifa_export.json"))["intensity_range"]
slices = np.load(slices_path)
images = 2 * (slices - low) / (high - low) - 1
scaled = model.signatures["serving_default"](images=tf.constant(images, tf.float32))
raw = model.signatures["segment_intensities"](slices=tf.constant(slices, tf.float32))
np.savez(out_path, labels=scaled["labels"].numpy(), raw_labels=raw["labels"].numpy(),
         probabilities=scaled["probabilities"].numpy())
ours = [m for m in sys.modules if m.split(".")[0] in ("sifa_synthmix", "data_prep", "main")]
assert not ours, ours
"""


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained run exported by main.py from another working folder, with a relative --output_dir."""
    export = tmp_path_factory.mktemp("export") / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(trained.parent)
        assert main_exit_code("--mode=export", f"--output_dir={trained.name}", f"--export_dir={export}") == 0
    return export


def test_the_exported_model_predicts_alone_what_predict_wrote(exported, trained, tiny_phantom, tmp_path):
    assert json.loads((exported / "sifa_export.json").read_text())["class_names"][1] == "MYO"
    with np.load(tiny_phantom / "ct" / "test" / "ct_test_00.npz") as arrays:
        slices = np.moveaxis(arrays["arr_0"], 2, 0)[..., None]  # the prepared volume's slices, batch first
    np.save(tmp_path / "slices.npy", slices)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", LOAD_EXPORT, str(exported), str(tmp_path / "slices.npy"),
                             str(tmp_path / "out.npz")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "out.npz") as out:
        labels, raw_labels, probabilities = out["labels"], out["raw_labels"], out["probabilities"]
    expected = np.moveaxis(evaluated_labels(trained, "ct_test_00"), 2, 0)  # = predict's (test above)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(raw_labels, expected)
    assert probabilities.dtype == np.float32 and probabilities.shape == (*expected.shape, 5)
    np.testing.assert_array_equal(probabilities.argmax(axis=-1), expected)


def test_the_exported_model_refuses_another_slice_size_channel_count_or_nonfinite_values(exported):
    model = tf.saved_model.load(str(exported))
    cases = [((2, 16, 16, 1), 0.0, r"\[2,16,16,1\] is not compatible with expected shape \[\?,32,32,1\]"),
             ((2, 64, 64, 1), 0.0, r"\[2,64,64,1\] is not compatible"),
             ((2, 32, 32, 3), 0.0, r"\[2,32,32,3\] is not compatible"),
             ((2, 32, 32, 1), np.nan, "the slices hold NaN or infinite values"),
             ((2, 32, 32, 1), np.inf, "the slices hold NaN or infinite values")]
    for shape, value, message in cases:
        for name, argument in (("serving_default", "images"), ("segment_intensities", "slices")):
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                model.signatures[name](**{argument: tf.fill(shape, np.float32(value))})
    assert model.signatures["serving_default"](images=tf.zeros((2, 32, 32, 1)))["labels"].shape == (2, 32, 32)


def test_the_export_record_resolves_from_anywhere_and_says_what_a_new_scan_goes_through(exported, trained):
    record = json.loads((exported / "sifa_export.json").read_text())
    checkpoint = pathlib.Path(record["checkpoint"])
    assert checkpoint.is_absolute() and checkpoint.with_suffix(".index").is_file()
    assert checkpoint.parent.parent == trained.resolve()
    assert record["input"].startswith("[N, 32, 32, 1] float32")
    low, high = record["intensity_range"]
    assert record["to_model_range"].startswith(f"x' = 2 * (x - ({low})) / ({high} - ({low})) - 1")
    words = record["new_scans"]
    assert words["orientation"] == "PLS (axial slices): rows anterior -> posterior, columns right -> left, " \
                                   "slices feet -> head"
    assert words["crop"].startswith("auto: a 32 x 32 window centred on the centroid of the scan's body")
    assert words["intensities"].startswith("values above the crop's 98th percentile clipped to it")


def test_export_refuses_a_folder_with_files_and_keeps_them(trained, tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    (export / "notes.txt").write_text("mine")
    code = main_exit_code("--mode=export", f"--output_dir={trained}", f"--export_dir={export}")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and f"--export_dir={export}" in errors[0], err
    assert [p.name for p in export.iterdir()] == ["notes.txt"]


def test_the_recorded_recipe_and_its_overrides():
    recorded = {"orientation": "ILP", "slice_axis": "coronal", "spacing_mm": 1.5, "image_size": 256, "crop": "labels",
                "clip_percent": 2.0, "normalisation": "zscore"}
    assert recipe_for(recorded, 32) == Recipe("ILP", 1.5, 32, "labels", 2.0)
    assert recipe_for(None, 32) == Recipe("PLS", None, 32, "auto", 2.0)  # the converters' defaults
    assert recipe_for(recorded, 32, slice_axis="axial", spacing="native") == Recipe("PLS", None, 32, "labels", 2.0)
    assert recipe_for(None, 32, slice_axis="sagittal", spacing="0.7") == Recipe("IPL", 0.7, 32, "auto", 2.0)
    with pytest.raises(DataError, match="'minmax'"):
        recipe_for({**recorded, "normalisation": "minmax"}, 32)


def test_the_fingerprint_keeps_the_recipe_that_prediction_reads(trained, tmp_path):
    recipe = {"orientation": "ILP", "slice_axis": "coronal", "spacing_mm": None, "image_size": 32, "crop": "centre",
              "clip_percent": 2.0, "normalisation": "zscore"}
    info = {"class_names": ["background", "a", "b", "c", "d"], "image_size": 32, "preprocessing": recipe}
    resolved = inputs.ResolvedData([], [], [], (0.0, 1.0), (-1.0, 2.0), info)
    cfg = load_run_config(trained)
    fingerprint = inputs.data_fingerprint(cfg.data, resolved)
    assert fingerprint["preprocessing"] == recipe and fingerprint["ct range (target)"] == [-1.0, 2.0]
    run = shutil.copytree(trained, tmp_path / "run")
    (run / "data_fingerprint.json").write_text(json.dumps(fingerprint), encoding="utf-8")
    recorded = run_data(run, cfg)
    assert recorded.recipe == recipe and recorded.target_range == (-1.0, 2.0) and recorded.class_names[1] == "a"
    assert run_data(run, cfg, target_range=(-3.0, 4.0)).target_range == (-3.0, 4.0)  # --target_range wins


@pytest.mark.parametrize("shape, blob, start", [
    ((48, 40, 3), (slice(0, 6), slice(34, 40)), (0, 8)),  # body in a corner: the window stays inside
    ((48, 40, 3), (slice(20, 27), slice(16, 23)), (7, 3)),  # around the body's centroid (23, 19)
    ((20, 24, 3), (slice(0, 4), slice(0, 4)), (-6, -4)),  # narrower than the window: centred on it
])
def test_a_new_scan_is_cropped_around_its_body_inside_the_scan(shape, blob, start):
    image = -1000.0 + np.random.default_rng(0).uniform(0, 10, shape)  # air, with a scanner's noise
    image[blob] = 50.0
    assert scan_framing(image, Recipe("PLS", None, 32, "auto", 2.0), "scan").start == start
    centred = scan_framing(image, Recipe("PLS", None, 32, "centre", 2.0), "scan").start
    assert centred == tuple((n - 32) // 2 if n < 32 else int(np.floor((n - 1) / 2 - 16 + 0.5)) for n in shape[:2])


def test_predictions_that_would_replace_their_scan_are_refused(trained, tmp_path, capsys):
    image, affine = raw_ct_test_subject(0)
    scan = write_nifti(tmp_path / "case.nii.gz", image, affine)
    before = scan.read_bytes()
    code = predict(f"--output_dir={trained}", f"--predict_input={tmp_path}", f"--predictions_dir={tmp_path}")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "would replace the scan" in errors[0] and str(scan) in errors[0], err
    assert scan.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


@pytest.mark.parametrize("precision, has_gpu, bfloat16, expected", [
    ("float32", True, ["avx512_bf16"], "float32"),
    ("mixed_bfloat16", False, ["avx512_bf16"], "mixed_bfloat16"),
    ("mixed_bfloat16", False, [], "float32"),  # emulated bfloat16 is slower
    ("mixed_float16", False, ["amx_bf16"], "float32"),  # a CPU emulates float16
    ("mixed_float16", True, [], "mixed_float16"),
])
def test_inference_runs_in_the_runs_precision_where_it_is_native(precision, has_gpu, bfloat16, expected):
    assert inference_precision(precision, has_gpu, bfloat16) == expected


def test_a_bfloat16_segmenter_gives_float32_logits_close_to_float32s(trained):
    """The same checkpoint restored for inference in float32 and in mixed_bfloat16: float32 logits
    both times, the same labels on nearly every pixel of a test volume."""
    cfg = load_run_config(trained)
    data = run_data(trained, cfg)
    volume = np.load(pathlib.Path(cfg.data.data_dir) / "ct" / "test" / "ct_test_00.npz")["arr_0"]
    labels = {}
    try:
        for precision in ("float32", "mixed_bfloat16"):
            predict_logits, _ = restore_target_segmenter(trained, cfg, precision=precision)
            assert predict_logits(np.zeros((2, SIZE, SIZE, 1), np.float32)).dtype == tf.float32
            labels[precision] = predict_volume(predict_logits, volume, data.target_range, batch_size=8)
    finally:
        set_precision("float32")
    assert np.mean(labels["float32"] == labels["mixed_bfloat16"]) > 0.99
    assert len(np.unique(labels["mixed_bfloat16"])) > 1
