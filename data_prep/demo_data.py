"""The demo's data, made on first use: the scanner-like phantom written as raw scans and prepared
through data_prep.folder exactly as a user's own scans are (the default), or the earlier centred
phantom written prepared (`--phantom=centred`). The CT training scans keep their labels, for the
oracle row of the comparison; SIFA never reads target labels, and the framing never looks at any.

The raw scans go to a sibling of the prepared folder, DATA_DIR-raw/, so a user can look at them,
convert them again with other options, or predict on them.
"""
import json
import pathlib

from data_prep import folder, phantom, scanner_phantom
from sifa_synthmix.data import layout

KINDS = ("scanner", "centred")


def raw_dir(prepared_dir):
    prepared_dir = pathlib.Path(prepared_dir)
    return prepared_dir.with_name(prepared_dir.name + "-raw")


def converter_arguments(raw, prepared_dir, image_size):
    """data_prep.folder's command line for the phantom's raw scans (its validation subjects as
    validation cases), at its defaults otherwise."""
    counts = _raw_provenance(raw)["counts"]
    return ["--mr_dir", str(raw / "mr"), "--ct_dir", str(raw / "ct"), "--output_dir", str(prepared_dir),
            "--image_size", str(image_size)] + [
                item for m in ("mr", "ct") for item in (f"--{m}_val_count", str(counts[f"{m}_val"]))]


def _wanted_provenance(raw, image_size):
    return {"generator": folder.GENERATOR, "mr_input": str((raw / "mr").resolve()),
            "ct_input": str((raw / "ct").resolve()), "image_size": image_size}


def _raw_provenance(raw):
    """The provenance of the scanner phantom's raw scans in `raw` ({} when they are not its)."""
    try:
        info = json.loads((raw / "mr" / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    provenance = info.get("provenance", {}) if isinstance(info, dict) else {}
    return provenance if provenance.get("generator") == scanner_phantom.GENERATOR and "counts" in provenance else {}


def _raw_seed(raw):
    """The seed the raw scans in `raw` were written with (None: not the scanner phantom's)."""
    return _raw_provenance(raw).get("seed")


def ensure_scanner_phantom(prepared_dir, image_size, seed):
    """Writes the scanner-like phantom's raw scans (unless DATA_DIR-raw/ holds them with this
    seed) and prepares them into `prepared_dir` (unless it holds them prepared at this size)."""
    prepared_dir, raw = pathlib.Path(prepared_dir), raw_dir(prepared_dir)
    prepared = layout.PreparedLayout(prepared_dir)
    if prepared.info_path.exists():
        provenance = prepared.read_info().get("provenance", {})
        wanted = _wanted_provenance(raw, image_size)
        found = {key: provenance.get(key) for key in wanted}
        if found != wanted or _raw_seed(raw) != seed:
            raise ValueError(f"{prepared_dir} holds a data set made with {found} (raw seed {_raw_seed(raw)}), not "
                             f"{wanted} from seed {seed}")
        return
    if not raw.exists():
        scanner_phantom.write_raw(raw, seed=seed, target_labels=True)
    elif _raw_seed(raw) != seed:
        raise ValueError(f"{raw} exists but does not hold the scanner phantom of seed {seed}")
    folder.main(converter_arguments(raw, prepared_dir, image_size))


def ensure_phantom(prepared_dir, image_size=64, seed=0, kind="scanner"):
    """The demo's data in `prepared_dir`, made unless it is there; an existing data set made with
    other settings is a ValueError, not reused."""
    if kind == "centred":
        phantom.ensure_phantom(prepared_dir, image_size=image_size, seed=seed)
    elif kind == "scanner":
        ensure_scanner_phantom(prepared_dir, image_size, seed)
    else:
        raise ValueError(f"unknown phantom {kind!r}; expected one of {KINDS}")
