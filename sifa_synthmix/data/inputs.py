"""Turns a DataConfig into record lists, intensity ranges and `tf.data` pipelines for training."""
import dataclasses
import pathlib

from sifa_synthmix.config import not_a_folder_reason
from sifa_synthmix.data import layout as layout_lib
from sifa_synthmix.data import reader
from sifa_synthmix.data.reader import DataError

HOW_TO_PREPARE = (
    "Prepare it with data_prep (python -m data_prep.mmwhs --raw_dir RAW --output_dir DIR, see "
    "docs/paper.md; your own scans: python -m data_prep.folder, docs/own_data.md), or run the phantom demo "
    "instead: python main.py --flagfile=configs/demo.flags")


@dataclasses.dataclass(frozen=True)
class ResolvedData:
    source_train: list
    target_train: list
    target_val: list
    source_range: tuple
    target_range: tuple
    info: dict
    source_unlabelled: int = 0  # training record files dataset.json lists as unlabelled
    target_unlabelled: int = 0


def _range_for(explicit, stats_path, modality):
    if explicit:
        low, high = (float(v) for v in explicit)
        return reader.check_range(low, high, f"intensity range for {modality}:")
    return reader.load_intensity_range(stats_path, modality)


def resolve_data(cfg):
    """Finds the record lists and intensity ranges of a run; explicit settings win over data_dir."""
    for modality in (cfg.source_modality, cfg.target_modality):
        if modality not in layout_lib.MODALITIES:
            raise DataError(f"unknown modality {modality!r}; expected one of {layout_lib.MODALITIES}")
    layout = layout_lib.PreparedLayout(cfg.data_dir)
    explicit_lists = cfg.source_train_list and cfg.target_train_list
    if not explicit_lists and not layout.root.is_dir():
        reason = not_a_folder_reason(layout.root, "--data_dir") or "the data folder does not exist"
        raise DataError(f"{layout.root}: {reason}. {HOW_TO_PREPARE}")
    info = layout.read_info() if layout.info_path.is_file() else {}

    def pick(explicit, modality, split, required=True):
        if explicit:
            return reader.resolve_record_paths(explicit)
        path = layout.datalist(modality, split)
        if not path.is_file():
            if required:
                raise DataError(f"{path}: the datalist does not exist. {HOW_TO_PREPARE}")
            return []
        return reader.resolve_record_paths(str(path))

    stats_path = pathlib.Path(cfg.stats_file) if cfg.stats_file else layout.stats_path
    source_train = pick(cfg.source_train_list, cfg.source_modality, "train")
    target_train = pick(cfg.target_train_list, cfg.target_modality, "train")
    target_val, _ = split_unlabelled(pick(cfg.target_val_list, cfg.target_modality, "val", required=False),
                                     info, cfg.target_modality, "val")
    return ResolvedData(
        source_train=source_train, target_train=target_train, target_val=target_val,
        source_range=_range_for(cfg.source_range, stats_path, cfg.source_modality),
        target_range=_range_for(cfg.target_range, stats_path, cfg.target_modality),
        info=info,
        source_unlabelled=len(split_unlabelled(source_train, info, cfg.source_modality, "train")[1]),
        target_unlabelled=len(split_unlabelled(target_train, info, cfg.target_modality, "train")[1]),
    )


def split_unlabelled(paths, info, modality, split):
    """(labelled, unlabelled) of record files or test volumes, by dataset.json's "unlabelled"."""
    names = layout_lib.unlabelled_names(info, modality, split)
    unlabelled = [p for p in paths if layout_lib.volume_name(p) in names]
    return [p for p in paths if layout_lib.volume_name(p) not in names], unlabelled


def labelled_test_volumes(data_dir, info, modality, log=print):
    """The test volumes of `modality` that have labels to score against; a DataError says so when
    none has, and a note counts those left out."""
    prepared = layout_lib.PreparedLayout(data_dir)
    labelled, unlabelled = split_unlabelled(prepared.test_volumes(modality), info, modality, "test")
    if unlabelled and not labelled:
        raise DataError(f"{prepared.test_dir(modality)}: the {modality.upper()} test volumes have no labels "
                        "(dataset.json lists them as unlabelled), so there is nothing to score them against; "
                        "--mode=predict segments them")
    if unlabelled:
        log(f"note: {len(unlabelled)} {modality.upper()} test volume(s) without labels are not scored")
    return labelled


def check_labels(cfg, resolved):
    """Refuses training whose labels are missing: source training volumes without labels, or the
    oracle (a segmenter on the target) on target volumes without labels."""
    data = cfg.data
    if resolved.source_unlabelled:
        raise DataError(f"{data.data_dir}: {resolved.source_unlabelled} of {len(resolved.source_train)} source "
                        f"{data.source_modality.upper()} training volumes have no labels (dataset.json lists them "
                        "as unlabelled); the segmenter learns from source labels: make the labelled modality "
                        "--source_modality, or leave those scans out")
    if cfg.kind == "segmenter" and cfg.train_domain == "target" and resolved.target_unlabelled:
        raise DataError(f"{data.data_dir}: the target {data.target_modality.upper()} training data have no labels "
                        f"({resolved.target_unlabelled} of {len(resolved.target_train)} volumes unlabelled), and "
                        "the oracle (--train_domain=target) trains on target labels")


