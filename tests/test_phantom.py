"""The cardiac phantom: layout, record contents, stats, determinism, CLI and the domain gap."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_prep import phantom, phantom_anatomy as anatomy
from sifa_synthmix.data import layout, records
from sifa_synthmix.data.preprocessing import clip_and_standardise

IMAGE_SIZE = 32
DEPTH = phantom.default_depth(IMAGE_SIZE)
SMALL_COUNTS = {"mr_train": 2, "ct_train": 2, "mr_val": 1, "ct_val": 1, "mr_test": 1, "ct_test": 1}
REPO = pathlib.Path(__file__).resolve().parents[1]


def generate(path, seed=0):
    phantom.generate_phantom(path, image_size=IMAGE_SIZE, seed=seed, counts=SMALL_COUNTS)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("phantom") / "seed0")


def record_arrays(paths):
    """Every (image, label) pair in the given tfrecord files."""
    return [records.decode_example_numpy(raw) for path in paths
            for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def file_contents(root):
    """Relative path -> bytes of every file below `root`. (np.savez_compressed is byte-stable:
    zipfile stamps members opened for writing with 1980-01-01, not the current time.)"""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_files_exist(dataset):
    prepared = layout.PreparedLayout(dataset)
    for modality in layout.MODALITIES:
        for split in layout.RECORD_SPLITS:
            assert list(prepared.records_dir(modality, split).glob("*.tfrecords"))
            assert prepared.datalist(modality, split).is_file()
        assert len(prepared.test_volumes(modality)) == SMALL_COUNTS[f"{modality}_test"]
    for name in ("stats.json", "dataset.json", "preview.png"):
        assert (dataset / name).is_file()
    assert not list(dataset.parent.glob("*.partial-*"))


def test_dataset_json(dataset):
    info = layout.PreparedLayout(dataset).read_info()
    assert info["class_names"] == list(layout.CARDIAC_CLASSES)
    assert info["flip_test_volumes"] is False
    assert info["image_size"] == IMAGE_SIZE
    assert info["provenance"] == {"generator": "data_prep.phantom", "seed": 0, "image_size": IMAGE_SIZE,
                                  "depth": DEPTH}


def test_test_volumes_have_an_axial_geometry_that_matches_the_drawing(dataset):
    """Rows toward the back, columns toward the patient's left, slices toward the head, in the
    phantom's own millimetres: voxel (i, j, k) sits at (-column, -row, slice) x BODY_UNIT_MM."""
    info = layout.PreparedLayout(dataset).read_info()
    geometry = info["test_geometry"]["ct/ct_test_00"]
    assert geometry["orientation"] == "PLS"
    affine = np.asarray(geometry["affine"])
    assert np.allclose(np.linalg.norm(affine[:3, :3], axis=0), info["test_spacing"]["ct/ct_test_00"])
    rows, columns, slices = phantom.voxel_grid(IMAGE_SIZE, DEPTH)
    for i, j, k in ((0, 0, 0), (3, 20, 9), (31, 31, 15)):
        world = affine @ [i, j, k, 1]
        body = np.array([-columns[0, j, 0], -rows[i, 0, 0], slices[0, 0, k]]) * anatomy.BODY_UNIT_MM
        np.testing.assert_allclose(world[:3], body, atol=1e-3)


@pytest.mark.parametrize("modality", layout.MODALITIES)
def test_records_hold_three_slices_and_every_class(dataset, modality):
    prepared = layout.PreparedLayout(dataset)
    lists = [prepared.datalist(modality, split) for split in layout.RECORD_SPLITS]
    paths = [lst.parent / line for lst in lists for line in lst.read_text(encoding="utf-8").split()]
    pairs = record_arrays(paths)
    assert pairs
    for image, label in pairs:
        assert image.shape == label.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
    train = record_arrays(prepared.records_dir(modality, "train").glob("*.tfrecords"))
    assert set(np.unique([label for _, label in train])) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("modality", layout.MODALITIES)
def test_test_volumes(dataset, modality):
    for path in layout.PreparedLayout(dataset).test_volumes(modality):
        volume = np.load(path)
        assert volume["arr_0"].dtype == np.float32
        assert volume["arr_0"].shape == (IMAGE_SIZE, IMAGE_SIZE, DEPTH)
        assert np.issubdtype(volume["arr_1"].dtype, np.integer)
        assert volume["arr_1"].shape == volume["arr_0"].shape
        assert set(np.unique(volume["arr_1"])) == {0, 1, 2, 3, 4}


def test_stats_are_the_range_of_the_training_records(dataset):
    stats = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
    for modality in layout.MODALITIES:
        images = [image for image, _ in record_arrays(
            layout.PreparedLayout(dataset).records_dir(modality, "train").glob("*.tfrecords"))]
        assert stats[modality] == {"min": float(np.min(images)), "max": float(np.max(images))}


def test_same_seed_gives_the_same_files_and_another_seed_other_files(dataset, tmp_path):
    assert file_contents(generate(tmp_path / "again")) == file_contents(dataset)
    other = file_contents(generate(tmp_path / "seed1", seed=1))
    assert other.keys() == file_contents(dataset).keys()
    assert other["stats.json"] != file_contents(dataset)["stats.json"]


def test_cli_writes_the_same_data_set(dataset, tmp_path):
    counts = [f"--{name}={count}" for name, count in SMALL_COUNTS.items()]
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.phantom", f"--output_dir={tmp_path / 'cli'}",
         f"--image_size={IMAGE_SIZE}", "--seed=0"] + counts,
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert file_contents(tmp_path / "cli") == file_contents(dataset)


def test_refuses_a_non_empty_folder(dataset):
    with pytest.raises(FileExistsError):
        generate(dataset)


def test_ensure_phantom_reuses_a_matching_data_set_only(dataset):
    stats = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
    assert phantom.ensure_phantom(dataset, image_size=IMAGE_SIZE, seed=0) == stats
    with pytest.raises(ValueError):
        phantom.ensure_phantom(dataset, image_size=64, seed=0)


def tissue_means(modality, seed=0):
    """Mean preprocessed intensity per tissue of one subject rendered in `modality`."""
    rng = anatomy.subject_rng(seed, modality, "train", 0)
    tissue, _ = anatomy.draw_anatomy(rng, phantom.voxel_grid(IMAGE_SIZE, DEPTH))
    image = clip_and_standardise(phantom.RENDERERS[modality](rng, tissue))
    return {t: image[tissue == t].mean() for t in (anatomy.FAT, anatomy.MYOCARDIUM, anatomy.BONE)}


def test_myocardium_fat_and_bone_swap_order_between_modalities():
    mr, ct = tissue_means("mr"), tissue_means("ct")
    assert mr[anatomy.FAT] > mr[anatomy.MYOCARDIUM] > mr[anatomy.BONE]
    assert ct[anatomy.BONE] > ct[anatomy.MYOCARDIUM] > ct[anatomy.FAT]


def test_unlabelled_blood_pools_look_like_labelled_ones():
    tissue, label = anatomy.draw_anatomy(np.random.default_rng(0), phantom.voxel_grid(IMAGE_SIZE, DEPTH))
    blood = tissue == anatomy.BLOOD
    assert 0.3 < np.mean(label[blood] == anatomy.BACKGROUND) < 0.8
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}


def test_mr_and_ct_subjects_are_different_people():
    grid = phantom.voxel_grid(IMAGE_SIZE, DEPTH)
    mr, ct = (anatomy.draw_anatomy(anatomy.subject_rng(0, m, "train", 0), grid)[1] for m in ("mr", "ct"))
    assert not np.array_equal(mr, ct)
