"""Plots a person reads: loss curves against iterations with the epoch ends marked, AP in one panel,
and a table of the final numbers instead of plots of single points."""

from __future__ import annotations

import pytest

from detkit.engine import plots
from detkit.engine.plots import epoch_ends, plot_training

# A run of 3 epochs x 5 iterations logged every 2 iterations; an epoch's last iteration is always logged.
ITERATIONS = [{"step": s, "epoch": (s - 1) // 5 + 1, "loss": 10.0 / s, "loss_cls": 5.0 / s, "lr": 0.01 * s}
              for s in (2, 4, 5, 6, 8, 10, 12, 14, 15)]
APS = {"AP": 0.609, "AP50": 0.925, "AP75": 0.695, "APs": 0.563, "APm": 0.701, "APl": 0.587}


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_training saves, by file name (nothing written)."""
    saved = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.setdefault(path.name, fig) and path)
    return saved


@pytest.fixture
def tables(monkeypatch):
    calls = {}

    def record(values, path, title):
        calls[path.name] = (dict(values), title)
        return path

    monkeypatch.setattr(plots, "plot_table", record)
    return calls


def test_epoch_ends_are_the_last_logged_step_of_each_epoch():
    assert epoch_ends(ITERATIONS) == [5, 10, 15]


def test_loss_curves_are_against_iterations_with_epoch_ends_marked(tmp_path, figures, tables):
    rows = [{"epoch": e, "loss": 1.0 / e, "stat_pos_per_gt": 3.0 + e} for e in (1, 2, 3)]
    written = plot_training(rows, tmp_path, ITERATIONS)
    assert [p.name for p in written] == ["losses.png", "assignment.png"]  # no AP: no metrics.png
    axes = {ax.get_title(): ax for ax in figures["losses.png"].axes if ax.get_title()}
    assert sorted(axes) == ["loss", "loss_cls", "lr"]
    logged, smoothed, *marks = axes["loss"].get_lines()
    assert list(logged.get_xdata()) == [r["step"] for r in ITERATIONS]
    assert list(logged.get_ydata()) == [r["loss"] for r in ITERATIONS]
    assert len(smoothed.get_xdata()) == len(ITERATIONS)
    assert sorted(float(m.get_xdata()[0]) for m in marks) == [5.0, 10.0]  # dotted lines between epochs
    assert axes["loss"].get_xlabel() == "iteration"
    assert any(child.get_xlabel() == "epoch" for child in axes["loss"].child_axes)  # the epoch axis on top
    assert "assignment.png" not in tables  # three epochs: curves, not a table


def test_a_single_evaluation_is_a_table_not_single_point_plots(tmp_path, figures, tables):
    rows = [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0, **APS}]
    written = plot_training(rows, tmp_path, ITERATIONS)
    assert "metrics.png" in [p.name for p in written]
    assert tables["metrics.png"] == (APS, "COCO box AP after epoch 2")
    assert "metrics.png" not in figures


def test_several_evaluations_share_one_panel(tmp_path, figures, tables):
    rows = [{"epoch": e, "loss": 1.0 / e, **{k: v * e / 3 for k, v in APS.items()}} for e in (1, 2, 3)]
    plot_training(rows, tmp_path, ITERATIONS)
    assert "metrics.png" not in tables
    [panel] = [ax for ax in figures["metrics.png"].axes if ax.get_title()]
    assert [line.get_label() for line in panel.get_lines()] == list(APS)
    assert list(panel.get_lines()[0].get_xdata()) == [1.0, 2.0, 3.0]


def test_without_training_records_the_losses_are_epoch_means(tmp_path, figures, tables):
    rows = [{"epoch": e, "loss": 1.0 / e, "lr": 0.01} for e in (1, 2)]
    plot_training(rows, tmp_path)
    axes = {ax.get_title(): ax for ax in figures["losses.png"].axes if ax.get_title()}
    assert list(axes["loss"].get_lines()[0].get_xdata()) == [1.0, 2.0] and axes["loss"].get_xlabel() == "epoch"


def test_the_table_figure_is_written(tmp_path):
    path = plots.plot_table(APS, tmp_path / "metrics.png", "COCO box AP after epoch 17")
    assert path.is_file() and path.stat().st_size > 0