def check_classes(data_dir, info, num_classes):
    """dataset.json's classes must be --num_classes: with more names, classes the model never
    predicts would be scored (Dice 100% where both are empty) and averaged in; with fewer,
    classes would be left out of the table and the average."""
    where = layout_lib.PreparedLayout(data_dir).info_path
    info_classes = info.get("num_classes")
    if info_classes is not None and int(info_classes) != num_classes:
        raise DataError(f"{where}: the data has {info_classes} classes but --num_classes is {num_classes}")
    names = info.get("class_names")
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise DataError(f"{where}: class_names must be a list of names, got {names!r}")
    if len(names) != num_classes:
        raise DataError(f"{where}: {len(names)} class names {names} but --num_classes is {num_classes}")
    if len(set(names)) != len(names):
        raise DataError(f"{where}: class names must be unique, got {names}")


def class_names(info, num_classes):
    """The class names of dataset.json's `info`, else "class 0", "class 1", ..."""
    return list(info.get("class_names") or [f"class {i}" for i in range(num_classes)])


def count_slices(paths):
    """Training slices (one per record) in record files, from their framing alone."""
    return sum(reader.check_record_framing(path) for path in paths)


def _range_key(modality, role):
    return f"{modality} range ({role})"


def _fingerprint(cfg, info, ranges):
    facts = {"class_names": info.get("class_names"), "image_size": info.get("image_size")}
    if info.get("preprocessing") is not None:
        facts["preprocessing"] = info["preprocessing"]
    for role, modality in (("source", cfg.source_modality), ("target", cfg.target_modality)):
        if ranges[role] is not None:
            facts[_range_key(modality, role)] = list(ranges[role])
    return facts


def data_fingerprint(cfg, resolved):
    """What a trained run's evaluation must find unchanged in its data, and what evaluation and
    prediction read instead of the training data: the class names and slice size of
    dataset.json, its preprocessing recipe when it records one, and the intensity ranges
    (stats.json's values or the explicit ranges) that map images to [-1, 1]. JSON-ready."""
    return _fingerprint(cfg, resolved.info, {"source": resolved.source_range, "target": resolved.target_range})


def data_facts(cfg):
    """The entries of `data_fingerprint` that cfg's data folder tells without its training
    records: dataset.json's, and each range that is explicit or in the stats file."""
    layout = layout_lib.PreparedLayout(cfg.data_dir)
    info = layout.read_info() if layout.info_path.is_file() else {}
    stats_path = pathlib.Path(cfg.stats_file) if cfg.stats_file else layout.stats_path
    ranges = {role: _range_for(explicit, stats_path, modality) if explicit or stats_path.is_file() else None
              for role, modality, explicit in (("source", cfg.source_modality, cfg.source_range),
                                               ("target", cfg.target_modality, cfg.target_range))}
    return _fingerprint(cfg, info, ranges)


def target_range_of(fingerprint, cfg):
    """The target intensity range a fingerprint (`data_fingerprint`, `data_facts`) holds, or None."""
    recorded = fingerprint.get(_range_key(cfg.target_modality, "target"))
    return None if recorded is None else tuple(float(v) for v in recorded)


def build_training_datasets(cfg, resolved):
    """(source, target, target_val or None) datasets for a TrainConfig; source/target batches
    are (image, one-hot label), shuffled and repeated forever."""
    model = cfg.model
    check_labels(cfg, resolved)
    info_size = resolved.info.get("image_size")
    if info_size is not None and int(info_size) != model.image_size:
        raise DataError(f"{cfg.data.data_dir}: the data has {info_size} x {info_size} slices but "
                        f"--image_size is {model.image_size}")
    check_classes(cfg.data.data_dir, resolved.info, model.num_classes)
    for domain, paths in (("source", resolved.source_train), ("target", resolved.target_train),
                          ("target validation", resolved.target_val)):
        slices = sum(reader.check_records(path, model.image_size, model.num_classes) for path in paths)
        # A batch larger than the set would repeat slices, and take memory in proportion.
        if domain != "target validation" and cfg.batch_size > slices:
            raise DataError(f"--batch_size={cfg.batch_size} is larger than the {domain} training set "
                            f"({slices} slices in {cfg.data.data_dir})")

    def dataset(paths, intensity_range, seed_offset, max_shift):
        return reader.make_dataset(
            paths, image_size=model.image_size, num_classes=model.num_classes,
            intensity_range=intensity_range, batch_size=cfg.batch_size, shuffle=True, repeat=True,
            seed=cfg.seed + seed_offset, deterministic=cfg.runtime.deterministic, max_shift=max_shift)

    max_shift = cfg.data.max_shift_pixels(model.image_size)
    source = dataset(resolved.source_train, resolved.source_range, 0, max_shift)
    target = dataset(resolved.target_train, resolved.target_range, 1, max_shift)
    val = dataset(resolved.target_val, resolved.target_range, 2, 0) if resolved.target_val else None
    return source, target, val
