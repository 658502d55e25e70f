"""Command line: convert a user's image/label folders into a seg_jax TFDS dataset.

    python -m seg_jax.data.folder --images DIR --labels DIR --num_classes N --out DIR \
        [--instances DIR] [--class_names a b ...] [--val_fraction 0.1] [--seed 0] [--variant default] [--overwrite]
        [--intensity percentile|range [--intensity_low A --intensity_high B]]

16-bit and float images (TIFF, 16-bit grey PNG) need `--intensity`: "percentile" maps each image's low/high
percentiles (default 1 and 99.8) to 0/255, "range" maps the fixed values low/high to 0/255; the choice is stored
with the dataset and `--mode=predict` applies it to new images (`sources.image_files`).

Then train with `data.name=folder` and `data.data_dir=<--out>`. The logic is in `sources.folder_importer`;
this module only parses arguments and prints (nothing imports it, so `-m` runs it once): the converter's
notes on stdout, its warnings and errors on stderr, each on its own line, exit status 2 on an error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from seg_jax.data.sources import folder_importer


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m seg_jax.data.folder", description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, help="directory of RGB/grey images")
    parser.add_argument("--labels", required=True, help="directory of class-id PNGs or TIFFs (255 = ignore)")
    parser.add_argument("--instances", default=None, help="optional directory of 16-bit instance-id PNGs or TIFFs")
    parser.add_argument("--num_classes", type=int, required=True)
    parser.add_argument("--out", required=True, help="TFDS data dir to write (use as data.data_dir)")
    parser.add_argument("--class_names", nargs="+", default=None)
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seeds the train/validation split")
    parser.add_argument("--variant", default="default", help="sub-directory name (data.variant)")
    parser.add_argument("--intensity", choices=("percentile", "range"), default=None,
                        help="how 16-bit / float images become 8-bit (default: such images are refused)")
    parser.add_argument("--intensity_low", type=float, default=None,
                        help="percentile (default 1) or value (range) that maps to 0")
    parser.add_argument("--intensity_high", type=float, default=None,
                        help="percentile (default 99.8) or value (range) that maps to 255")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a different conversion already in --out/--variant (else it is refused)")
    return parser.parse_args(argv)


class _ConsoleHandler(logging.Handler):
    """The converter's log records: notes on stdout, warnings ("warning: ...") on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            print(f"warning: {record.getMessage()}", file=sys.stderr, flush=True)
        else:
            print(record.getMessage(), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logger = logging.getLogger(folder_importer.__name__)
    handler, level, propagate = _ConsoleHandler(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        result = folder_importer.convert_folder(
            images=args.images, labels=args.labels, instances=args.instances, num_classes=args.num_classes,
            out=args.out, class_names=args.class_names, val_fraction=args.val_fraction, seed=args.seed,
            variant=args.variant, overwrite=args.overwrite,
            intensity={"method": args.intensity, "low": args.intensity_low, "high": args.intensity_high}
            if args.intensity or args.intensity_low is not None or args.intensity_high is not None else None)
    except folder_importer.FolderDatasetError as error:
        sys.stdout.flush()  # TFDS's progress bars are off (`tfds_format.quiet_preparation`): nothing is mid-line
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    sizes = ", ".join(f"{name}: {size}" for name, size in result.split_sizes.items())
    print(f"{'wrote' if result.written else 'kept'} {result.path} ({sizes})\n"
          f"train with data.name=folder data.data_dir={args.out} data.variant={args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
