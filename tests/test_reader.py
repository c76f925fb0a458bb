"""The tf.data reader: released samples, datalists and globs, errors naming the file, determinism."""
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.data import reader, records

SIFA_RANGES = {"mr": (-1.8, 4.4), "ct": (-2.8, 3.2)}
SAMPLE_LABELS = {
    "training_ct": {0, 1, 3, 4, 5},
    "training_mr": {0, 1, 2, 3, 4, 5},
    "validation_ct": {0, 2, 5},
    "validation_mr": {0, 1, 2, 3, 5},
}
SMALL = 8  # image size of the records the tests write themselves


def read_all(paths, image_size=SMALL, intensity_range=(-1.0, 1.0), **options):
    settings = dict(image_size=image_size, num_classes=5, intensity_range=intensity_range,
                    batch_size=1, shuffle=False, repeat=False, deterministic=True)
    settings.update(options)
    return [(image.numpy(), onehot.numpy())
            for image, onehot in reader.make_dataset([str(p) for p in paths], **settings)]


def write_small(path, values):
    """One SMALL x SMALL record per value: the image filled with it, labels 0."""
    pairs = [(np.full((SMALL, SMALL, 3), v, np.float32), np.zeros((SMALL, SMALL, 3), np.float32))
             for v in values]
    records.write_records(path, pairs)
    return path


def write_features(path, features):
    """One record holding exactly `features` (a key -> tf.train.Feature dict)."""
    example = tf.train.Example(features=tf.train.Features(feature=features))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example.SerializeToString())
    return path


# ---------------------------------------------------------------- released samples


@pytest.mark.parametrize("name", sorted(SAMPLE_LABELS))
def test_released_sample_through_the_reader(sifa_samples, name):
    path = sifa_samples / f"{name}.tfrecords"
    (serialized,) = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    raw_image, raw_label = records.decode_example_numpy(serialized)
    low, high = SIFA_RANGES[name[-2:]]
    ((image, onehot),) = read_all([path], image_size=256, intensity_range=(low, high))
    assert image.shape == (1, 256, 256, 1) and image.dtype == np.float32
    assert onehot.shape == (1, 256, 256, 5) and onehot.dtype == np.float32

    expected = 2.0 * (raw_image[:, :, 1] - low) / (high - low) - 1.0
    np.testing.assert_allclose(image[0, :, :, 0], expected, rtol=0, atol=1e-5)

    label = raw_label[:, :, 1].astype(int)
    rows = onehot[0].sum(axis=-1)
    assert set(np.unique(onehot[0])) == {0.0, 1.0}
    is_five = label == 5
    assert is_five.sum() > 0
    assert np.array_equal(rows == 0, is_five)  # exactly the label-5 pixels have zero rows
    classes = np.argmax(onehot[0], axis=-1)
    np.testing.assert_array_equal(classes[~is_five], label[~is_five])
    assert set(np.unique(classes[~is_five])) | {5} == SAMPLE_LABELS[name]


# ---------------------------------------------------------------- datalists, globs, paths


