"""PNG plots of a run's outputs: training curves, learning rate and confusion matrix.

    from train.plots import plot_run
    plot_run("runs/mnist")   # writes runs/mnist/plots/{curves,learning_rate,confusion_matrix}.png

The drawing functions return a matplotlib Figure (built without pyplot, so no global
state and no display is needed); `plot_run` saves them, each PNG written atomically.
matplotlib is imported only when a plot is drawn (it is not a core dependency).
"""

from __future__ import annotations

import json
import math
import os
import tempfile

SPLITS = (("train", "train"), ("val", "validation"))  # (key prefix, legend label)
MAX_ANNOTATED_CLASSES = 20  # above this, confusion-matrix cells show colour only
MAX_TICKED_CLASSES = 40  # above this, class tick labels are left to matplotlib


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- reading
def read_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl, one per step, sorted by step.

    A step written more than once (a resumed run) keeps its last line; lines that are not a
    JSON object with a numeric "step" (e.g. a truncated last line) are skipped.
    Raises ValueError when the file is missing or holds no valid record.
    """
    workdir = os.path.dirname(path) or "."
    no_metrics = f"{path} has no metrics yet; train first with python -m train --workdir {workdir}"
    if not os.path.isfile(path):
        raise ValueError(no_metrics)
    by_step = {}
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            step = record.get("step") if isinstance(record, dict) else None
            if _is_number(step) and math.isfinite(step):
                by_step[step] = record  # the last line for a step wins
    if not by_step:
        raise ValueError(no_metrics)
    return [by_step[step] for step in sorted(by_step)]


def metric_families(records: list[dict]) -> list[str]:
    """The metric names found as numeric train_*/val_* fields: "loss" first, then the rest
    in order of first appearance (e.g. ["loss", "accuracy"] or ["loss", "mse"])."""
    families = []
    for record in records:
        for key, value in record.items():
            prefix = key.split("_", 1)[0]
            name = key[len(prefix) + 1:]
            if prefix in dict(SPLITS) and name and _is_number(value) and name not in families:
                families.append(name)
    return sorted(families, key=lambda name: name != "loss")  # stable: keeps the rest's order


def series(records: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of the records where `key` holds a number."""
    points = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
    return [s for s, _ in points], [v for _, v in points]


# --------------------------------------------------------------------------- drawing
def _new_figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("plots need matplotlib; install it with pip install matplotlib") from None
    return Figure(figsize=figsize, layout="constrained")


def draw_curves(records: list[dict], title: str = "training curves"):
    """A Figure with one panel per metric family: train and validation against step."""
    families = metric_families(records)
    if not families:
        raise ValueError("the records hold no train_*/val_* metrics; pass records read from "
                         "a run's metrics.jsonl")
    ncols = min(len(families), 3)
    nrows = math.ceil(len(families) / ncols)
    fig = _new_figure((4.5 * ncols, 3.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, family in zip(axes, families):
        for prefix, label in SPLITS:
            steps, values = series(records, f"{prefix}_{family}")
            if steps:
                ax.plot(steps, values, label=label, marker="o" if len(steps) <= 30 else None,
                        markersize=3)
        ax.set_title(family)
        ax.set_xlabel("step")
        ax.set_ylabel(family)
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in axes[len(families):]:
        fig.delaxes(ax)
    fig.suptitle(title)
    return fig


def has_learning_rate(records: list[dict]) -> bool:
    return any(_is_number(r.get("learning_rate")) for r in records)


def draw_learning_rate(records: list[dict], title: str = "learning rate"):
    """A Figure of the learning rate against step."""
    steps, values = series(records, "learning_rate")
    if not steps:
        raise ValueError("the records hold no learning_rate; check has_learning_rate first")
    fig = _new_figure((5, 3.6))
    ax = fig.subplots()
    ax.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    return fig


def draw_confusion_matrix(matrix, class_names: list[str] | None = None,
                          title: str = "test confusion matrix"):
    """A Figure of a K x K confusion matrix (rows: true class, columns: predicted class) with
    the counts written in the cells (up to MAX_ANNOTATED_CLASSES classes)."""
    import numpy as np

    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.size == 0 \
            or not np.issubdtype(counts.dtype, np.number):
        raise ValueError("test_confusion_matrix must be a square list of lists of counts; "
                         "rerun the evaluation to rewrite summary.json")
    k = counts.shape[0]
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"class_names has {len(class_names)} names for {k} classes; "
                         "pass one name per class or none")
    size = min(max(4.0, 0.45 * k + 2.0), 14.0)
    fig = _new_figure((size + 1.0, size))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    if k <= MAX_TICKED_CLASSES:
        named = class_names is not None
        labels = [str(n) for n in (class_names if named else range(k))]
        ax.set_xticks(range(k), labels, rotation=45 if named else 0,
                      ha="right" if named else "center")
        ax.set_yticks(range(k), labels)
    if k <= MAX_ANNOTATED_CLASSES:
        dark = counts.max() / 2 if counts.max() > 0 else 1
        fontsize = 10 if k <= 10 else 7
        for (true, predicted), count in np.ndenumerate(counts):
            ax.text(predicted, true, f"{count:g}", ha="center", va="center", fontsize=fontsize,
                    color="white" if count > dark else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- saving
def save_png(fig, path: str) -> str:
    """Saves `fig` as a PNG at `path` atomically (temp file in the same folder, then
    os.replace), so a crash never leaves a half-written plot. Returns `path`."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _read_summary(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            summary = json.load(f)
    except ValueError:
        raise ValueError(f"{path} is not valid JSON; rerun the evaluation or delete it") from None
    return summary if isinstance(summary, dict) else {}


def plot_run(workdir: str) -> list[str]:
    """Draws a run's plots into workdir/plots/ and returns the paths written: curves.png,
    learning_rate.png (when the metrics have a learning_rate) and confusion_matrix.png
    (when summary.json has a test_confusion_matrix)."""
    if not os.path.isdir(workdir):
        raise ValueError(f"no workdir at {workdir}; pass the --workdir of a run")
    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    summary = _read_summary(os.path.join(workdir, "summary.json"))
    figures = {"curves.png": draw_curves(records)}
    if has_learning_rate(records):
        figures["learning_rate.png"] = draw_learning_rate(records)
    if summary.get("test_confusion_matrix") is not None:
        figures["confusion_matrix.png"] = draw_confusion_matrix(
            summary["test_confusion_matrix"], summary.get("class_names"))
    plots_dir = os.path.join(workdir, "plots")
    os.makedirs(plots_dir, exist_ok=True)
    return [save_png(fig, os.path.join(plots_dir, name)) for name, fig in figures.items()]
