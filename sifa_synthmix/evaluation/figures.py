"""Comparison figures: a qualitative grid like the paper's Fig. 2, per-class Dice bars and the
methods' learning curves.

Built on matplotlib's object API (Figure + Agg canvas), so no global backend is touched.
"""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from sifa_synthmix.visualize import class_colours, grey_to_rgb, overlay

PANEL_INCHES = 2.2


def _class_legend(figure, class_names):
    colours = class_colours(len(class_names))
    handles = [Patch(color=colours[c], label=class_names[c]) for c in range(1, len(class_names))]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)


def qualitative_grid(images, label_sets, row_titles, run_names, class_names):
    """Rows of slices; columns: the image, then colour overlays of the ground truth and each run.

    images: R x H x W in [-1, 1]; label_sets: R x (1 + runs) x H x W integer labels (ground
    truth first, then each run in `run_names` order).
    """
    label_sets = np.asarray(label_sets)
    rows, sets, height, width = label_sets.shape
    repeated = np.repeat(np.asarray(images, np.float32), sets, axis=0)[..., np.newaxis]
    overlays = overlay(repeated, label_sets.reshape(-1, height, width), len(class_names)).numpy()
    overlays = overlays.reshape(rows, sets, height, width, 3)
    greys = grey_to_rgb(np.asarray(images, np.float32)[..., np.newaxis]).numpy()
    titles = ["Image", "Ground truth", *run_names]
    figure = Figure(figsize=(PANEL_INCHES * len(titles), PANEL_INCHES * rows + 0.6))
    axes = figure.subplots(rows, len(titles), squeeze=False)
    for row in range(rows):
        panels = [greys[row], *overlays[row]]
        for column, panel in enumerate(panels):
            axis = axes[row, column]
            axis.imshow(panel, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(titles[column], fontsize=9)
        axes[row, 0].set_ylabel(row_titles[row], fontsize=8)
    _class_legend(figure, class_names)
    figure.subplots_adjust(left=0.05, right=0.99, top=0.93, bottom=0.6 / (PANEL_INCHES * rows + 0.6) + 0.02,
                           wspace=0.04, hspace=0.08)
    return figure


def dice_bars(named_summaries, columns, error_bars, dots=None):
    """Grouped bars of mean Dice (%) per column (classes and Avg), one bar per method, with
    +-1 std error bars; `error_bars` says what that std is over, printed under the plot.

    dots: {method name: {column: [Dice per seed]}}; each value is drawn as a dot on its bar.
    """
    figure = Figure(figsize=(max(6.0, 0.7 * len(columns) * len(named_summaries)), 3.9))
    axis = figure.subplots()
    width = 0.8 / len(named_summaries)
    positions = np.arange(len(columns))
    for index, (name, summary) in enumerate(named_summaries):
        centres = positions + (index - (len(named_summaries) - 1) / 2) * width
        means = [100 * summary[c]["dice_mean"] for c in columns]
        stds = [100 * summary[c]["dice_std"] for c in columns]
        bars = axis.bar(centres, means, width, yerr=np.nan_to_num(stds), capsize=3, label=name)
        for centre, column in zip(centres, columns):
            values = 100 * np.asarray((dots or {}).get(name, {}).get(column, []), np.float64)
            axis.scatter(np.full(values.shape, centre), values, s=10, color="black", zorder=3,
                         edgecolors=bars.patches[0].get_facecolor(), linewidths=0.5)
    axis.set_xticks(positions)
    axis.set_xticklabels(columns)
    axis.set_ylabel("Dice (%)")
    axis.set_ylim(0, 105)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(4, len(named_summaries)),
                frameon=False)
    figure.text(0.5, 0.01, error_bars, ha="center", va="bottom", fontsize=7, wrap=True)
    figure.subplots_adjust(bottom=0.27, top=0.95)
    return figure


def curve_statistics(runs):
    """(steps every run evaluated, mean Dice in % over the runs, sample std over them or None for
    one run) of [{step: Dice in [0, 1]} per run]."""
    steps = sorted(set.intersection(*(set(run) for run in runs)))
    values = 100 * np.array([[run[step] for step in steps] for run in runs], np.float64)
    return steps, values.mean(axis=0), values.std(axis=0, ddof=1) if len(runs) > 1 else None


def dice_curves(curves, ylabel):
    """Mean Dice (%) against the training step, one line per method: the mean over its runs at the
    steps every run evaluated, with a band of +-1 std over the runs where there are several.

    curves: {method name: [{step: Dice in [0, 1]} per run]}.
    """
    figure = Figure(figsize=(6.4, 3.9))
    axis = figure.subplots()
    bands = False
    for name, runs in curves.items():
        steps, mean, spread = curve_statistics(runs)
        (line,) = axis.plot(steps, mean, marker="o", markersize=3, label=f"{name} ({len(runs)} run"
                                                                             f"{'s' if len(runs) > 1 else ''})")
        if spread is not None:
            axis.fill_between(steps, mean - spread, mean + spread, color=line.get_color(), alpha=0.2, linewidth=0)
            bands = True
    axis.set_xlabel("training step")
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    if bands:
        figure.text(0.5, 0.01, "Lines: mean over runs (seeds); bands: +-1 sample std over them.", ha="center",
                    va="bottom", fontsize=7)
    figure.subplots_adjust(bottom=0.16 if bands else 0.13, top=0.95)
    return figure
