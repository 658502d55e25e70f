"""Command line: statistics of the `nuclei` generators side by side, as figures and a table.

    python -m seg_jax.data.nuclei_stats --out docs/nuclei [--data_dir DIR] [--variant default]
        [--split validation] [--max_images 200] [--folder VARIANT ...]

Compares version 1.0.0 (`--split`), version 2.0.0 (`--split`) and version 2.0.0's held-out `shifted` split, plus
the `train` split of each `--folder` variant converted into `--data_dir` (e.g. real images with instance maps,
`python -m seg_jax.data.folder ... --instances DIR`). The datasets are generated into `--data_dir` if missing.
Writes into `--out`:
  statistics.png  grey-level histograms of nuclei and background, nucleus areas, nuclei per image, SNR per image
                  and the share of nuclei touching another (`derived.instance_statistics`);
  samples.png     the first images of each set, plain and with the instance outlines;
  summary.md      the same numbers as a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from skimage.segmentation import find_boundaries

from seg_jax.data.derived.instance_statistics import InstanceStatistics, dataset_statistics

DPI = 100
SAMPLES = 6


@dataclasses.dataclass(frozen=True)
class ExampleSet:
    """A named set of canonical examples (image uint8 [H, W, 3], label int [H, W], instances int [H, W])."""

    name: str
    examples: list[dict]


def load_sets(*, data_dir: str, variant: str, split: str, max_images: int,
              folders: Sequence[str] = ()) -> list[ExampleSet]:
    """The compared sets (module docstring), each its first `max_images` examples."""
    from seg_jax import data  # TFDS and grain only when datasets are read
    from seg_jax.data.sources import tfds_format

    wanted = [("nuclei", "1.0.0", variant, split, f"v1 (1.0.0) {split}"),
              ("nuclei", "2.0.0", variant, split, f"v2 (2.0.0) {split}"),
              ("nuclei", "2.0.0", variant, "shifted", "v2 shifted (held out)")]
    wanted += [("folder", None, folder, "train", f"folder {folder} train") for folder in folders]
    sets = []
    for name, version, data_variant, data_split, title in wanted:
        cfg = data.base_config(name)
        cfg.update(data_dir=data_dir, variant=data_variant, version=version)
        with tfds_format.quiet_preparation():
            source = data.resolve(cfg).source(data_split)
        sets.append(ExampleSet(title, [source[i] for i in range(min(len(source), max_images))]))
    return sets


def _density(counts: np.ndarray) -> np.ndarray:
    return counts / max(counts.sum(), 1)


def statistics_figure(names: Sequence[str], stats: Sequence[InstanceStatistics]) -> Figure:
    """Six panels comparing the sets: one colour per set in every panel."""
    fig = Figure(figsize=(13.5, 7.0), layout="constrained")
    axes = [fig.add_subplot(2, 3, i + 1) for i in range(6)]
    levels = np.arange(256)
    all_areas = np.concatenate([s.areas for s in stats])
    area_bins = np.geomspace(max(all_areas.min(), 1), all_areas.max() + 1, 40)
    snr = np.concatenate([s.snr[np.isfinite(s.snr)] for s in stats])
    snr_bins = np.geomspace(max(snr.min(), 0.5), snr.max() + 1, 30) if len(snr) else 10
    count_bins = np.arange(0, max(s.counts.max() for s in stats) + 2) - 0.5
    for i, (name, s) in enumerate(zip(names, stats)):
        colour = f"C{i}"
        axes[0].plot(levels, _density(s.foreground_histogram), color=colour, label=name)
        axes[1].semilogy(levels, _density(s.background_histogram) + 1e-7, color=colour, label=name)
        axes[2].hist(s.areas, bins=area_bins, density=True, histtype="step", color=colour, label=name)
        axes[3].hist(s.counts, bins=count_bins, density=True, histtype="step", color=colour, label=name)
        axes[4].hist(s.snr[np.isfinite(s.snr)], bins=snr_bins, density=True, histtype="step", color=colour,
                     label=name)
        axes[5].bar(i, s.touching_fraction, color=colour)
    axes[0].set(title="nucleus pixels", xlabel="grey level (channel mean)", ylabel="share of pixels")
    axes[1].set(title="background pixels", xlabel="grey level (channel mean)", ylabel="share of pixels (log)",
                ylim=(1e-6, 1))
    axes[2].set(title="nucleus area", xlabel="pixels (log)", ylabel="density", xscale="log")
    axes[3].set(title="nuclei per image", xlabel="nuclei", ylabel="share of images")
    axes[4].set(title="SNR per image", xlabel="(median nucleus - median background) / noise std (log)",
                ylabel="density", xscale="log")
    axes[5].set(title="nuclei sharing a boundary with another", ylabel="share of nuclei", ylim=(0, 1))
    axes[5].set_xticks(range(len(names)), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
    axes[0].legend(fontsize=8)
    return fig


def samples_figure(sets: Sequence[ExampleSet], *, count: int = SAMPLES) -> Figure:
    """Per set two rows: its first `count` images, then the same with instance outlines in red."""
    fig = Figure(figsize=(1.15 * count, 2.4 * len(sets)), layout="constrained")
    grid = fig.add_gridspec(2 * len(sets), count)
    for row, example_set in enumerate(sets):
        for column, example in enumerate(example_set.examples[:count]):
            image = example["image"]
            outlined = image.copy()
            outlined[find_boundaries(example["instances"], mode="inner")] = (255, 40, 40)
            for offset, picture in enumerate((image, outlined)):
                ax = fig.add_subplot(grid[2 * row + offset, column])
                ax.imshow(picture, interpolation="nearest")
                ax.set_axis_off()
                if column == 0 and offset == 0:
                    ax.set_title(example_set.name, fontsize=9, loc="left")
    return fig


def summary_table(names: Sequence[str], stats: Sequence[InstanceStatistics]) -> str:
    """A Markdown table of the sets' numbers."""
    def grey_median(histogram: np.ndarray) -> int:
        return int(np.searchsorted(np.cumsum(histogram), histogram.sum() / 2))

    lines = ["| set | images | nuclei / image | area px: median [10-90 %] | area CV | touching | "
             "SNR: median [10-90 %] | grey median: nuclei / background |", "|" + " --- |" * 8]
    for name, s in zip(names, stats):
        a10, a50, a90 = np.percentile(s.areas, [10, 50, 90])
        snr = s.snr[np.isfinite(s.snr)]
        q10, q50, q90 = np.percentile(snr, [10, 50, 90]) if len(snr) else (np.nan,) * 3
        lines.append(f"| {name} | {len(s.counts)} | {s.counts.mean():.1f} ± {s.counts.std():.1f} | "
                     f"{a50:.0f} [{a10:.0f}-{a90:.0f}] | {s.areas.std() / s.areas.mean():.2f} | "
                     f"{s.touching_fraction:.2f} | {q50:.1f} [{q10:.1f}-{q90:.1f}] | "
                     f"{grey_median(s.foreground_histogram)} / {grey_median(s.background_histogram)} |")
    return "\n".join(lines) + "\n"