@pytest.fixture
def record_dir(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write_small(folder / f"{name}.tfrecords", [0.0])
    return folder


def test_datalist_relative_to_its_folder_not_the_cwd(record_dir, tmp_path, monkeypatch):
    lists = tmp_path / "lists"
    lists.mkdir()
    absolute = record_dir / "c.tfrecords"
    (lists / "train.txt").write_text(
        "# a comment\n\n../records/b.tfrecords\n   \n  ../records/a.tfrecords  \n"
        f"#../records/c.tfrecords\n{absolute}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    paths = reader.resolve_record_paths(str(lists / "train.txt"))
    assert [p.split("/")[-1] for p in paths] == ["b.tfrecords", "a.tfrecords", "c.tfrecords"]
    assert all(tf.io.gfile.exists(p) for p in paths)
    assert len(read_all(paths)) == 3


def test_glob_comma_list_and_direct_path(record_dir, monkeypatch):
    monkeypatch.chdir(record_dir.parent)
    assert reader.resolve_record_paths(str(record_dir / "*.tfrecords")) == [
        str(record_dir / f"{n}.tfrecords") for n in ("a", "b", "c")]
    assert reader.resolve_record_paths("records/c.tfrecords") == ["records/c.tfrecords"]
    assert reader.resolve_record_paths(" records/c.tfrecords , records/[ab].tfrecords,") == [
        "records/c.tfrecords", "records/a.tfrecords", "records/b.tfrecords"]
    assert reader.resolve_record_paths(["records/b.tfrecords", "records/a*"]) == [
        "records/b.tfrecords", "records/a.tfrecords"]


def test_a_glob_inside_a_folder_named_like_a_pattern(record_dir, tmp_path):
    folder = shutil.copytree(record_dir, tmp_path / "data [1]*")
    assert reader.resolve_record_paths(str(folder / "[ab].tfrecords")) == [
        str(folder / f"{n}.tfrecords") for n in ("a", "b")]


def test_datalist_errors(record_dir, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(reader.DataError, match=f"{missing}: the datalist does not exist"):
        reader.resolve_record_paths(str(missing))
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n   \n")
    with pytest.raises(reader.DataError, match=f"{empty}: the datalist is empty"):
        reader.resolve_record_paths(str(empty))
    bad = tmp_path / "bad.txt"
    bad.write_text("records/a.tfrecords\nrecords/gone.tfrecords\n")
    with pytest.raises(reader.DataError,
                       match=f"{bad}: entry 2 \\(records/gone.tfrecords\\) does not exist"):
        reader.resolve_record_paths(str(bad))
    pattern = str(record_dir / "*.nothing")
    with pytest.raises(reader.DataError, match="matches no file") as caught:
        reader.resolve_record_paths(pattern)
    assert pattern in str(caught.value)
    with pytest.raises(reader.DataError, match="gone.tfrecords: the record file does not exist"):
        reader.resolve_record_paths(str(record_dir / "gone.tfrecords"))
    with pytest.raises(reader.DataError, match="no record source"):
        reader.resolve_record_paths(" , ")
    with pytest.raises(reader.DataError, match="no record files"):
        reader.make_dataset([], image_size=SMALL, num_classes=5, intensity_range=(0, 1), batch_size=1)


# ---------------------------------------------------------------- broken record files


@pytest.mark.parametrize("cut", [1, 4, 30, "into second header"])
def test_truncated_file_names_the_file(tmp_path, cut):
    path = write_small(tmp_path / "two.tfrecords", [1.0, 2.0])
    data = path.read_bytes()
    assert reader.check_record_framing(path) == 2
    # "into second header": keep the first record and 5 bytes of the second one's 12-byte header
    keep = len(data) // 2 + 5 if cut == "into second header" else len(data) - cut
    path.write_bytes(data[:keep])
    with pytest.raises(reader.DataError, match="truncated") as caught:
        reader.check_record_framing(path)
    assert str(path) in str(caught.value)
    with pytest.raises(reader.DataError, match="truncated") as caught:
        reader.make_dataset([str(path)], image_size=SMALL, num_classes=5, intensity_range=(0, 1),
                            batch_size=1)
    assert str(path) in str(caught.value)


def test_empty_record_file(tmp_path):
    path = tmp_path / "empty.tfrecords"
    path.write_bytes(b"")
    with pytest.raises(reader.DataError, match=f"{path}: the record file is empty"):
        reader.make_dataset([str(path)], image_size=SMALL, num_classes=5, intensity_range=(0, 1),
                            batch_size=1)


def small_features(**replace):
    """The features of a valid SMALL record, with some replaced (None drops a key)."""
    zeros = np.zeros((SMALL, SMALL, 3), np.float32).tobytes()
    features = {records.IMAGE_KEY: records._bytes(zeros), records.LABEL_KEY: records._bytes(zeros)}
    for key, dim in zip(records.IMAGE_SIZE_KEYS + records.LABEL_SIZE_KEYS, (SMALL, SMALL, 3) * 2):
        features[key] = records._int64(dim)
    features.update(replace)
    return {key: value for key, value in features.items() if value is not None}


@pytest.mark.parametrize("features, reason", [
    (small_features(data_vol=None), "record lacks the key data_vol"),
    (small_features(label_vol=None), "record lacks the key label_vol"),
    (small_features(data_vol=records._bytes(b"\0" * (SMALL * SMALL * 2 * 4))),
     f"data_vol should hold {SMALL * SMALL * 3 * 4} bytes ({SMALL}x{SMALL}x3 float32); "
     f"it holds {SMALL * SMALL * 2 * 4}"),
    (small_features(lsize_dim2=None),
     "record lacks a size key of label_vol (lsize_dim0, lsize_dim1, lsize_dim2)"),
    (small_features(data_vol=records._bytes(np.full((SMALL, SMALL, 3), np.nan, np.float32).tobytes())),
     "data_vol holds NaN or infinite values"),
], ids=["no data_vol", "no label_vol", "wrong size", "no size key", "NaN image"])
def test_bad_record_becomes_data_error(tmp_path, features, reason):
    good = write_small(tmp_path / "good.tfrecords", [0.5])
    bad = write_features(tmp_path / "bad.tfrecords", features)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        read_all([good, bad])
    error = reader.as_data_error(caught.value)
    assert isinstance(error, reader.DataError)
    assert str(error) == f"{bad}: {reason}"


def test_as_data_error_of_other_errors():
    assert reader.as_data_error(tf.errors.InvalidArgumentError(None, None, "shape mismatch")) is None
    assert reader.as_data_error(ValueError("something else")) is None
    corrupt = reader.as_data_error(tf.errors.DataLossError(None, None, "corrupted record at 12\nmore"))
    assert isinstance(corrupt, reader.DataError)
    assert str(corrupt) == "a record file is corrupt: corrupted record at 12"


def test_as_data_error_with_brackets_in_the_path(tmp_path):
    folder = tmp_path / "run[1]"
    folder.mkdir()
    bad = write_features(folder / "bad.tfrecords", small_features(data_vol=None))
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        read_all([bad])
    assert str(reader.as_data_error(caught.value)) == f"{bad}: record lacks the key data_vol"


# ---------------------------------------------------------------- intensity statistics


def test_load_intensity_range(tmp_path):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"mr": {"min": -1.5, "max": 2}, "ct": {"min": 3, "max": 3},
                                 "xx": {"min": 4, "max": 1}}))
    assert reader.load_intensity_range(stats, "mr") == (-1.5, 2.0)
    for modality in ("ct", "xx"):
        with pytest.raises(reader.DataError, match=f"{stats}: {modality} max .* must exceed min"):
            reader.load_intensity_range(stats, modality)
    with pytest.raises(reader.DataError, match=f"{stats}: no statistics for modality 'pet'"):
        reader.load_intensity_range(stats, "pet")
    missing = tmp_path / "none.json"
    with pytest.raises(reader.DataError, match=f"{missing}: the stats file does not exist"):
        reader.load_intensity_range(missing, "mr")
    stats.write_text("{not json")
    with pytest.raises(reader.DataError, match=f"{stats}: not valid JSON"):
        reader.load_intensity_range(stats, "mr")


