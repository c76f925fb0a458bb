"""The scanner-like phantom (data_prep/scanner_phantom.py): its layout and format mix, geometry
read back through sifa_synthmix.data.scans, the artefacts it claims, determinism, the command line, and
conversion by data_prep.folder."""
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from data_prep import folder, phantom, phantom_anatomy, scanner_phantom
from data_prep.errors import UsageError
from sifa_synthmix.data import layout, scans

COUNTS = {"mr_train": 3, "ct_train": 2, "mr_val": 1, "ct_val": 1, "mr_test": 1, "ct_test": 1}
VOXEL_SCALE = 3.0  # voxels 3 times the default protocols' size, same fields of view: about a second per data set
MMWHS_VALUES = {0, 205, 420, 500, 820}


def write(path, seed=0):
    return scanner_phantom.write_raw(path, seed=seed, counts=COUNTS, voxel_scale=VOXEL_SCALE)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("scanner") / "raw"
    return root, write(root)


def scans_of(written_scans, modality):
    return [scan for scan in written_scans if scan.modality == modality]


def ending(path):
    return "dicom" if path.is_dir() else scans.scan_ending(path)


def test_layout_dataset_json_and_unlabelled_ct_training(written):
    root, written_scans = written
    assert sorted(p.name for p in root.iterdir()) == ["ct", "mr", "preview.png"]
    assert not list(root.parent.glob("*.partial-*"))
    for modality in layout.MODALITIES:
        info = json.loads((root / modality / "dataset.json").read_text(encoding="utf-8"))
        assert info["labels"] == {"background": 0, "MYO": 205, "LAC": 420, "LVC": 500, "AA": 820}
        assert info["channel_names"] == {"0": modality.upper()}
        assert info["numTraining"] == COUNTS[f"{modality}_train"] + COUNTS[f"{modality}_val"]
    assert sorted(p.name for p in (root / "mr").iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr",
                                                              "labelsTs"]
    assert sorted(p.name for p in (root / "ct").iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTs"]
    assert sorted(p.name for p in (root / "ct" / "imagesTr").iterdir()) == ["ct_train_00", "ct_train_01", "ct_val_00"]
    for scan in written_scans:
        assert (scan.label is None) == (scan.modality == "ct" and scan.split != "test")
        assert scan.image.exists() and (scan.label is None or scan.label.exists())


def test_formats_mix_nifti_nrrd_mha_and_dicom(written):
    _, written_scans = written
    endings = {(scan.modality, scan.split, ending(scan.image)) for scan in written_scans}
    assert {("mr", "train", ".nii.gz"), ("mr", "train", ".nrrd"), ("ct", "train", "dicom"), ("ct", "val", "dicom"),
            ("ct", "test", ".mha")} <= endings
    assert {ending(scan.label) for scan in written_scans if scan.label} == {".nii.gz", ".nrrd"}


def test_every_scan_reads_back_with_the_intended_geometry(written):
    _, written_scans = written
    for scan in written_scans:
        image, affine = scans.read_scan(scan.image)
        assert image.shape == scan.shape
        np.testing.assert_allclose(affine, scan.affine, atol=1e-3, err_msg=scan.case)
        assert image.dtype == (np.uint16 if scan.modality == "mr" else np.int16) or ending(scan.image) == "dicom"
        if scan.label:
            label, label_affine = scans.read_scan(scan.label)
            assert label.shape == scan.shape
            np.testing.assert_allclose(label_affine, scan.affine, atol=1e-3)


def test_ct_dicom_is_stored_as_a_scanner_stores_it(written):
    """Stored value = HU + 1024 (RescaleIntercept -1024), the padding as Pixel Padding Value,
    axial ImageOrientationPatient and ImagePositionPatient in LPS millimetres."""
    _, written_scans = written
    scan = next(s for s in written_scans if s.case == "ct_train_01")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(scan.image / f"IM{scan.shape[2]:04d}.dcm"))  # the lowest slice: numbered from the head
    reader.ReadImageInformation()
    tag = reader.GetMetaData
    assert tag("0008|0060").strip() == "CT" and float(tag("0028|1052")) == -1024 and float(tag("0028|1053")) == 1
    assert int(tag("0028|0120")) == scan.artefacts["padding_hu"] + 1024
    assert [float(v) for v in tag("0020|0037").split("\\")] == [1, 0, 0, 0, 1, 0]
    lps_origin = np.diag([-1.0, -1.0, 1.0]) @ scan.affine[:3, 3]
    np.testing.assert_allclose([float(v) for v in tag("0020|0032").split("\\")], lps_origin, atol=1e-3)