def save_png(fig: Figure, path: pathlib.Path) -> None:
    """`fig` as a 256-colour PNG (octree palette: tints kept, grey levels approximated): the noisy sample images
    take a fifth of a full-colour PNG."""
    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    canvas.draw()
    picture = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    picture.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def write_report(sets: Sequence[ExampleSet], *, out: pathlib.Path) -> list[pathlib.Path]:
    """Writes statistics.png, samples.png and summary.md into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in sets]
    stats = [dataset_statistics(s.examples) for s in sets]
    paths = [out / "statistics.png", out / "samples.png", out / "summary.md"]
    save_png(statistics_figure(names, stats), paths[0])
    save_png(samples_figure(sets), paths[1])
    definitions = ("\nArea: pixels per nucleus (those cut by the image border included); CV = std / mean. Touching: "
                   "share of nuclei with a pixel edge-adjacent to another nucleus. SNR: per image, (median nucleus "
                   "grey - median background grey) / background noise std (1.4826 MAD of neighbour differences / "
                   "sqrt 2). Grey level = channel mean. Written by `python -m seg_jax.data.nuclei_stats`.\n")
    paths[2].write_text(summary_table(names, stats) + definitions)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from seg_jax.data.config import default_data_dir

    parser = argparse.ArgumentParser(prog="python -m seg_jax.data.nuclei_stats",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for the figures and summary.md")
    parser.add_argument("--data_dir", default=default_data_dir(), help="TFDS data dir (data.data_dir)")
    parser.add_argument("--variant", default="default", help="nuclei variant (data.variant)")
    parser.add_argument("--split", default="validation", help="split of versions 1.0.0 and 2.0.0 compared")
    parser.add_argument("--max_images", type=int, default=200, help="first images of each set")
    parser.add_argument("--folder", nargs="*", default=(), help="folder variants in --data_dir to add")
    args = parser.parse_args(argv)
    if args.max_images < 1:
        parser.error(f"--max_images must be >= 1, got {args.max_images}")
    sets = load_sets(data_dir=args.data_dir, variant=args.variant, split=args.split, max_images=args.max_images,
                     folders=args.folder)
    for path in write_report(sets, out=pathlib.Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
