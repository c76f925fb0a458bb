"""The raw-data converters (MMWHS, BTCV + CHAOS) on tiny data sets built in the release layouts."""
import json
import os
import pathlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf
from PIL import Image

from data_prep import abdominal, augmentation, mmwhs
from sifa_synthmix.data import layout, reader, records, volumes
from sifa_synthmix.evaluation.report import affine_by_volume, evaluate_volumes

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32  # --image_size; every labelled structure below fits in 16 x 16 x 16 voxels
SHAPE = (40, 40, 30)
MMWHS_VALUES = (205, 420, 500, 550, 600, 820, 850)
MMWHS_CLASSES = {205: 1, 420: 2, 500: 3, 820: 4}
BTCV_CLASSES = {6: 1, 2: 2, 3: 3, 1: 4}
CHAOS_CLASSES = {63: 1, 126: 2, 189: 3, 252: 4}
SPLIT_OPTIONS = ["--ct_test_ids", "1003", "--mr_test_ids", "1002", "--ct_val_count", "1",
                 "--mr_val_count", "1"]
SPLITS = {"ct": {1001: "train", 1002: "val", 1003: "test"}, "mr": {1001: "train", 1002: "test", 1003: "val"}}


def rotation_about_z(degrees):
    angle = np.radians(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    return rotation


# Voxel -> RAS mm: permuted, flipped, anisotropic axes, and (CT) rotated by 5 degrees.
AFFINES = {
    "ct": rotation_about_z(5) @ np.array([[0, 0.8, 0, -10], [0, 0, -1.2, 20], [-1.5, 0, 0, 30], [0, 0, 0, 1]]),
    "mr": np.array([[0, 0, -0.9, 5], [1.0, 0, 0, -7], [0, 2.0, 0, 3], [0, 0, 0, 1]]),
}


def blob_labels(rng, values, shape=SHAPE):
    """A label volume with one 5-voxel cube per value, inside the central 16-voxel box."""
    label = np.zeros(shape, np.int16)
    low = [n // 2 - 8 for n in shape]
    for value in values:
        corner = [lo + rng.integers(0, 12) for lo in low]
        label[tuple(slice(c, c + 5) for c in corner)] = value
    return label


def image_for(rng, label):
    return (rng.normal(100, 20, label.shape) + label * 0.5).astype(np.float32)


def counts_by_class(raw, classes):
    return {cls: int(np.count_nonzero(raw == value)) for value, cls in classes.items()}


def class_counts(labels):
    return {cls: int(np.count_nonzero(labels == cls)) for cls in range(1, 5)}


def save_nifti(path, array, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def write_mmwhs(root, ids=(1001, 1002, 1003)):
    """RAW/{ct,mr}_train/{m}_train_{id}_{image,label}.nii.gz; returns {(modality, id): raw labels}."""
    raw = {}
    for modality in layout.MODALITIES:
        for volume_id in ids:
            rng = np.random.default_rng([volume_id, len(modality), ord(modality[0])])
            label = blob_labels(rng, MMWHS_VALUES)
            stem = root / f"{modality}_train" / f"{modality}_train_{volume_id}"
            save_nifti(pathlib.Path(f"{stem}_image.nii.gz"), image_for(rng, label), AFFINES[modality])
            save_nifti(pathlib.Path(f"{stem}_label.nii.gz"), label, AFFINES[modality])
            raw[(modality, volume_id)] = label
    return raw


def write_dicom_series(folder, volume, spacing):
    """One DICOM file per slice of a (slice, row, column) int16 array, named like CHAOS's."""
    folder.mkdir(parents=True)
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1"  # one series per folder
    for index in range(volume.shape[0]):
        slice_image = image[:, :, index]
        position = "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, index))))
        for tag, value in (("0020|000e", series_uid), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", position), ("0020|0013", str(index + 1)), ("0008|0060", "MR")):
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IMG-0002-{index + 1:05d}.dcm"))
        writer.Execute(slice_image)


def write_chaos(root, ids=(1, 2, 3)):
    """C/Train_Sets/MR/<id>/T2SPIR/{DICOM_anon,Ground}; returns {id: (slice, row, column) masks}."""
    masks = {}
    for volume_id in ids:
        rng = np.random.default_rng(volume_id)
        mask = blob_labels(rng, CHAOS_CLASSES, shape=(20, 36, 40)).astype(np.uint8)
        subject = root / "Train_Sets" / "MR" / str(volume_id) / "T2SPIR"
        write_dicom_series(subject / "DICOM_anon", image_for(rng, mask).astype(np.int16), (1.4, 1.4, 6.0))
        (subject / "Ground").mkdir()
        for index, mask_slice in enumerate(mask):
            Image.fromarray(mask_slice).save(subject / "Ground" / f"IMG-0002-{index + 1:05d}.png")
        masks[volume_id] = mask
    return masks


def write_btcv(root, ids=(1, 2, 3)):
    """B/img/imgXXXX.nii.gz and B/label/labelXXXX.nii.gz with BTCV's 13 organ values."""
    raw = {}
    for volume_id in ids:
        rng = np.random.default_rng(100 + volume_id)
        label = blob_labels(rng, [7, 6, 2, 3, 1, 11])
        save_nifti(root / "img" / f"img{volume_id:04d}.nii.gz", image_for(rng, label), AFFINES["ct"])
        save_nifti(root / "label" / f"label{volume_id:04d}.nii.gz", label, AFFINES["ct"])
        raw[volume_id] = label
    return raw


@pytest.fixture(scope="module")
def cardiac(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmwhs")
    raw = write_mmwhs(root / "raw")
    report = mmwhs.main(["--raw_dir", str(root / "raw"), "--output_dir", str(root / "out"),
                         "--image_size", str(SIZE), "--augment", "1", "--workers", "2", *SPLIT_OPTIONS])
    return raw, root / "out", report


@pytest.fixture(scope="module")
def aos(tmp_path_factory):
    root = tmp_path_factory.mktemp("aos")
    btcv, chaos = write_btcv(root / "btcv"), write_chaos(root / "chaos")
    abdominal.main(["--btcv_dir", str(root / "btcv"), "--chaos_dir", str(root / "chaos"),
                    "--output_dir", str(root / "out"), "--image_size", str(SIZE),
                    "--ct_test_ids", "1", "--mr_test_ids", "2", "--ct_val_count", "1", "--mr_val_count", "1"])
    return btcv, chaos, root / "out"


def record_pairs(path):
    return [records.decode_example_numpy(r) for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def record_class_counts(path):
    """Voxels per class over the records' middle label slices (what the network trains on)."""
    return class_counts(np.stack([label[:, :, 1] for _, label in record_pairs(path)]))


@pytest.mark.parametrize("modality", layout.MODALITIES)
def test_cardiac_class_counts_survive_mapping_crop_and_slicing(cardiac, modality):
    raw, out, _ = cardiac
    for volume_id, split in SPLITS[modality].items():
        expected = counts_by_class(raw[(modality, volume_id)], MMWHS_CLASSES)
        name = f"{modality}_{volume_id}"
        if split == "test":
            labels = np.load(out / modality / "test" / f"{name}.npz")["arr_1"]
            assert labels.shape[:2] == (SIZE, SIZE)
            assert class_counts(labels) == expected
        else:
            assert record_class_counts(out / modality / split / f"{name}.tfrecords") == expected


def test_report_lists_splits_counts_stats_and_no_voxel_outside_the_crop(cardiac):
    _, out, report = cardiac
    assert json.loads((out / "prep_report.json").read_text(encoding="utf-8")) == report
    assert report["splits"]["ct_train"]["volumes"] == 1 and report["splits"]["ct_train"]["augmented_copies"] == 1
    assert report["splits"]["mr_test"]["volumes"] == 1 and report["splits"]["mr_val"]["augmented_copies"] == 0
    assert all(entry["voxels_outside_crop"] == 0 for entry in report["volumes"])
    assert report["stats"] == json.loads((out / "stats.json").read_text(encoding="utf-8"))
    info = layout.PreparedLayout(out).read_info()
    for split in ("train", "val"):
        assert report["splits"][f"ct_{split}"]["slices"] == info["slices_written"][f"ct_{split}"]
    test_labels = np.load(out / "ct" / "test" / "ct_1003.npz")["arr_1"]
    assert report["splits"]["ct_test"]["label_voxels"] == dict(zip(
        layout.CARDIAC_CLASSES, np.bincount(test_labels.ravel(), minlength=5).tolist()))


def test_dataset_json_has_class_names_and_test_spacing_in_mm(cardiac):
    info = layout.PreparedLayout(cardiac[1]).read_info()
    assert info["class_names"] == list(layout.CARDIAC_CLASSES)
    assert info["flip_test_volumes"] is False and info["image_size"] == SIZE
    # coronal: rows toward the feet, columns toward the patient's left, slices toward the back
    assert np.allclose(info["test_spacing"]["ct/ct_1003"], [1.5, 0.8, 1.2])
    assert np.allclose(info["test_spacing"]["mr/mr_1002"], [2.0, 0.9, 1.0])
    assert info["provenance"]["splits"]["ct"] == {"train": ["ct_1001"], "val": ["ct_1002"], "test": ["ct_1003"]}


class TruthLookup:
    """A fake network that answers each slice's true labels, found by the slice's intensities."""

    def __init__(self, image, labels, intensity_range):
        slices = reader.to_unit_range(np.moveaxis(image, 2, 0).astype(np.float32), intensity_range)
        self.table = {s.tobytes(): label for s, label in zip(slices, np.moveaxis(labels, 2, 0))}

    def __call__(self, batch):
        return np.eye(5, dtype=np.float32)[np.stack([self.table[s[..., 0].tobytes()] for s in batch])]


@pytest.mark.parametrize("modality, volume_id", [("ct", 1003), ("mr", 1002)])
def test_predictions_overlay_the_raw_scan_in_world_coordinates(cardiac, tmp_path, modality, volume_id):
    """A perfect prediction, written by the evaluation with dataset.json's geometry, falls on the
    raw label file's voxels in world (RAS+ mm) coordinates: the grids coincide and every label
    matches (the raw affines are permuted, flipped, anisotropic and, for CT, rotated)."""
    raw, out, _ = cardiac
    name = f"{modality}_{volume_id}"
    raw_path = out.parent / "raw" / f"{modality}_train" / f"{modality}_train_{volume_id}_label.nii.gz"
    geometry = layout.PreparedLayout(out).read_info()["test_geometry"][f"{modality}/{name}"]
    assert geometry["orientation"] == "ILP"
    assert geometry["source_file"].endswith(f"{modality}_train_{volume_id}_image.nii.gz")
    assert geometry["source_shape"] == list(SHAPE) and np.allclose(geometry["source_affine"], AFFINES[modality])

    path = out / modality / "test" / f"{name}.npz"
    image, labels = layout.read_test_volume(path)
    evaluate_volumes(TruthLookup(image, labels, (-5.0, 5.0)), [path], (-5.0, 5.0), layout.CARDIAC_CLASSES, tmp_path,
                     affines=affine_by_volume(layout.PreparedLayout(out).read_info(), modality), write_images=True)
    written = {kind: nib.load(str(tmp_path / kind / f"{name}.nii.gz"))
               for kind in ("predictions", "images", "ground_truth")}
    assert all(np.allclose(w.affine, geometry["affine"]) for w in written.values())
    np.testing.assert_array_equal(written["images"].get_fdata(), image)
    np.testing.assert_array_equal(np.asarray(written["ground_truth"].dataobj), labels)

    raw_label = nib.load(str(raw_path))
    to_prediction = np.linalg.inv(written["predictions"].affine) @ raw_label.affine
    indices = np.indices(SHAPE).reshape(3, -1)
    mapped = to_prediction[:3, :3] @ indices + to_prediction[:3, 3:]
    np.testing.assert_allclose(mapped, np.round(mapped), atol=1e-3)  # voxel centres coincide
    mapped = np.round(mapped).astype(int)
    inside = np.all((mapped >= 0) & (mapped < np.array(labels.shape)[:, None]), axis=0)
    expected = np.zeros(SHAPE, np.int16)
    for value, cls in MMWHS_CLASSES.items():
        expected[raw[(modality, volume_id)] == value] = cls
    expected = expected.ravel()
    assert expected[inside].any() and not expected[~inside].any()
    prediction = np.asarray(written["predictions"].dataobj)
    np.testing.assert_array_equal(prediction[tuple(mapped[:, inside])], expected[inside])


@pytest.mark.parametrize("modality, volume_id", [("ct", 1003), ("mr", 1002)])
def test_slices_are_coronal_in_radiological_view(cardiac, modality, volume_id):
    """Class centroids move down the rows toward the feet, right along the columns toward the
    patient's left and along the slices toward the back, in world (RAS) coordinates."""
    raw, out, _ = cardiac
    mapped = np.zeros(SHAPE, np.uint8)
    for value, cls in MMWHS_CLASSES.items():
        mapped[raw[(modality, volume_id)] == value] = cls
    labels = np.load(out / modality / "test" / f"{modality}_{volume_id}.npz")["arr_1"]
    affine = AFFINES[modality]
    for first in range(1, 5):
        for second in range(first + 1, 5):
            world = [affine[:3, :3] @ np.argwhere(mapped == c).mean(axis=0) for c in (first, second)]
            voxel = [np.argwhere(labels == c).mean(axis=0) for c in (first, second)]
            toward_feet_left_back = -(world[1] - world[0])[[2, 0, 1]]
            moved = voxel[1] - voxel[0]
            clear = np.abs(toward_feet_left_back) > 4
            assert np.array_equal(np.sign(moved[clear]), np.sign(toward_feet_left_back[clear]))


def test_records_read_back_through_the_trainers_reader(cardiac):
    out = cardiac[1]
    prepared = layout.PreparedLayout(out)
    info = prepared.read_info()
    for modality in layout.MODALITIES:
        for split in layout.RECORD_SPLITS:
            dataset = reader.make_dataset(
                reader.resolve_record_paths(str(prepared.datalist(modality, split))), image_size=SIZE,
                num_classes=5, intensity_range=reader.load_intensity_range(prepared.stats_path, modality),
                batch_size=1, shuffle=False, repeat=False, deterministic=True, drop_remainder=False)
            batches = list(dataset.as_numpy_iterator())
            assert len(batches) == info["slices_written"][f"{modality}_{split}"]
            assert all(onehot.shape == (1, SIZE, SIZE, 5) and np.all(onehot.sum(-1) == 1)
                       for _, onehot in batches)
            if split == "train":
                images = np.concatenate([image for image, _ in batches])
                assert images.min() >= -1 - 1e-5 and images.max() <= 1 + 1e-5


def test_stats_are_the_range_of_the_training_records(cardiac):
    out = cardiac[1]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    for modality in layout.MODALITIES:
        paths = sorted(layout.PreparedLayout(out).records_dir(modality, "train").glob("*.tfrecords"))
        assert [p.stem for p in paths] == [f"{modality}_1001", f"{modality}_1001_aug1"]
        images = [image for path in paths for image, _ in record_pairs(path)]
        assert stats[modality] == {"min": float(np.min(images)), "max": float(np.max(images))}


def test_augmented_copy_is_a_transformed_volume_with_the_same_classes(cardiac):
    out = cardiac[1]
    original, copy = (record_pairs(out / "ct" / "train" / f"ct_1001{suffix}.tfrecords")
                      for suffix in ("", "_aug1"))
    copy_labels = np.stack([label for _, label in copy])
    assert set(np.unique(copy_labels)) == {0, 1, 2, 3, 4}
    assert not np.array_equal(copy_labels, np.stack([label for _, label in original])[:len(copy)])


def test_augmentation_is_seeded_and_the_identity_changes_nothing():
    matrices = [augmentation.random_affine(augmentation.copy_rng(0, "ct_1001", 1)) for _ in range(2)]
    assert np.array_equal(*matrices)
    assert not np.allclose(matrices[0], augmentation.random_affine(augmentation.copy_rng(0, "ct_1001", 2)))
    rng = np.random.default_rng(0)
    labels = blob_labels(rng, [1, 2, 3])
    image = image_for(rng, labels)
    moved_image, moved_labels = augmentation.transformed(image, labels, (1.0, 2.0, 0.5), (20, 20, 15), np.eye(3))
    assert np.allclose(moved_image, image, atol=1e-4) and np.array_equal(moved_labels, labels)


def test_in_plane_resampling_sets_the_spacing_and_keeps_the_classes():
    labels = blob_labels(np.random.default_rng(1), [3, 7])
    volume = volumes.checked_volume(labels.astype(np.float32), labels, np.diag([0.5, 0.8, 2.0, 1.0]),
                                     "image", "label")
    resampled = volumes.resampled_in_plane(volume, 1.0)
    assert resampled.image.shape == (20, 32, 30)
    assert resampled.spacing == (1.0, 1.0, 2.0)  # exactly the spacing asked for (issue 36, item 11)
    assert set(np.unique(resampled.label)) == {0, 3, 7}


def test_obliquity_is_the_largest_tilt_of_a_voxel_axis():
    tilt = np.radians(17.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.7, 2.5])
    assert volumes.obliquity_degrees(affine) == pytest.approx(17.0)
    assert volumes.obliquity_degrees(np.diag([-1.5, 1.5, 3.0, 1.0])[[1, 0, 2, 3]]) == 0.0


def test_abdominal_counts_for_btcv_ct_and_chaos_dicom_mr(aos):
    btcv, chaos, out = aos
    ct_test = np.load(out / "ct" / "test" / "ct_1.npz")["arr_1"]
    assert class_counts(ct_test) == counts_by_class(btcv[1], BTCV_CLASSES)
    assert record_class_counts(out / "ct" / "train" / "ct_2.tfrecords") == counts_by_class(btcv[2], BTCV_CLASSES)
    mr_test = np.load(out / "mr" / "test" / "mr_2.npz")["arr_1"]
    assert mr_test.shape == (SIZE, SIZE, 20)
    assert class_counts(mr_test) == counts_by_class(chaos[2], CHAOS_CLASSES)
    assert record_class_counts(out / "mr" / "val" / "mr_3.tfrecords") == counts_by_class(chaos[3], CHAOS_CLASSES)
    info = layout.PreparedLayout(out).read_info()
    assert info["class_names"] == list(layout.ABDOMINAL_CLASSES)
    assert np.allclose(info["test_spacing"]["mr/mr_2"], [1.4, 1.4, 6.0])


def test_axial_mr_slices_keep_the_dicom_rows_and_columns(aos):
    """With CHAOS's axial DICOM orientation the output slice is the PNG mask, shifted by the crop."""
    _, chaos, out = aos
    labels = np.load(out / "mr" / "test" / "mr_2.npz")["arr_1"]
    mask = np.zeros_like(chaos[2])
    for value, cls in CHAOS_CLASSES.items():
        mask[chaos[2] == value] = cls
    source_rows, source_columns = np.nonzero(mask.any(axis=0))
    rows, columns = np.nonzero(labels.any(axis=2))
    shift = (rows.min() - source_rows.min(), columns.min() - source_columns.min())
    for index in range(mask.shape[0]):
        window = mask[index][rows.min() - shift[0]:rows.max() - shift[0] + 1,
                             columns.min() - shift[1]:columns.max() - shift[1] + 1]
        assert np.array_equal(labels[rows.min():rows.max() + 1, columns.min():columns.max() + 1, index], window)


def test_chaos_geometry_places_each_label_on_its_dicom_pixel(aos):
    """World (RAS+) positions from dataset.json's affine, turned into DICOM pixel indices by
    SimpleITK itself, hold the same class in the CHAOS ground-truth PNG masks."""
    _, chaos, out = aos
    affine = np.asarray(layout.PreparedLayout(out).read_info()["test_geometry"]["mr/mr_2"]["affine"])
    labels = np.load(out / "mr" / "test" / "mr_2.npz")["arr_1"]
    dicom_reader = sitk.ImageSeriesReader()
    folder = out.parent / "chaos" / "Train_Sets" / "MR" / "2" / "T2SPIR" / "DICOM_anon"
    dicom_reader.SetFileNames(dicom_reader.GetGDCMSeriesFileNames(str(folder)))
    series = dicom_reader.Execute()
    voxels = np.argwhere(labels > 0)
    for voxel in voxels[::7]:
        x, y, z = (affine @ [*voxel, 1.0])[:3]
        column, row, index = np.round(series.TransformPhysicalPointToContinuousIndex((-x, -y, z))).astype(int)
        assert {0: 0, **CHAOS_CLASSES}[int(chaos[2][index, row, column])] == labels[tuple(voxel)]


def run_mmwhs(raw_dir, output_dir, *extra):
    return mmwhs.main(["--raw_dir", str(raw_dir), "--output_dir", str(output_dir), "--image_size", str(SIZE),
                       "--ct_test_ids", "1001", "--mr_test_ids", "1001", "--ct_val_count", "0",
                       "--mr_val_count", "0", *extra])


def replace_volume(path, array=None, affine=None):
    """Rewrites a NIfTI file with another array and/or affine."""
    nifti = nib.load(str(path))
    data, old_affine = np.asanyarray(nifti.dataobj), nifti.affine
    save_nifti(path, data if array is None else array(data), old_affine if affine is None else affine)


MR_IMAGE, MR_LABEL = "mr_train/mr_train_1001_image.nii.gz", "mr_train/mr_train_1001_label.nii.gz"
BAD_INPUTS = {
    "missing partner": (lambda raw: (raw / MR_LABEL).unlink(),
                        "mr_train_1001_image.nii.gz: its label partner .*mr_train_1001_label.nii.gz is missing"),
    "shape mismatch": (lambda raw: replace_volume(raw / MR_LABEL, array=lambda a: a[:, :, :-1]),
                       r"mr_train_1001_label.nii.gz: label shape \(40, 40, 29\) differs"),
    "affine mismatch": (lambda raw: replace_volume(raw / MR_LABEL,
                                                   affine=AFFINES["mr"] + np.diag([0, 0, 0.01, 0])),
                        r"mr_train_1001_label.nii.gz: label affine .* differs from the image's"),
    "non-3D volume": (lambda raw: replace_volume(raw / MR_IMAGE, array=lambda a: np.stack([a, a], axis=-1)),
                      r"mr_train_1001_image.nii.gz: expected a 3D volume, got shape \(40, 40, 30, 2\)"),
    "NaN voxels": (lambda raw: replace_volume(raw / MR_IMAGE, array=lambda a: np.where(a > 130, np.nan, a)),
                   "mr_train_1001_image.nii.gz: the image holds [0-9]+ NaN or infinite voxel"),
    "unknown labels": (lambda raw: replace_volume(raw / MR_LABEL, array=lambda a: np.where(
        np.indices(a.shape).sum(axis=0) < 2, 999, a).astype(np.int16)),
        r"mr_train_1001_label.nii.gz: unknown label values 999 \(4 voxels\)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_with_a_message_naming_the_file_and_writes_nothing(tmp_path, case):
    write_mmwhs(tmp_path / "raw", ids=(1001, 1002))
    spoil, message = BAD_INPUTS[case]
    spoil(tmp_path / "raw")
    with pytest.raises(volumes.RawDataError, match=message):
        run_mmwhs(tmp_path / "raw", tmp_path / "out")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]


def test_unknown_labels_can_be_ignored_and_are_reported(tmp_path):
    write_mmwhs(tmp_path / "raw", ids=(1001, 1002))
    BAD_INPUTS["unknown labels"][0](tmp_path / "raw")
    report = run_mmwhs(tmp_path / "raw", tmp_path / "out", "--ignore_unknown_labels")
    ignored = {v["name"]: v["unknown_labels_ignored"] for v in report["volumes"]}
    assert ignored == {"mr_1001": {"999": 4}, "mr_1002": {}, "ct_1001": {}, "ct_1002": {}}


def test_chaos_dicom_without_its_mask_names_the_dicom_file(tmp_path):
    write_chaos(tmp_path / "chaos", ids=(1, 2))
    write_btcv(tmp_path / "btcv", ids=(1, 2))
    (tmp_path / "chaos" / "Train_Sets" / "MR" / "1" / "T2SPIR" / "Ground" / "IMG-0002-00004.png").unlink()
    message = "IMG-0002-00004.dcm: its ground-truth mask .*IMG-0002-00004.png is missing"
    with pytest.raises(volumes.RawDataError, match=message):
        abdominal.main(["--btcv_dir", str(tmp_path / "btcv"), "--chaos_dir", str(tmp_path / "chaos"),
                        "--output_dir", str(tmp_path / "out"), "--ct_test_ids", "1", "--mr_test_ids", "1",
                        "--ct_val_count", "0", "--mr_val_count", "0"])


def test_cli_bad_input_is_one_error_line_and_exit_code_2(tmp_path):
    write_mmwhs(tmp_path / "raw", ids=(1001, 1002))
    (tmp_path / "raw" / MR_LABEL).unlink()
    result = subprocess.run([sys.executable, "-m", "data_prep.mmwhs", "--raw_dir", str(tmp_path / "raw"),
                             "--output_dir", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.returncode == 2
    # Nothing else: TensorFlow's start-up lines (oneDNN, CUDA probe) are filtered out.
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'raw' / MR_IMAGE}: its label partner "
                                          f"{tmp_path / 'raw' / MR_LABEL} is missing"]


def file_contents(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_one_process_writes_what_two_processes_wrote(cardiac, tmp_path):
    raw_dir, out = cardiac[1].parent / "raw", cardiac[1]
    mmwhs.main(["--raw_dir", str(raw_dir), "--output_dir", str(tmp_path / "out"), "--image_size", str(SIZE),
                "--augment", "1", "--workers", "1", *SPLIT_OPTIONS])
    assert file_contents(tmp_path / "out") == file_contents(out)


def test_a_crop_that_cuts_labels_is_reported(tmp_path):
    raw = write_mmwhs(tmp_path / "raw", ids=(1001, 1002))
    report = run_mmwhs(tmp_path / "raw", tmp_path / "out", "--image_size", "8")
    outside = {v["name"]: v["voxels_outside_crop"] for v in report["volumes"]}
    test_labels = np.load(tmp_path / "out" / "ct" / "test" / "ct_1001.npz")["arr_1"]
    lost = sum(counts_by_class(raw[("ct", 1001)], MMWHS_CLASSES).values()) - np.count_nonzero(test_labels)
    assert outside["ct_1001"] == lost > 0


def test_refuses_a_non_empty_output_folder(tmp_path):
    write_mmwhs(tmp_path / "raw", ids=(1001, 1002))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        run_mmwhs(tmp_path / "raw", tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
