"""The official record format: decoding the released samples, encoding, writing, three-slice stacks."""
import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.data import reader, records

# Label values of each released sample (its README); every one of them is 256 x 256 x 3.
SAMPLE_LABELS = {
    "training_ct": {0, 1, 3, 4, 5},
    "training_mr": {0, 1, 2, 3, 4, 5},
    "validation_ct": {0, 2, 5},
    "validation_mr": {0, 1, 2, 3, 5},
}
EXTRA_KEYS = {"mask_vol", "mask_scale", "bias_dim0", "bias_dim1", "bias_dim2"}


def only_record(path):
    """The serialized record of a one-record file (fails if the file holds another count)."""
    (raw,) = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    return raw


def raw_features(serialized):
    return tf.train.Example.FromString(serialized).features.feature


@pytest.mark.parametrize("name", sorted(SAMPLE_LABELS))
def test_decode_released_sample(sifa_samples, name):
    serialized = only_record(sifa_samples / f"{name}.tfrecords")
    assert EXTRA_KEYS <= set(raw_features(serialized))  # the decoder must cope with these
    image, label = records.decode_example_numpy(serialized)
    assert image.shape == label.shape == (256, 256, 3)
    assert image.dtype == label.dtype == np.float32
    assert np.all(np.isfinite(image))
    assert set(np.unique(label[:, :, 1]).astype(int)) == SAMPLE_LABELS[name]
    np.testing.assert_array_equal(label, np.round(label))
    # z-scored slices: neither constant nor raw scanner intensities
    assert 0.1 < image.std() < 10 and -5 < image.min() < image.max() < 5


@pytest.mark.parametrize("name", sorted(SAMPLE_LABELS))
def test_reencoded_sample_keeps_the_exact_bytes(sifa_samples, name):
    original = raw_features(only_record(sifa_samples / f"{name}.tfrecords"))
    image, label = records.decode_example_numpy(only_record(sifa_samples / f"{name}.tfrecords"))
    encoded = records.encode_example(image, label)
    assert encoded == records.encode_example(image.copy(), label.copy())  # deterministic
    again = raw_features(encoded)
    assert set(again) == {records.IMAGE_KEY, records.LABEL_KEY,
                          *records.IMAGE_SIZE_KEYS, *records.LABEL_SIZE_KEYS}
    for key in (records.IMAGE_KEY, records.LABEL_KEY):
        assert again[key].bytes_list.value[0] == original[key].bytes_list.value[0]
    for key in records.IMAGE_SIZE_KEYS + records.LABEL_SIZE_KEYS:
        assert again[key].int64_list.value == original[key].int64_list.value
    image_again, label_again = records.decode_example_numpy(encoded)
    np.testing.assert_array_equal(image_again, image)
    np.testing.assert_array_equal(label_again, label)


def test_encode_casts_to_float32_and_keeps_shape():
    image = np.arange(4 * 6 * 3, dtype=np.float64).reshape(4, 6, 3) / 7.0
    label = (np.arange(4 * 6 * 3).reshape(4, 6, 3) % 5).astype(np.int64)
    decoded_image, decoded_label = records.decode_example_numpy(records.encode_example(image, label))
    assert decoded_image.shape == (4, 6, 3) and decoded_image.dtype == np.float32
    np.testing.assert_array_equal(decoded_image, image.astype(np.float32))
    np.testing.assert_array_equal(decoded_label, label.astype(np.float32))
    # a different input gives different bytes
    assert records.encode_example(image, label) != records.encode_example(image + 1, label)


@pytest.mark.parametrize("image_shape, label_shape", [
    ((8, 8), (8, 8)),            # no slice axis
    ((8, 8, 2), (8, 8, 2)),      # two slices
    ((8, 8, 4), (8, 8, 4)),      # four slices
    ((8, 8, 3), (8, 4, 3)),      # label of another shape
])
def test_encode_rejects_bad_shapes(image_shape, label_shape):
    with pytest.raises(ValueError, match="H x W x 3"):
        records.encode_example(np.zeros(image_shape), np.zeros(label_shape))


def test_decode_reports_missing_keys():
    example = tf.train.Example(features=tf.train.Features(feature={
        records.LABEL_KEY: records._bytes(np.zeros(12, np.float32).tobytes())}))
    with pytest.raises(ValueError, match="data_vol.*dsize_dim0"):
        records.decode_example_numpy(example.SerializeToString())


@pytest.mark.parametrize("depth, index, expected", [
    (5, 2, [1, 2, 3]),
    (5, 0, [0, 0, 1]),   # first slice repeats as its own lower neighbour
    (5, 4, [3, 4, 4]),   # last slice repeats as its own upper neighbour
    (2, 0, [0, 0, 1]),
    (2, 1, [0, 1, 1]),
    (1, 0, [0, 0, 0]),
])
def test_three_slice_stack(depth, index, expected):
    volume = np.broadcast_to(np.arange(depth, dtype=np.float32), (4, 3, depth)).copy()
    volume[0, 0, :] += 100  # not a constant slice: the in-plane layout must be kept
    stack = records.three_slice_stack(volume, index)
    assert stack.shape == (4, 3, 3)
    np.testing.assert_array_equal(stack, volume[:, :, expected])


def test_written_records_read_back_exactly(tmp_path):
    """write_records -> make_dataset: middle slices, one-hot labels and the [-1, 1] mapping."""
    rng = np.random.default_rng(3)
    size, low, high = 8, -2.0, 6.0
    pairs = [(rng.uniform(low, high, (size, size, 3)).astype(np.float32),
              rng.integers(0, 6, (size, size, 3)).astype(np.float32)) for _ in range(3)]
    path = tmp_path / "small.tfrecords"
    assert records.write_records(path, pairs) == 3
    assert reader.check_record_framing(path) == 3
    dataset = reader.make_dataset([path], image_size=size, num_classes=5, intensity_range=(low, high),
                                  batch_size=1, shuffle=False, repeat=False, deterministic=True)
    batches = [(image.numpy(), onehot.numpy()) for image, onehot in dataset]
    assert len(batches) == 3
    for (image, onehot), (want_image, want_label) in zip(batches, pairs):
        assert image.shape == (1, size, size, 1) and onehot.shape == (1, size, size, 5)
        expected = 2 * (want_image[:, :, 1] - low) / (high - low) - 1
        np.testing.assert_allclose(image[0, :, :, 0], expected, rtol=0, atol=1e-6)
        label = want_label[:, :, 1].astype(int)
        expected_onehot = (label[:, :, None] == np.arange(5)).astype(np.float32)
        np.testing.assert_array_equal(onehot[0], expected_onehot)
        assert np.any(label == 5)  # SIFA's "no class" value: its rows must be all zero, and it occurs