def test_two_mr_training_stacks_are_oblique_and_the_others_axis_aligned(written):
    _, written_scans = written
    for scan in written_scans:
        _, affine = scans.read_scan(scan.image)
        normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
        tilt = math.degrees(math.acos(abs(normal[2])))
        if scan.modality == "mr" and scan.case in ("mr_train_00", "mr_train_01"):
            assert 15 <= tilt <= 20 and not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))), scan.case
        else:
            assert np.count_nonzero(np.round(affine[:3, :3], 6)) == 3, scan.case


def test_grids_differ_per_subject_and_modality_and_the_body_is_off_centre(written):
    _, written_scans = written
    spacing = {s.case: np.linalg.norm(s.affine[:3, :3], axis=0) for s in written_scans}
    assert len({round(float(v[0]), 4) for v in spacing.values()}) == len(written_scans)
    ct_thick = [spacing[s.case][2] for s in scans_of(written_scans, "ct")]
    mr_thick = [spacing[s.case][2] for s in scans_of(written_scans, "mr")]
    assert max(ct_thick) < min(mr_thick)
    assert all(s.shape[0] == s.shape[1] for s in scans_of(written_scans, "ct"))
    offsets = []
    for scan in scans_of(written_scans, "ct"):
        image, _ = scans.read_scan(scan.image)
        body = image > scanner_phantom.BODY_EDGE_HU
        centre = np.array(ndimage.center_of_mass(body.any(axis=2)))
        offsets.append(np.linalg.norm((centre - (np.array(image.shape[:2]) - 1) / 2) * spacing[scan.case][:2]))
    assert np.mean(offsets) > 10.0  # mm: the field of view is centred on the heart, not the body


def test_ct_voxels_outside_the_reconstruction_circle_hold_the_padding_value(written):
    _, written_scans = written
    paddings = set()
    for scan in scans_of(written_scans, "ct"):
        image, _ = scans.read_scan(scan.image)
        outside = scanner_phantom.outside_circle(image.shape)
        padding = scan.artefacts["padding_hu"]
        assert np.all(image[outside] == padding) and not np.any(image[~outside] == padding), scan.case
        paddings.add(padding)
    assert paddings == {-2048, -3024}


def test_ct_noise_is_correlated_in_plane(written):
    """Differences of neighbouring slices in the air around the body cancel the anatomy and the
    streaks (the same in every slice), leaving noise: its neighbouring pixels are correlated as
    a Gaussian filter of 1 pixel makes them (exp(-1/4) = 0.78; white noise: 0)."""
    _, written_scans = written
    for scan in scans_of(written_scans, "ct"):
        image, _ = scans.read_scan(scan.image)
        near_body = ndimage.binary_dilation((image > scanner_phantom.BODY_EDGE_HU).any(axis=2), iterations=3)
        in_circle = ~ndimage.binary_dilation(scanner_phantom.outside_circle(image.shape), iterations=2)
        air = in_circle & ~near_body
        difference = np.diff(image.astype(float), axis=2)
        pairs = air[:-1] & air[1:]
        assert pairs.sum() > 100, scan.case
        correlation = np.corrcoef(difference[:-1][pairs].ravel(), difference[1:][pairs].ravel())[0, 1]
        assert 0.6 < correlation < 0.9, (scan.case, correlation)
        assert difference[air].std() / math.sqrt(2) == pytest.approx(scan.artefacts["noise_sd_hu"], rel=0.15)


