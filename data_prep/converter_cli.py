"""Command-line options and the run the raw-data converters share (errors: data_prep/errors.py)."""
from data_prep import conversion
from data_prep.errors import UsageError
from sifa_synthmix.data import layout


def spacing_option(text):
    """--spacing: a positive number of mm, "native" (None: keep each scan's), "median" or "auto"."""
    if text in ("native", "median", "auto"):
        return None if text == "native" else text
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--spacing must be a number of mm, 'native', 'median' or 'auto', got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"--spacing must be positive and finite, got {text}")
    return value


def add_output_arguments(parser, default_spacing="native"):
    """Output, crop, resampling, augmentation, process and label options."""
    parser.add_argument("--output_dir", required=True, help="absent or empty folder to write")
    parser.add_argument("--image_size", type=int, default=256,
                        help="crop width and height, pixels (default: %(default)s)")
    parser.add_argument("--spacing", default=default_spacing,
                        help="in-plane spacing in mm to resample slices to first, or 'native' to keep "
                             "each scan's (default: %(default)s)")
    parser.add_argument("--augment", type=int, default=0,
                        help="extra randomly affine-transformed copies of each training volume")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation")
    parser.add_argument("--workers", type=int, default=1, help="processes preparing volumes")
    parser.add_argument("--ignore_unknown_labels", action="store_true",
                        help="map unknown label values to background instead of stopping")


def add_common_arguments(parser, default_test_ids, default_val_counts):
    """`add_output_arguments` and the split by volume id of the named converters."""
    add_output_arguments(parser)
    for modality in layout.MODALITIES:
        parser.add_argument(f"--{modality}_test_ids", type=int, nargs="+",
                            default=list(default_test_ids[modality]),
                            help=f"{modality.upper()} test volume ids (default: %(default)s)")
        parser.add_argument(f"--{modality}_val_count", type=int, default=default_val_counts[modality],
                            help=f"{modality.upper()} validation volumes: the highest non-test ids "
                                 "(default: %(default)s)")


def split_choices(args):
    """({modality: test ids}, {modality: validation count}) from the parsed options."""
    return ({m: getattr(args, f"{m}_test_ids") for m in layout.MODALITIES},
            {m: getattr(args, f"{m}_val_count") for m in layout.MODALITIES})


def settings_from_args(args, axcodes, crop="labels", spacing_mm=None, normalisation="zscore"):
    """The conversion settings of the parsed options; `spacing_mm`, when given, stands for a
    --spacing the caller resolved ("median", "auto")."""
    if args.image_size < 1:
        raise UsageError(f"--image_size must be positive, got {args.image_size}")
    if args.augment < 0:
        raise UsageError(f"--augment must not be negative, got {args.augment}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    spacing = spacing_mm if spacing_mm is not None else spacing_option(args.spacing)
    if spacing in ("median", "auto"):
        raise UsageError(f"--spacing {spacing} is only known to data_prep.folder")
    return conversion.Settings(axcodes=tuple(axcodes), image_size=args.image_size,
                               spacing_mm=spacing, augment=args.augment, seed=args.seed,
                               ignore_unknown_labels=args.ignore_unknown_labels, crop=crop,
                               normalisation=normalisation)


def run(args, raw_volumes, settings, class_names, generator, inputs):
    """Converts `raw_volumes` with `settings`, prints the summary; returns the report."""
    splits = {}
    for raw in raw_volumes:
        splits.setdefault(raw.modality, {}).setdefault(raw.split, []).append(raw.name)
    provenance = {"generator": generator, **inputs, "orientation": "".join(settings.axcodes),
                  "image_size": settings.image_size, "spacing_mm": settings.spacing_mm,
                  "crop": settings.crop, "normalisation": settings.normalisation, "augment": settings.augment, "seed": settings.seed,
                  "ignore_unknown_labels": settings.ignore_unknown_labels, "splits": splits}
    report = conversion.convert(raw_volumes, args.output_dir, settings, class_names, provenance,
                                workers=args.workers)
    print(conversion.summary_text(report, args.output_dir))
    return report
