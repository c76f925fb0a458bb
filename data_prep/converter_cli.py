"""Command-line options and the run the raw-data converters share (errors: data_prep/errors.py)."""
from data_prep import conversion
from data_prep.errors import UsageError
from sifa_synthmix.data import layout


def add_common_arguments(parser, default_test_ids, default_val_counts):
    """Output, crop, resampling, augmentation, processes, label and split options."""
    parser.add_argument("--output_dir", required=True, help="absent or empty folder to write")
    parser.add_argument("--image_size", type=int, default=256, help="crop width and height, pixels")
    parser.add_argument("--spacing", type=float, default=None,
                        help="resample slices to this in-plane spacing in mm first (default: keep)")
    parser.add_argument("--augment", type=int, default=0,
                        help="extra randomly affine-transformed copies of each training volume")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentation")
    parser.add_argument("--workers", type=int, default=1, help="processes preparing volumes")
    parser.add_argument("--ignore_unknown_labels", action="store_true",
                        help="map unknown label values to background instead of stopping")
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


def settings_from_args(args, axcodes):
    if args.image_size < 1:
        raise UsageError(f"--image_size must be positive, got {args.image_size}")
    if args.spacing is not None and not args.spacing > 0:
        raise UsageError(f"--spacing must be positive, got {args.spacing}")
    if args.augment < 0:
        raise UsageError(f"--augment must not be negative, got {args.augment}")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    return conversion.Settings(axcodes=tuple(axcodes), image_size=args.image_size,
                               spacing_mm=args.spacing, augment=args.augment, seed=args.seed,
                               ignore_unknown_labels=args.ignore_unknown_labels)


def run(args, raw_volumes, axcodes, class_names, generator, inputs):
    """Converts `raw_volumes` as the options say, prints the summary; returns the report."""
    settings = settings_from_args(args, axcodes)
    splits = {}
    for raw in raw_volumes:
        splits.setdefault(raw.modality, {}).setdefault(raw.split, []).append(raw.name)
    provenance = {"generator": generator, **inputs, "orientation": "".join(axcodes),
                  "image_size": settings.image_size, "spacing_mm": settings.spacing_mm,
                  "augment": settings.augment, "seed": settings.seed,
                  "ignore_unknown_labels": settings.ignore_unknown_labels, "splits": splits}
    report = conversion.convert(raw_volumes, args.output_dir, settings, class_names, provenance,
                                workers=args.workers)
    print(conversion.summary_text(report, args.output_dir))
    return report
