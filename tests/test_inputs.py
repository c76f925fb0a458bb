"""inputs.py on a small phantom folder: finding lists and stats, overrides, checks, training batches."""
import json

import numpy as np
import pytest

from data_prep import phantom
from sifa_synthmix.config import DataConfig, ModelConfig, RuntimeConfig, TrainConfig
from sifa_synthmix.data import inputs
from sifa_synthmix.data.reader import DataError

IMAGE_SIZE = 32
# No MR validation subject, so a run with target MR has no validation list.
COUNTS = {"mr_train": 1, "ct_train": 1, "mr_val": 0, "ct_val": 1, "mr_test": 0, "ct_test": 0}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs") / "phantom"
    phantom.generate_phantom(root, image_size=IMAGE_SIZE, seed=0, counts=COUNTS)
    return root


def data_config(root, **changes):
    settings = dict(data_dir=str(root), source_modality="mr", target_modality="ct")
    return DataConfig(**{**settings, **changes})


def train_config(data, image_size=IMAGE_SIZE, num_classes=5, batch_size=2):
    return TrainConfig(model=ModelConfig(image_size=image_size, num_classes=num_classes), data=data,
                       batch_size=batch_size, seed=3, runtime=RuntimeConfig(deterministic=True))


def stats_of(root):
    stats = json.loads((root / "stats.json").read_text(encoding="utf-8"))
    return {m: (v["min"], v["max"]) for m, v in stats.items()}


def test_resolve_finds_lists_and_stats(prepared):
    resolved = inputs.resolve_data(data_config(prepared))
    assert resolved.source_train == [str(prepared / "mr/train/mr_train_00.tfrecords")]
    assert resolved.target_train == [str(prepared / "ct/train/ct_train_00.tfrecords")]
    assert resolved.target_val == [str(prepared / "ct/val/ct_val_00.tfrecords")]
    ranges = stats_of(prepared)
    assert resolved.source_range == ranges["mr"] and resolved.target_range == ranges["ct"]
    assert ranges["mr"] != ranges["ct"]  # so a swap of the two would show
    assert resolved.info["image_size"] == IMAGE_SIZE and resolved.info["num_classes"] == 5

    swapped = inputs.resolve_data(data_config(prepared, source_modality="ct", target_modality="mr"))
    assert swapped.source_range == ranges["ct"] and swapped.target_range == ranges["mr"]
    assert swapped.target_val == []  # the MR validation list is optional and absent


def test_explicit_lists_and_ranges_win(prepared, tmp_path):
    ct_record = str(prepared / "ct" / "train" / "ct_train_00.tfrecords")
    mr_record = str(prepared / "mr" / "train" / "mr_train_00.tfrecords")
    resolved = inputs.resolve_data(data_config(
        prepared, source_train_list=ct_record, target_train_list=f"{mr_record},{ct_record}",
        target_val_list=mr_record, source_range=(-3, 5), target_range=(-0.5, 0.5)))
    assert resolved.source_train == [ct_record]
    assert resolved.target_train == [mr_record, ct_record]
    assert resolved.target_val == [mr_record]
    assert resolved.source_range == (-3.0, 5.0) and resolved.target_range == (-0.5, 0.5)

    # explicit lists need no data folder; an explicit stats file replaces DIR/stats.json
    stats = tmp_path / "mine.json"
    stats.write_text(json.dumps({"mr": {"min": -9, "max": 9}, "ct": {"min": -7, "max": 7}}))
    resolved = inputs.resolve_data(data_config(
        tmp_path / "absent", source_train_list=mr_record, target_train_list=ct_record,
        stats_file=str(stats)))
    assert (resolved.source_range, resolved.target_range) == ((-9.0, 9.0), (-7.0, 7.0))
    assert resolved.target_val == [] and resolved.info == {}


def test_missing_data_dir_explains_how_to_prepare(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(DataError) as caught:
        inputs.resolve_data(data_config(absent))
    message = str(caught.value)
    assert f"{absent}: the data folder does not exist" in message
    assert "data_prep" in message and "demo" in message


@pytest.mark.parametrize("changes, message", [
    ({}, "mr_train.txt: the datalist does not exist"),
    ({"source_modality": "pet"}, "unknown modality 'pet'"),
    ({"source_train_list": "x.tfrecords", "target_train_list": "y.tfrecords"},
     "x.tfrecords: the record file does not exist"),
])
def test_resolve_errors(tmp_path, changes, message):
    with pytest.raises(DataError, match=message):
        inputs.resolve_data(data_config(tmp_path, **changes))


def test_bad_explicit_range(prepared):
    with pytest.raises(DataError, match=r"intensity range for ct: max \(1.0\) must exceed min \(2.0\)"):
        inputs.resolve_data(data_config(prepared, target_range=(2, 1)))


@pytest.mark.parametrize("image_size, num_classes, message", [
    (64, 5, "32 x 32 slices but --image_size is 64"),
    (IMAGE_SIZE, 4, "5 classes but --num_classes is 4"),
])
def test_model_must_match_the_data(prepared, image_size, num_classes, message):
    cfg = train_config(data_config(prepared), image_size=image_size, num_classes=num_classes)
    with pytest.raises(DataError, match=message):
        inputs.build_training_datasets(cfg, inputs.resolve_data(cfg.data))


def build(cfg):
    return inputs.build_training_datasets(cfg, inputs.resolve_data(cfg.data))


def test_training_batches(prepared):
    cfg = train_config(data_config(prepared), batch_size=3)
    source, target, val = build(cfg)
    assert val is not None
    # the same config gives the same batches (compared on first iterations of fresh pipelines)
    again, _, _ = build(cfg)
    for (first, _), (second, _) in zip(source.take(3), again.take(3)):
        np.testing.assert_array_equal(first.numpy(), second.numpy())
    for dataset in (source, target, val):
        image, onehot = next(iter(dataset))
        assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 1)
        assert onehot.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 5)
        onehot = onehot.numpy()
        assert set(np.unique(onehot)) <= {0.0, 1.0}
        np.testing.assert_array_equal(onehot.sum(axis=-1), 1.0)  # phantom labels are all < 5
        assert onehot[..., 1:].sum() > 0  # some foreground
    # the stats are the training min/max: training images lie within [-1, 1] and span most of it;
    # 10 batches of 3 outnumber the 13-14 records of a training file, so this also shows repetition
    for dataset in (source, target):
        images = np.concatenate([image.numpy() for image, _ in dataset.take(10)])
        assert images.shape[0] == 30
        assert images.min() >= -1 - 1e-5 and images.max() <= 1 + 1e-5
        assert images.max() - images.min() > 1.0
