"""python -m data_prep.folder on a tiny nnU-Net / MSD style data set of the user's own kind: NIfTI
with flipped, anisotropic axes, one scan at another spacing, CT in HU and MR in arbitrary units,
unlabelled CT training scans (one a DICOM series), then training on it and what needs target
labels refusing in one line."""
import functools
import json
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf
from scipy import ndimage

from conftest import REPO, main_exit_code
from data_prep import conversion, folder, phantom
from sifa_synthmix.data import layout, preprocessing, records, volumes
from sifa_synthmix.prediction import scan_recipe

SHAPE = (44, 40, 16)
VALUES = {"MYO": 205, "LAC": 420, "LVC": 500, "AA": 820}
CLASSES = ["background", "MYO", "LAC", "LVC", "AA"]
# Voxel -> RAS mm: axis 0 flipped (rows run right -> left), 1.5 x 1.5 x 3 mm.
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, 1.5, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
FINE_AFFINE = AFFINE @ np.diag([2 / 3, 2 / 3, 1, 1])  # 1.0 x 1.0 x 3 mm: resampled to the median 1.5
BODY = {"ct": (-1000.0, 40.0, 120.0), "mr": (8.0, 300.0, 150.0)}  # air, body, class step


def scan(rng, modality, shape=SHAPE):
    """(image, raw labels): an elliptic body below the array's centre, with one cube of each
    labelled value inside it, brighter by class."""
    rows, columns = np.ogrid[:shape[0], :shape[1]]
    body = ((rows - shape[0] * 0.55) / (shape[0] * 0.35)) ** 2 + ((columns - shape[1] * 0.5) / (shape[1] * 0.4)) ** 2 <= 1
    label = np.zeros(shape, np.int16)
    classes = np.zeros(shape)
    for index, value in enumerate(VALUES.values(), start=1):
        corner = [int(shape[0] * 0.55) - 6 + rng.integers(0, 7), int(shape[1] * 0.5) - 6 + rng.integers(0, 7),
                  rng.integers(3, shape[2] - 8)]
        cube = tuple(slice(c, c + 4) for c in corner[:2]) + (slice(corner[2], corner[2] + 5),)
        label[cube], classes[cube] = value, index
    air, tissue, step = BODY[modality]
    image = np.where(body[:, :, None], tissue, air) + step * classes / 2 + rng.normal(0, 8, shape)
    return (np.round(image).astype(np.int16) if modality == "ct" else np.abs(image).astype(np.float32)), label


def save(path, array, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def write_dicom_series(folder_path, image, affine):
    """A DICOM series of an (x, y, z) array with `affine`'s spacing, written with SimpleITK."""
    folder_path.mkdir(parents=True)
    volume = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose(2, 1, 0)))
    volume.SetSpacing([float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(image.shape[2]):
        part = volume[:, :, index]
        position = "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, index))))
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.9.1"), ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", position), ("0020|0013", str(index + 1)), ("0008|0060", "CT")):
            part.SetMetaData(tag, value)
        writer.SetFileName(str(folder_path / f"slice{index + 1:03d}.dcm"))
        writer.Execute(part)