@pytest.fixture(scope="module")
def mr_block():
    """mr_scan of a zero image with a block of signal 1 in rows 4-11: (stored image, record, rows
    of the block, rows of its ghost, rows of neither, 2 rows clear of the blurred edges)."""
    grid = scanner_phantom.ScanGrid((24, 48, 6), np.diag([2.0, 2.0, 6.0, 1.0]), subslices=4)
    image = np.zeros(grid.shape, dtype=np.float32)
    rows = np.arange(4, 12)
    image[:, rows] = 1.0
    stored, record = scanner_phantom.mr_scan(np.random.default_rng(3), image, grid)
    ghost_rows = (rows + record["ghost_shift_voxels"]) % grid.shape[1]
    near = [(r + shift) % grid.shape[1] for r in np.concatenate([rows, ghost_rows]) for shift in range(-2, 3)]
    return stored.astype(float), record, rows, ghost_rows, np.setdiff1d(np.arange(grid.shape[1]), near)


def test_mr_background_is_rician(mr_block):
    """Where the signal is zero the magnitude of complex Gaussian noise has mean sigma * sqrt(pi / 2),
    not 0 (Gudbjartsson & Patz 1995)."""
    stored, record, rows, ghost_rows, background = mr_block
    assert stored[:, background].mean() == pytest.approx(record["noise_sd"] * math.sqrt(math.pi / 2), rel=0.05)
    assert np.mean(stored[:, background] == 0) < 0.01


def test_mr_ghost_is_a_faint_copy_along_the_phase_encode_axis(mr_block):
    stored, record, rows, ghost_rows, background = mr_block
    assert record["phase_axis"] == 1 and 0.05 <= record["ghost_fraction"] <= 0.1
    ghost, signal = stored[:, ghost_rows].mean(), stored[:, rows].mean()
    assert ghost > stored[:, background].mean() + 0.5 * record["ghost_fraction"] * signal
    assert ghost < 0.3 * signal


def test_mr_bias_field_varies_smoothly_over_the_subject():
    rng = np.random.default_rng(7)
    pose = scanner_phantom.subject_pose(rng)
    grid = scanner_phantom.scan_grid(rng, "mr", scanner_phantom.PROTOCOLS["mr"], pose, oblique=False)
    log_field = np.log(scanner_phantom.scan_bias(rng, grid))
    assert log_field.max() - log_field.min() > math.log(1.2)  # at least 20% across the field of view
    for axis in range(3):
        assert np.abs(np.diff(log_field, axis=axis)).max() < 0.03  # under 3% from one voxel to the next


