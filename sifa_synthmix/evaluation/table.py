"""Markdown tables in the paper's layout (Tables 1-3): class columns then Avg, a Dice block then an
ASSD block, one row per method, cells "mean(std)" over volumes, Dice in %."""
import numpy as np

from sifa_synthmix.evaluation.metrics import AVERAGE

# Column orders of the paper's tables; other class sets keep their class index order.
PAPER_CLASS_ORDERS = (("AA", "LAC", "LVC", "MYO"), ("Liver", "R Kidney", "L Kidney", "Spleen"))
METRIC_SCALES = {"dice": 100.0, "assd": 1.0}
METRIC_DECIMALS = {"dice": 1, "assd": 2}


def display_classes(class_names):
    """Foreground class names in the paper's column order when they are one of its class sets."""
    foreground = list(class_names[1:])
    for order in PAPER_CLASS_ORDERS:
        if sorted(order) == sorted(foreground):
            return list(order)
    return foreground


def table_columns(class_names):
    return display_classes(class_names) + [AVERAGE]


def block_title(metric, assd_unit):
    return "Dice (%) ↑" if metric == "dice" else f"ASSD ({assd_unit}) ↓"


def difference_title(metric, reference, assd_unit):
    unit = "% points" if metric == "dice" else assd_unit
    return f"{'Dice' if metric == 'dice' else 'ASSD'} difference to {reference} ({unit})"


def _number(value, metric, signed=False):
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value * METRIC_SCALES[metric]:{'+' if signed else ''}.{METRIC_DECIMALS[metric]}f}"


def metric_rows(named_summaries, columns, metric):
    """One (name, cells) row per (name, summary): "mean(std)" of `metric` per column."""
    return [(name, [f"{_number(summary[c][metric + '_mean'], metric)}"
                    f"({_number(summary[c][metric + '_std'], metric)})" for c in columns])
            for name, summary in named_summaries]


def value_rows(named_values, columns, metric, signed=False):
    """One (name, cells) row per (name, {column: value}); a missing value is n/a."""
    return [(name, [_number(values.get(c), metric, signed=signed) for c in columns]) for name, values in named_values]


def signed_rows(named_values, columns, metric):
    """value_rows with signed values (differences)."""
    return value_rows(named_values, columns, metric, signed=True)


def markdown_table(columns, blocks, first_header="Method"):
    """blocks: (title, rows) pairs; a title row spans the block, rows are (label, cells)."""
    lines = ["| " + " | ".join([first_header, *columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for title, rows in blocks:
        lines.append(f"| **{title}** |" + " |" * len(columns))
        lines.extend("| " + " | ".join([label, *cells]) + " |" for label, cells in rows)
    return "\n".join(lines) + "\n"