def write_raw(root):
    """MR: nnU-Net v2 (labels name -> value), 3 labelled training scans (one at 1 mm) and one test.
    CT: MSD style (value -> name, and CT's own label values), 3 labelled training scans, 2
    unlabelled ones (one a DICOM series) and one labelled test scan. Returns the raw labels."""
    rng = np.random.default_rng(0)
    raw = {}
    for modality, values in (("mr", VALUES), ("ct", {name: index for index, name in enumerate(CLASSES) if index})):
        base = root / modality
        for split, names in (("Tr", ["case1", "case2", "case3"]), ("Ts", ["case9"])):
            for name in names:
                fine = modality == "mr" and name == "case3"
                image, label = scan(rng, modality, (66, 60, 16) if fine else SHAPE)
                label = np.select([label == v for v in VALUES.values()], list(values.values()), 0).astype(np.int16)
                save(base / f"images{split}" / f"{name}_0000.nii.gz", image, FINE_AFFINE if fine else AFFINE)
                save(base / f"labels{split}" / f"{name}.nii.gz", label, FINE_AFFINE if fine else AFFINE)
                raw[modality, name] = label
        info = ({"labels": {"background": 0, **values}, "channel_names": {"0": "T2"}} if modality == "mr"
                else {"labels": {str(v): n for n, v in {"background": 0, **values}.items()}, "modality": {"0": "CT"}})
        (base / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    image, _ = scan(rng, "ct")
    save(root / "ct" / "imagesTrUnlabelled" / "scan7.nii.gz", image)
    image, _ = scan(rng, "ct")
    write_dicom_series(root / "ct" / "imagesTrUnlabelled" / "scan8", image, AFFINE)
    return raw


def convert(raw_root, out, *extra):
    return folder.main(["--mr_dir", str(raw_root / "mr"), "--ct_dir", str(raw_root / "ct"), "--output_dir", str(out),
                        "--image_size", "32", *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    raw = write_raw(root / "raw")
    report = convert(root / "raw", root / "out", "--mr_val_count", "1")
    return root, raw, report


def test_layout_class_names_unlabelled_scans_and_recipe(prepared):
    root, _, report = prepared
    info = json.loads((root / "out" / "dataset.json").read_text(encoding="utf-8"))
    assert info["class_names"] == CLASSES
    assert info["unlabelled"] == {"ct_train": ["scan7", "scan8"]}
    assert info["preprocessing"] == {"orientation": "PLS", "slice_axis": "axial", "spacing_mm": 1.5, "image_size": 32,
                                     "crop": "body", "clip_percent": 2.0, "normalisation": "foreground",
                                     "foreground_percentiles": [0.5, 99.5]}
    splits = report["splits"]
    assert (splits["mr_train"]["volumes"], splits["mr_val"]["volumes"], splits["mr_test"]["volumes"]) == (2, 1, 1)
    assert (splits["ct_train"]["volumes"], splits["ct_train"]["unlabelled_volumes"]) == (5, 2)
    for modality in layout.MODALITIES:  # every class reaches the training records of both
        assert all(splits[f"{modality}_train"]["label_voxels"][name] > 0 for name in CLASSES[1:])
    by_name = {v["name"]: v for v in report["volumes"]}
    assert np.allclose(by_name["case3"]["spacing_mm"][:2], [1.5, 1.5], atol=0.02)  # the 1 mm scan, resampled
    assert not by_name["scan8"]["labelled"] and by_name["scan8"]["source"].endswith("scan8")
    stats = json.loads((root / "out" / "stats.json").read_text(encoding="utf-8"))
    assert set(stats) == {"mr", "ct"}


def test_unlabelled_records_hold_zero_labels_and_body_slices(prepared):
    root, _, _ = prepared
    for name in ("scan7", "scan8"):
        path = root / "out" / "ct" / "train" / f"{name}.tfrecords"
        slices = [records.decode_example_numpy(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
        assert len(slices) == SHAPE[2]  # the body runs through every slice
        assert all(not np.any(label) for _, label in slices)


def test_test_volume_sits_where_the_raw_scan_is(prepared):
    """Each prepared test label, taken back through its stored affine to the raw scan's voxels,
    is the raw label with the class mapping (no resampling at the median spacing)."""
    root, raw, _ = prepared
    info = json.loads((root / "out" / "dataset.json").read_text(encoding="utf-8"))
    for modality in layout.MODALITIES:
        _, labels = layout.read_test_volume(root / "out" / modality / "test" / "case9.npz")
        prepared_affine = np.asarray(info["test_geometry"][f"{modality}/case9"]["affine"])
        raw_label = raw[modality, "case9"]
        if modality == "mr":
            raw_label = np.select([raw_label == v for v in VALUES.values()], [1, 2, 3, 4], 0)
        to_raw = np.linalg.inv(AFFINE) @ prepared_affine
        back = ndimage.affine_transform(labels.astype(np.int16), np.linalg.inv(to_raw)[:3, :3],
                                        np.linalg.inv(to_raw)[:3, 3], output_shape=SHAPE, order=0, cval=-1)
        inside = back >= 0
        assert inside.mean() > 0.5
        assert np.array_equal(back[inside], raw_label[inside])
        assert np.count_nonzero(raw_label[~inside]) == 0  # the crop kept every labelled voxel


def test_sifa_synthmix_trains_on_unlabelled_target_and_label_needs_refuse(prepared, capsys, monkeypatch, tmp_path):
    root, _, _ = prepared
    monkeypatch.chdir(REPO)
    data = root / "out"
    assert main_exit_code("--flagfile=configs/tiny_cpu.flags", f"--data_dir={data}", f"--output_dir={tmp_path / 'run'}",
                          "--mix_protocol=synthmix", "--max_steps=2") == 0
    out = capsys.readouterr()
    assert "2 of 5 volumes have no labels" in out.out + out.err
    assert (tmp_path / "run" / "checkpoints" / "ckpt-2.index").is_file()
    code = main_exit_code("--flagfile=configs/tiny_cpu.flags", f"--data_dir={data}", f"--output_dir={tmp_path / 'oracle'}",
                          "--model=segmenter", "--train_domain=target", "--max_steps=1")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "have no labels" in errors[0] and "oracle" in errors[0]
    assert not (tmp_path / "oracle").exists()
    # The CT test volume without labels: evaluation says so in one line instead of scoring zeros.
    unlabelled_test = shutil.copytree(data, tmp_path / "data")
    info = json.loads((unlabelled_test / "dataset.json").read_text(encoding="utf-8"))
    info["unlabelled"]["ct_test"] = ["case9"]
    (unlabelled_test / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    config["data"]["data_dir"] = str(unlabelled_test)
    (tmp_path / "run" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert main_exit_code("--mode=evaluate", f"--output_dir={tmp_path / 'run'}") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "CT test volumes have no labels" in errors[0]
    assert not (tmp_path / "run" / "eval").exists()


def test_label_option_axis_and_explicit_lists(prepared, tmp_path):
    """--ct_labels overrides dataset.json, --slice_axis coronal reorients, and explicit lists
    pair images with labels by case name (MMWHS-style _image / _label names)."""
    root, _, _ = prepared
    raw = root / "raw"
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("case1", "case2"):
        shutil.copy(raw / "ct" / "imagesTr" / f"{name}_0000.nii.gz", lists / f"ct_{name}_image.nii.gz")
        shutil.copy(raw / "ct" / "labelsTr" / f"{name}.nii.gz", lists / f"ct_{name}_label.nii.gz")
    report = folder.main(["--mr_dir", str(raw / "mr"), "--ct_images", str(lists / "*_image.nii.gz"),
                          "--ct_label_files", str(lists / "*_label.nii.gz"), "--ct_labels",
                          "MYO=1,LAC=2,LVC=3,AA=4", "--ct_test_cases", "ct_case2", "--slice_axis", "coronal",
                          "--spacing", "native", "--output_dir", str(tmp_path / "out"), "--image_size", "32"])
    info = json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))
    assert info["preprocessing"]["orientation"] == "ILP" and info["preprocessing"]["spacing_mm"] is None
    assert info["test_geometry"]["ct/ct_case2"]["orientation"] == "ILP"
    assert report["splits"]["ct_test"]["volumes"] == 1 and report["splits"]["ct_train"]["label_voxels"]["AA"] > 0


def run_converter(capsys, *argv):
    """(exit code, the error lines) of the converter's command line."""
    with pytest.raises(SystemExit) as stop:
        from data_prep.errors import exit_on_bad_input  # pylint: disable=import-outside-toplevel
        exit_on_bad_input(folder.main, list(argv))
    return stop.value.code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def damaged_copy(prepared, tmp_path, damage):
    raw = shutil.copytree(prepared[0] / "raw", tmp_path / "raw")
    damage(raw)
    return raw


def overwrite(path, array, affine=AFFINE):
    path.unlink()
    save(path, array, affine)


BAD_INPUT = {
    "label of another shape": (lambda raw: overwrite(raw / "mr" / "labelsTr" / "case1.nii.gz", np.zeros((5, 5, 5), np.int16)),
                               "case1.nii.gz", "label shape"),
    "label of another geometry": (lambda raw: overwrite(raw / "mr" / "labelsTr" / "case1.nii.gz",
                                                         np.zeros(SHAPE, np.int16), AFFINE @ np.diag([1, 1, 2, 1])),
                                  "case1.nii.gz", "label affine"),
    "4D image": (lambda raw: overwrite(raw / "mr" / "imagesTr" / "case2_0000.nii.gz", np.zeros(SHAPE + (2,), np.float32)),
                 "case2_0000.nii.gz", "3D"),
    "2D image": (lambda raw: overwrite(raw / "ct" / "imagesTs" / "case9_0000.nii.gz", np.zeros((8, 8), np.float32)),
                 "case9_0000.nii.gz", "3D"),
    "non-integer label": (lambda raw: overwrite(raw / "mr" / "labelsTr" / "case2.nii.gz",
                                                np.full(SHAPE, 0.5, np.float32)), "case2.nii.gz", "non-integer"),
    "unknown label value": (lambda raw: overwrite(raw / "mr" / "labelsTr" / "case2.nii.gz", np.where(
        np.asarray(nib.load(str(raw / "mr" / "labelsTr" / "case2.nii.gz")).dataobj) > 0, 7, 0).astype(np.int16)),
                            "case2.nii.gz", "unknown label values 7"),
    "empty folder": (lambda raw: shutil.rmtree(raw / "ct") or (raw / "ct").mkdir(), "ct", "no scans"),
    "missing label": (lambda raw: (raw / "mr" / "labelsTr" / "case2.nii.gz").unlink(), "case2_0000.nii.gz",
                      "its label"),
    "two files for one case": (lambda raw: shutil.copy(raw / "mr" / "imagesTr" / "case1_0000.nii.gz",
                                                       raw / "mr" / "imagesTr" / "case1.nii"), "case1", "claims"),
    "unreadable DICOM series": (lambda raw: [f.write_bytes(f.read_bytes()[:200]) for f in
                                             sorted((raw / "ct" / "imagesTrUnlabelled" / "scan8").iterdir())[1:]],
                                "scan8", "DICOM"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_error_line_and_writes_nothing(prepared, tmp_path, capsys, case):
    damage, path_part, message = BAD_INPUT[case]
    raw = damaged_copy(prepared, tmp_path, damage)
    out = tmp_path / "out"
    code, errors = run_converter(capsys, "--mr_dir", str(raw / "mr"), "--ct_dir", str(raw / "ct"),
                                 "--output_dir", str(out), "--image_size", "32")
    assert code == 2 and len(errors) == 1, errors
    assert path_part in errors[0] and message in errors[0], errors[0]
    assert not out.exists() and not list(tmp_path.glob("out.partial-*"))


def test_body_mask_finds_the_body_without_labels():
    image, _ = scan(np.random.default_rng(3), "ct")
    mask = preprocessing.body_mask(image)
    rows, columns = np.ogrid[:SHAPE[0], :SHAPE[1]]
    body = ((rows - SHAPE[0] * 0.55) / (SHAPE[0] * 0.35)) ** 2 + ((columns - SHAPE[1] * 0.5) / (SHAPE[1] * 0.4)) ** 2 <= 1
    assert (mask == body[:, :, None]).mean() > 0.98
    centre = preprocessing.crop_centre("body", image)
    assert abs(centre[0] - SHAPE[0] * 0.55) < 1 and abs(centre[1] - (SHAPE[1] - 1) * 0.5) < 1


def test_phantom_as_raw_round_trip(tmp_path):
    """The phantom's raw folders convert, with CT training scans unlabelled and the MR classes."""
    written = phantom.write_raw(tmp_path / "raw", image_size=40, counts={
        "mr_train": 2, "ct_train": 2, "mr_val": 0, "ct_val": 0, "mr_test": 1, "ct_test": 1})
    assert written == 6
    scan_file = nib.load(str(tmp_path / "raw" / "ct" / "imagesTr" / "ct_train_00_0000.nii.gz"))
    assert not np.allclose(scan_file.affine, np.diag(np.diag(scan_file.affine)))  # axes permuted
    assert scan_file.get_data_dtype() == np.int16 and np.asarray(scan_file.dataobj).min() < -500  # HU
    report = convert(tmp_path / "raw", tmp_path / "out")
    assert report["splits"]["ct_train"]["unlabelled_volumes"] == 2
    assert report["splits"]["mr_train"]["label_voxels"]["LVC"] > 0


def test_prepare_phantom_on_a_converted_data_set_is_one_error_line(prepared, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    code = main_exit_code("--flagfile=configs/demo.flags", f"--data_dir={prepared[0] / 'out'}",
                          f"--output_dir={tmp_path / 'runs'}", "--max_steps=1")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "--noprepare_phantom" in errors[0], errors
    assert not (tmp_path / "runs").exists()


def test_an_experiment_with_the_oracle_on_an_unlabelled_target_stops_before_training(prepared, capsys, monkeypatch,
                                                                                    tmp_path):
    monkeypatch.chdir(REPO)
    code = main_exit_code("--mode=experiment", "--flagfile=configs/tiny_cpu.flags", f"--data_dir={prepared[0] / 'out'}",
                          f"--output_dir={tmp_path / 'experiment'}", "--experiment_variants=sifa,oracle")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "oracle" in errors[0], errors
    assert not (tmp_path / "experiment" / "sifa").exists()


def test_a_labelled_and_an_unlabelled_copy_of_a_scan_get_the_same_crop(prepared):
    """The body framing places and scales a scan without looking at its labels."""
    root, _, _ = prepared
    image = root / "raw" / "ct" / "imagesTr" / "case1_0000.nii.gz"
    mapping = folder.label_mapping({v: n for v, n in enumerate(CLASSES)}, CLASSES)
    settings = conversion.Settings(axcodes=volumes.AXIAL, image_size=32, spacing_mm=1.5, crop="body",
                                   normalisation="foreground")
    copies = [conversion.prepare_volume(conversion.RawVolume(
        "ct", "train", "case1", functools.partial(volumes.load_pair, image, label), mapping, labelled=label is not None),
        settings)[0] for label in (root / "raw" / "ct" / "labelsTr" / "case1.nii.gz", None)]
    labelled, unlabelled = copies
    assert labelled.geometry == unlabelled.geometry and labelled.record_slices == unlabelled.record_slices
    np.testing.assert_array_equal(labelled.image, unlabelled.image)
    assert labelled.labels.any() and not unlabelled.labels.any()


def test_a_test_scan_is_framed_for_evaluation_exactly_as_prediction_frames_it(prepared):
    """The prepared test volume that --mode=evaluate scores is, voxel for voxel and in place, the
    array --mode=predict prepares from the raw scan with the data set's recipe."""
    root, _, _ = prepared
    info = json.loads((root / "out" / "dataset.json").read_text(encoding="utf-8"))
    recipe = scan_recipe.recipe_for(info["preprocessing"], info["image_size"])
    for modality in layout.MODALITIES:
        stored, _ = layout.read_test_volume(root / "out" / modality / "test" / "case9.npz")
        path = root / "raw" / modality / "imagesTs" / "case9_0000.nii.gz"
        prepared_image, prepared_affine = scan_recipe.prepare_scan(*scan_recipe.read_scan(path), recipe, path)
        np.testing.assert_array_equal(prepared_image, stored)
        np.testing.assert_allclose(prepared_affine, info["test_geometry"][f"{modality}/case9"]["affine"], atol=1e-9)


def test_spacing_auto_coarsens_the_median_until_the_window_holds_the_labels(prepared, tmp_path, capsys):
    """At 8 px the median 1.5 mm window (12 mm) cannot hold structures that reach ~10 mm from
    the body's centre: the spacing grows so that 8 px span twice the reach plus the margin."""
    root, _, _ = prepared
    report = convert(root / "raw", tmp_path / "out", "--image_size", "8")
    spacing = report["provenance"]["spacing_mm"]
    out = capsys.readouterr().out
    assert "instead of the scans' median 1.5 mm" in out
    reach = float(out.split("the farthest lies ")[1].split(" mm")[0])
    assert spacing > 1.5 and spacing * 8 >= 2 * reach * (1 + folder.FIT_MARGIN)
    assert sum(v["voxels_outside_crop"] for v in report["volumes"] if v["labelled"]) == 0


def test_test_labels_outside_the_crop_are_recorded_for_evaluation_to_count(prepared, tmp_path):
    root, raw, _ = prepared
    convert(root / "raw", tmp_path / "out", "--image_size", "8", "--spacing", "1.5")
    info = json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))
    _, kept = layout.read_test_volume(tmp_path / "out" / "ct" / "test" / "case9.npz")
    outside = info["test_geometry"]["ct/case9"]["labels_outside_crop"]
    raw_counts = np.bincount(raw["ct", "case9"].ravel(), minlength=5)
    assert {int(c): n for c, n in outside.items()} == {
        c: int(raw_counts[c] - np.count_nonzero(kept == c)) for c in range(1, 5) if raw_counts[c] > np.count_nonzero(kept == c)}


def test_body_mask_takes_a_dark_mr_body_whole_and_lungs_open_to_the_edge():
    """A bSSFP-like slice: air with Rician-like noise, a dark body (muscle) inside a bright fat
    ring, a field of view that cuts the chest at both sides, and dark lungs open to those edges.
    The body mask is the whole chest: the threshold sits between noise and muscle, and the array
    edge between the body's first and last pixel along it closes the lungs."""
    rng = np.random.default_rng(0)
    rows, columns = np.ogrid[:60, :48]
    chest = ((rows - 30) / 24.0) ** 2 + ((columns - 24) / 30.0) ** 2 <= 1  # wider than the array
    inner = ((rows - 30) / 21.0) ** 2 + ((columns - 24) / 27.0) ** 2 <= 1
    lungs = inner & ((columns < 10) | (columns > 37)) & (np.abs(rows - 30) < 12)
    image = np.where(chest, 900.0, 0.0)
    image[inner] = 180.0
    image[lungs] = 40.0
    image = np.hypot(image[:, :, None] + rng.normal(0, 25, (60, 48, 6)), rng.normal(0, 25, (60, 48, 6)))
    mask = preprocessing.body_mask(image)
    assert (mask == chest[:, :, None]).mean() > 0.97
    assert mask[lungs].all()


def test_unknown_label_values_stop_before_any_scan_is_converted_with_their_raw_counts(prepared, tmp_path, capsys):
    """The raw label files are checked first: the error counts the raw file's voxels (not the
    resampled ones) and comes before the converter prepares a single scan."""
    raw = damaged_copy(prepared, tmp_path, lambda root: None)
    path = raw / "ct" / "labelsTs" / "case9.nii.gz"  # the last scan the converter would prepare
    label = np.asarray(nib.load(str(path)).dataobj).copy()
    label[:2, :3, :4] = 7
    save(path, label)
    code, errors = run_converter(capsys, "--mr_dir", str(raw / "mr"), "--ct_dir", str(raw / "ct"),
                                 "--output_dir", str(tmp_path / "out"), "--image_size", "32")
    assert code == 2 and errors == [errors[0]] and "case9.nii.gz: unknown label values 7 (24 voxels)" in errors[0]
    assert not (tmp_path / "out").exists()


def test_list_mode_takes_test_scans_and_says_when_a_modality_has_none(prepared, tmp_path, capsys):
    root, _, _ = prepared
    raw = root / "raw"
    argv = ["--mr_dir", str(raw / "mr"), "--ct_images", str(raw / "ct" / "imagesTr" / "*_0000.nii.gz"),
            "--ct_label_files", str(raw / "ct" / "labelsTr" / "*.nii.gz"), "--ct_labels",
            ",".join(f"{name}={index}" for index, name in enumerate(CLASSES) if index),
            "--output_dir", str(tmp_path / "without"), "--image_size", "32"]
    folder.main(argv)
    assert "note: no CT test scans: --mode=evaluate will have nothing to score" in capsys.readouterr().out
    report = folder.main([*argv[:-4], "--ct_test_images", str(raw / "ct" / "imagesTs" / "case9_0000.nii.gz"),
                          "--ct_test_label_files", str(raw / "ct" / "labelsTs" / "case9.nii.gz"),
                          "--output_dir", str(tmp_path / "with"), "--image_size", "32"])
    assert report["splits"]["ct_test"]["volumes"] == 1 and report["splits"]["ct_test"]["label_voxels"]["LVC"] > 0
    assert "no CT test scans" not in capsys.readouterr().out