def test_tissue_intensities_are_distributions_with_a_mean_per_subject():
    tissue = (np.arange(56)[:, None, None] // 8 % 7 * np.ones((1, 40, 40))).astype(np.uint8)
    table = scanner_phantom.CT_TISSUE_HU
    first, second = (scanner_phantom.tissue_intensity(np.random.default_rng(seed), tissue, table, 2.0)
                     for seed in (0, 1))
    for index, (nominal, subject_sd, texture_sd) in enumerate(table):
        values = first[tissue == index]
        assert abs(values.mean() - nominal) < 4 * subject_sd + texture_sd + 1e-3
        if texture_sd:
            assert 0.5 * texture_sd < values.std() < 1.5 * texture_sd
            assert values.mean() != second[tissue == index].mean()
        else:
            assert values.std() == 0


def test_thick_slices_average_their_sub_slices_and_take_the_majority_label():
    """Slice 1 spans z 2-6 mm, sampled at 2.5, 3.5, 4.5, 5.5 mm; the anatomy steps from 0 to 100
    (label 0 to 1) at z 3 mm, so 3 of its 4 sub-slices see 100: partial volume 75, label 1."""
    grid = scanner_phantom.ScanGrid((1, 1, 3), np.diag([1.0, 1.0, 4.0, 1.0]), subslices=4)
    z = -4.0 + 0.5 * np.arange(40)
    intensity = np.broadcast_to(np.where(z > 3.0, 100.0, 0.0), (3, 3, 40)).astype(np.float32)
    label = (intensity > 0).astype(np.uint8)
    to_world = scanner_phantom.homogeneous(0.5 * np.eye(3), (-0.5, -0.5, -4.0))
    image, labels = scanner_phantom.on_scan(grid, to_world, intensity, label, air=0.0)
    np.testing.assert_allclose(image[0, 0], [0.0, 75.0, 100.0], atol=1e-4)
    assert labels[0, 0].tolist() == [0, 1, 1]


def test_labels_hold_mmwhs_values_only_and_every_class(written):
    _, written_scans = written
    found = set()
    for scan in written_scans:
        if scan.label:
            values = set(np.unique(scans.read_scan(scan.label)[0]).tolist())
            assert values <= MMWHS_VALUES, scan.case
            found |= values
    assert found == MMWHS_VALUES


def read_all(written_scans):
    return {scan.case: [scans.read_scan(path)[0] for path in (scan.image, scan.label) if path]
            for scan in written_scans}


def test_same_seed_gives_the_same_arrays_another_seed_others(written, tmp_path):
    _, written_scans = written
    reference = read_all(written_scans)
    again = read_all(write(tmp_path / "again"))
    assert reference.keys() == again.keys()
    for case, arrays in reference.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, again[case])), case
    other = read_all(write(tmp_path / "seed1", seed=1))
    assert all(not np.array_equal(arrays[0], other[case][0]) for case, arrays in reference.items())


def test_a_subject_does_not_depend_on_the_other_counts(written):
    _, written_scans = written
    scan = next(s for s in written_scans if s.case == "ct_test_00")
    alone = scanner_phantom.scan_subject(0, "ct", "test", 0, VOXEL_SCALE)
    assert np.array_equal(alone.image, scans.read_scan(scan.image)[0])


def test_data_prep_folder_converts_it(written, tmp_path):
    root, _ = written
    report = folder.main(["--mr_dir", str(root / "mr"), "--ct_dir", str(root / "ct"), "--output_dir",
                          str(tmp_path / "out"), "--image_size", "32", "--spacing", "6"])
    splits = report["splits"]
    assert splits["ct_train"]["volumes"] == splits["ct_train"]["unlabelled_volumes"] == 3
    assert splits["mr_train"]["volumes"] == 4 and splits["mr_train"]["unlabelled_volumes"] == 0
    assert splits["mr_test"]["volumes"] == splits["ct_test"]["volumes"] == 1
    assert all(splits["mr_train"]["label_voxels"][name] > 0 for name in layout.CARDIAC_CLASSES[1:])


def test_phantom_as_raw_writes_scanner_scans_unless_told_centred(tmp_path):
    only_mr = [f"--{name}={int(name == 'mr_test')}" for name in phantom_anatomy.DEFAULT_COUNTS]
    phantom.main(["--as_raw", str(tmp_path / "scanner")] + only_mr)
    info = json.loads((tmp_path / "scanner" / "mr" / "dataset.json").read_text(encoding="utf-8"))
    assert info["provenance"]["generator"] == scanner_phantom.GENERATOR
    with pytest.raises(UsageError, match="--kind centred"):
        phantom.main(["--as_raw", str(tmp_path / "sized"), "--image_size=32"] + only_mr)
    test_only = [f"--{name}={int(name.endswith('_test'))}" for name in phantom_anatomy.DEFAULT_COUNTS]
    phantom.main(["--as_raw", str(tmp_path / "centred"), "--kind=centred", "--image_size=32"] + test_only)
    info = json.loads((tmp_path / "centred" / "mr" / "dataset.json").read_text(encoding="utf-8"))
    assert info["provenance"]["generator"] == phantom.GENERATOR
