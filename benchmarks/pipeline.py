"""Slices per second that the tf.data reader delivers from phantom tfrecords."""
import time

from data_prep.phantom import generate_phantom
from sifa_synthmix.data import layout, reader

# A few training subjects of one modality are enough to fill the shuffle buffer and repeat.
PHANTOM_COUNTS = {"mr_train": 3, "ct_train": 0, "mr_val": 0, "ct_val": 0, "mr_test": 0, "ct_test": 0}
MODALITY = "mr"


def make_phantom(root, image_size):
    """Writes a small MR phantom under `root`; returns its folder and the seconds it took."""
    start = time.perf_counter()
    folder = root / f"phantom{image_size}"
    generate_phantom(folder, image_size=image_size, seed=0, counts=PHANTOM_COUNTS)
    return folder, time.perf_counter() - start


def reader_rate(data_dir, image_size, batch_size, batches=200, warmup=20, num_classes=5):
    """Slices per second of `reader.make_dataset` (shuffling, repeating) after `warmup` batches."""
    data = layout.PreparedLayout(data_dir)
    paths = reader.resolve_record_paths(str(data.datalist(MODALITY, "train")))
    intensity_range = reader.load_intensity_range(data.stats_path, MODALITY)
    dataset = reader.make_dataset(paths, image_size=image_size, num_classes=num_classes,
                                  intensity_range=intensity_range, batch_size=batch_size, seed=0)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(iterator)
    float(images[0, 0, 0, 0])
    return batches * batch_size / (time.perf_counter() - start)
