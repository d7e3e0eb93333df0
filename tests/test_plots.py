"""train.plots: PNGs from a run's workdir, and what each figure draws."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.image  # noqa: E402

from train.plots import (draw_confusion_matrix, draw_curves, draw_learning_rate,  # noqa: E402
                         metric_families, plot_run, read_metrics)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def classification_record(step, loss, *, val=True):
    record = {"step": step, "epoch": step / 10, "train_loss": loss, "train_accuracy": 1 - loss,
              "learning_rate": 0.01 / step, "time_s": step * 0.1,
              "train_member_losses": [loss, loss + 0.1]}  # a list: not a curve
    if val:
        record.update(val_loss=loss + 0.05, val_accuracy=0.9 - loss)
    return record


def write_metrics(workdir, lines):
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.write("".join(line + "\n" for line in lines))


def lines_by_label(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines()}


@pytest.fixture
def run_dir(tmp_path):
    """A classification run resumed at step 20 (steps 20 written twice), cut off mid-line."""
    first = [classification_record(s, 1 / s) for s in (10, 20)]
    resumed = [classification_record(s, 0.5 / s) for s in (20, 30)]
    write_metrics(tmp_path, [json.dumps(r) for r in first + resumed] + ['{"step": 40, "train_lo'])
    summary = {"test_accuracy": 0.8, "test_confusion_matrix": [[5, 1, 0], [2, 7, 1], [0, 0, 9]],
               "class_names": ["cat", "dog", "eel"]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_read_metrics_keeps_last_line_per_step_sorted_and_skips_bad_lines(tmp_path):
    write_metrics(tmp_path, [json.dumps({"step": 30, "train_loss": 3.0}),
                             json.dumps({"step": 10, "train_loss": 1.0}),
                             "[1, 2]", json.dumps({"epoch": 1}),  # not a record with a step
                             "{not json", json.dumps({"step": float("nan")}),
                             json.dumps({"step": 30, "train_loss": 0.3}),  # the resumed run
                             "", '{"step": 50, "train'])
    records = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [(r["step"], r["train_loss"]) for r in records] == [(10, 1.0), (30, 0.3)]


def test_plot_run_writes_three_valid_pngs(run_dir):
    paths = plot_run(str(run_dir))
    plots = run_dir / "plots"
    assert sorted(os.path.basename(p) for p in paths) == \
        ["confusion_matrix.png", "curves.png", "learning_rate.png"]
    assert sorted(os.listdir(plots)) == sorted(os.path.basename(p) for p in paths)  # no temps
    for path in paths:
        assert os.path.dirname(path) == str(plots)
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 300


def test_plot_run_overwrites_earlier_plots(run_dir):
    plot_run(str(run_dir))
    (run_dir / "summary.json").unlink()
    write_metrics(run_dir, [json.dumps({"step": 1, "train_loss": 1.0})])
    paths = plot_run(str(run_dir))
    assert [os.path.basename(p) for p in paths] == ["curves.png"]
    assert matplotlib.image.imread(paths[0]).ndim == 3


def test_curves_draw_train_and_validation_per_metric(run_dir):
    records = read_metrics(str(run_dir / "metrics.jsonl"))
    fig = draw_curves(records)
    loss_ax, accuracy_ax = fig.get_axes()
    steps = [10, 20, 30]
    train_loss = [1 / 10, 0.5 / 20, 0.5 / 30]  # step 20 from the resumed run
    assert loss_ax.get_title() == "loss" and loss_ax.get_ylabel() == "loss"
    assert loss_ax.get_xlabel() == "step"
    assert lines_by_label(loss_ax) == {
        "train": (steps, train_loss),
        "validation": (steps, [v + 0.05 for v in train_loss])}
    assert accuracy_ax.get_title() == "accuracy" and accuracy_ax.get_ylabel() == "accuracy"
    assert lines_by_label(accuracy_ax) == {
        "train": (steps, [1 - v for v in train_loss]),
        "validation": (steps, [0.9 - v for v in train_loss])}
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert legend == ["train", "validation"]


def test_regression_curves_have_loss_and_mse_panels_only():
    records = [{"step": s, "train_loss": 1 / s, "train_mse": 2 / s, "val_loss": 1.5 / s,
                "val_mse": 3 / s, "time_s": 1.0} for s in (5, 10)]
    assert metric_families(records) == ["loss", "mse"]
    titles = [ax.get_title() for ax in draw_curves(records).get_axes()]
    assert titles == ["loss", "mse"]


def test_loss_panel_comes_first_and_perplexity_gets_a_panel():
    records = [{"step": 1, "train_perplexity": 9.0, "train_loss": 2.2}]
    assert [ax.get_title() for ax in draw_curves(records).get_axes()] == ["loss", "perplexity"]


def test_a_metric_only_in_validation_gets_a_panel():
    records = [{"step": 1, "train_loss": 1.0, "val_loss": 1.1, "val_accuracy": 0.5}]
    accuracy_ax = draw_curves(records).get_axes()[1]
    assert accuracy_ax.get_title() == "accuracy"
    assert lines_by_label(accuracy_ax) == {"validation": ([1], [0.5])}


def test_without_validation_only_train_lines_are_drawn():
    records = [classification_record(s, 1 / s, val=False) for s in (1, 2, 3)]
    for ax in draw_curves(records).get_axes():
        assert list(lines_by_label(ax)) == ["train"]


def test_validation_missing_on_some_lines_is_drawn_where_present():
    records = [classification_record(1, 1.0, val=False), classification_record(2, 0.5)]
    steps, values = lines_by_label(draw_curves(records).get_axes()[0])["validation"]
    assert (steps, values) == ([2], [0.55])


def test_learning_rate_is_drawn_against_step(run_dir):
    records = read_metrics(str(run_dir / "metrics.jsonl"))
    ax, = draw_learning_rate(records).get_axes()
    (steps, rates), = lines_by_label(ax).values()
    assert steps == [10, 20, 30] and rates == pytest.approx([0.001, 0.0005, 0.01 / 30])
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "learning rate"


def test_no_learning_rate_means_no_learning_rate_png(tmp_path):
    write_metrics(tmp_path, [json.dumps({"step": 1, "train_loss": 1.0, "val_loss": 1.2})])
    assert [os.path.basename(p) for p in plot_run(str(tmp_path))] == ["curves.png"]


def test_confusion_matrix_image_labels_and_counts():
    matrix = [[5, 1, 0], [2, 7, 1], [0, 0, 9]]
    fig = draw_confusion_matrix(matrix, ["cat", "dog", "eel"])
    ax = fig.get_axes()[0]
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), matrix)
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "eel"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "eel"]
    cells = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert ((1, 0), "1") in cells and ((0, 1), "2") in cells  # (x=predicted, y=true)
    assert len(ax.texts) == 9


def test_confusion_matrix_without_names_uses_indices_and_omits_counts_when_large():
    ax = draw_confusion_matrix(np.eye(4, dtype=int).tolist()).get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    large = draw_confusion_matrix(np.ones((25, 25), dtype=int).tolist()).get_axes()[0]
    assert len(large.texts) == 0 and large.get_images()[0].get_array().shape == (25, 25)


@pytest.mark.parametrize("matrix,names,match", [
    ([[1, 2], [3, 4]], ["a"], "class_names has 1 names for 2 classes"),
    ([[1, 2, 3], [4, 5, 6]], None, "must be a square list of lists"),
])
def test_bad_confusion_matrix_gives_one_line_error(matrix, names, match):
    with pytest.raises(ValueError, match=match) as error:
        draw_confusion_matrix(matrix, names)
    assert "\n" not in str(error.value)


def test_missing_workdir_gives_one_line_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError) as error:
        plot_run(missing)
    message = str(error.value)
    assert message == f"no workdir at {missing}; pass the --workdir of a run"


@pytest.mark.parametrize("content", [None, "", '{"step": 1, "train_l\n'])
def test_no_metrics_gives_one_line_error(tmp_path, content):
    if content is not None:
        (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(ValueError, match="has no metrics yet; train first with "
                                         "python -m train --workdir") as error:
        plot_run(str(tmp_path))
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
    assert not (tmp_path / "plots").exists()
