"""The official SIFA tfrecord layout: one tf.train.Example per record.

`data_vol` and `label_vol` hold raw float32 bytes of shape H x W x 3 (three adjacent slices);
`dsize_dim0..2` / `lsize_dim0..2` hold their shapes as int64. The network reads only the middle
slice of both. Released records carry extra keys (`mask_vol`, `bias_dim0..2`, `mask_scale`);
the reader ignores them.
"""
import numpy as np
import tensorflow as tf

IMAGE_KEY = "data_vol"
LABEL_KEY = "label_vol"
IMAGE_SIZE_KEYS = ("dsize_dim0", "dsize_dim1", "dsize_dim2")
LABEL_SIZE_KEYS = ("lsize_dim0", "lsize_dim1", "lsize_dim2")
SLICES_PER_RECORD = 3


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode_example(image, label):
    """Serialises one record. `image` and `label` are H x W x 3 arrays (cast to float32)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    label = np.ascontiguousarray(label, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != SLICES_PER_RECORD or image.shape != label.shape:
        raise ValueError(
            f"a record holds H x W x {SLICES_PER_RECORD} image and label arrays of one shape, "
            f"got image {image.shape} and label {label.shape}")
    feature = {IMAGE_KEY: _bytes(image.tobytes()), LABEL_KEY: _bytes(label.tobytes())}
    for keys, shape in ((IMAGE_SIZE_KEYS, image.shape), (LABEL_SIZE_KEYS, label.shape)):
        feature.update({key: _int64(dim) for key, dim in zip(keys, shape)})
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def write_records(path, pairs):
    """Writes (image, label) pairs, each H x W x 3, to one tfrecord file; returns the count."""
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in pairs:
            writer.write(encode_example(image, label))
            count += 1
    return count


def three_slice_stack(volume, index):
    """Slices index-1, index, index+1 of an H x W x D volume (edges repeated) as H x W x 3."""
    depth = volume.shape[2]
    picks = [min(max(index + offset, 0), depth - 1) for offset in (-1, 0, 1)]
    return np.stack([volume[:, :, i] for i in picks], axis=2)


def decode_example_numpy(serialized):
    """Parses one record in Python: returns (image, label), both H x W x 3 float32."""
    features = tf.train.Example.FromString(serialized).features.feature
    arrays = []
    for key, size_keys in ((IMAGE_KEY, IMAGE_SIZE_KEYS), (LABEL_KEY, LABEL_SIZE_KEYS)):
        missing = [k for k in (key,) + size_keys if k not in features]
        if missing:
            raise ValueError(f"record lacks the key(s) {', '.join(missing)}")
        shape = [features[k].int64_list.value[0] for k in size_keys]
        arrays.append(np.frombuffer(features[key].bytes_list.value[0], np.float32).reshape(shape))
    return arrays[0], arrays[1]