# ---------------------------------------------------------------- determinism


def shuffled_values(paths, seed):
    batches = read_all(paths, shuffle=True, seed=seed, batch_size=2, shuffle_buffer=8)
    return [tuple(image[:, 0, 0, 0].round(3)) for image, _ in batches]


def test_seeded_shuffle_is_reproducible(tmp_path):
    values = np.arange(24, dtype=np.float32) / 24  # within the (-1, 1) range read_all maps from
    paths = [write_small(tmp_path / f"{i}.tfrecords", values[i::3]) for i in range(3)]
    first = shuffled_values(paths, 7)
    assert first == shuffled_values(paths, 7)
    assert sorted(v for batch in first for v in batch) == sorted(values.round(3))  # each once
    assert first != shuffled_values(paths, 8)
    unshuffled = [tuple(image[:, 0, 0, 0].round(3)) for image, _ in read_all(paths, batch_size=2)]
    assert first != unshuffled


def test_endless_datasets_run_without_tf_datas_autotuning_thread(tmp_path):
    """Deleting an endless iterator with that thread could block for up to 60 s (reader.py says why)."""
    path = tmp_path / "slices.tfrecord"
    write_small(path, [0.0, 1.0])
    settings = dict(image_size=SMALL, num_classes=5, intensity_range=(0, 1), batch_size=1)
    assert reader.make_dataset([str(path)], **settings).options().autotune.enabled is False
    assert reader.make_dataset([str(path)], repeat=False, **settings).options().autotune.enabled is True


def test_shift_slice_moves_image_and_label_together_and_fills_with_minimum_and_background():
    rng = np.random.default_rng(0)
    image = rng.uniform(1.0, 2.0, (6, 7, 1)).astype(np.float32)
    label = rng.integers(1, 5, (6, 7)).astype(np.uint8)
    for offset in ([2, -3], [-1, 0], [0, 3]):
        shifted_image, shifted_label = (t.numpy() for t in reader.shift_slice(
            tf.constant(image), tf.constant(label), tf.constant(offset), 3))
        want_image = np.full_like(image, image.min())
        want_label = np.zeros_like(label)
        rows, cols = offset
        target = (slice(max(rows, 0), 6 + min(rows, 0)), slice(max(cols, 0), 7 + min(cols, 0)))
        source = (slice(max(-rows, 0), 6 + min(-rows, 0)), slice(max(-cols, 0), 7 + min(-cols, 0)))
        want_image[target] = image[source]
        want_label[target] = label[source]
        np.testing.assert_array_equal(shifted_image, want_image)
        np.testing.assert_array_equal(shifted_label, want_label)


def test_random_shift_is_seeded_varies_per_slice_and_keeps_labels_on_their_pixels(tmp_path):
    """Label k sits where the image holds k (the record's pairing) before and after the shift."""
    size, count = 16, 12
    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(count):
        label = np.zeros((size, size, 3), np.float32)
        row, col = rng.integers(5, 9, 2)
        label[row:row + 4, col:col + 4] = rng.integers(1, 5)
        pairs.append((label + 1.0, label))
    path = tmp_path / "blocks.tfrecords"
    records.write_records(path, pairs)

    def read(seed, max_shift):
        return read_all([path], image_size=size, intensity_range=(1.0, 5.0), shuffle=True, seed=seed,
                        max_shift=max_shift)
    plain, shifted = read(5, 0), read(5, 4)
    assert len(shifted) == count
    moved = 0
    for (image, onehot), (plain_image, _) in zip(shifted, plain):
        label = onehot[0].argmax(-1) * onehot[0].max(-1)
        np.testing.assert_array_equal(np.round((image[0, :, :, 0] + 1) * 2), label)  # (1..5) -> [-1, 1]
        assert (label > 0).sum() == 16  # the block moved at most 4 px from rows/cols 5-12: still whole
        moved += not np.array_equal(image, plain_image)
    assert moved >= count - 2  # offsets are drawn per slice; an offset of (0, 0) is 1 in 81
    np.testing.assert_array_equal(np.stack([i for i, _ in read(5, 4)]), np.stack([i for i, _ in shifted]))
