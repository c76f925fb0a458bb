"""Slices per second that the tf.data reader delivers from phantom tfrecords, and the time the
training start's check of every record takes (reader.check_records).

    python -m benchmarks.pipeline [--size 256]   (writes a small phantom to a temporary folder)
"""
import argparse
import pathlib
import tempfile
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


def record_check_seconds(data_dir, image_size, num_classes=5):
    """(records, seconds) of reader.check_records over the phantom's training record files."""
    data = layout.PreparedLayout(data_dir)
    paths = reader.resolve_record_paths(str(data.datalist(MODALITY, "train")))
    start = time.perf_counter()
    count = sum(reader.check_records(path, image_size, num_classes) for path in paths)
    return count, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        folder, _ = make_phantom(pathlib.Path(root), args.size)
        count, seconds = record_check_seconds(folder, args.size)
        print(f"{args.size} px: checking {count} records took {seconds:.2f} s, "
              f"{1000 * seconds / count:.2f} ms per record")
        print(f"reader: {reader_rate(folder, args.size, batch_size=8):.0f} slices/s (batch 8)")


if __name__ == "__main__":
    main()
