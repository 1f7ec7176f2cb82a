"""The shared drawing and confusion-matrix format of search.figures."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from hpsearch.search.figures import (
    confusion_classes,
    confusion_csv,
    draw_confusion,
    draw_series,
    read_confusion,
)


def test_confusion_csv_reads_back_as_written() -> None:
    matrix = [[5.0, 1.0, 0.0], [2.0, 7.0, 1.0], [0.0, 0.0, 9.0]]
    text = confusion_csv(matrix)
    assert text.splitlines()[0] == "true\\pred,0,1,2"
    assert text.splitlines()[2] == "1,2,7,1"
    assert read_confusion(text) == matrix
    assert read_confusion("true\\pred,0\n0,x\n") is None
    assert read_confusion("") is None


def test_confusion_names_the_classes() -> None:
    matrix = [[5.0, 1.0], [2.0, 7.0]]
    text = confusion_csv(matrix, ["T-shirt/top", "a, b"])
    assert read_confusion(text) == matrix
    assert confusion_classes(text) == ["T-shirt/top", "a, b"]
    assert confusion_classes(confusion_csv(matrix)) == ["0", "1"]
    ax = Figure().subplots()
    draw_confusion(ax, matrix, ["T-shirt/top", "a, b"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["T-shirt/top", "a, b"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["T-shirt/top", "a, b"]


def test_series_skip_non_numbers_and_say_when_nothing_is_finite() -> None:
    ax = Figure().subplots()
    draw_series(ax, [1, 2, 3], {"train": [0.9, math.nan, 0.5], "val": [None, 0.7, 0.6]}, "loss")
    assert [list(line.get_xdata()) for line in ax.lines] == [[1, 3], [2, 3]]
    assert list(ax.get_xticks()) == [1, 2, 3] and ax.get_ylabel() == "loss"
    empty = Figure().subplots()
    draw_series(empty, [1], {"train": [math.inf]}, "loss")
    assert not empty.lines and [t.get_text() for t in empty.texts] == ["not finite"]


def test_counts_in_the_cells_need_no_colour_bar_but_many_classes_get_one() -> None:
    small = Figure().subplots()
    draw_confusion(small, [[5.0, 1.0], [2.0, 7.0]])
    assert len(small.figure.axes) == 1 and len(small.texts) == 4  # the counts, no colour bar
    large = Figure().subplots()
    draw_confusion(large, [[float(i == j) for j in range(21)] for i in range(21)])
    assert len(large.figure.axes) == 2 and not large.texts  # too many cells to write counts


def test_a_one_epoch_trial_gets_its_confusion_matrix_but_no_one_point_curve(tmp_path) -> None:
    from hpsearch.search.tracking.finish import _artifacts
    from hpsearch.trainables.vocab import Status

    row = {"epoch": 1, "train_loss": 0.9, "val_loss": 1.0, "val_top1": 0.5,
           "test_confusion": [[3, 1], [0, 4]]}
    names = {p.name for p in _artifacts("t", Status.COMPLETED, [row], tmp_path, None)}
    assert names == {"confusion.csv", "confusion.png"}
    names = {p.name for p in _artifacts("t", Status.COMPLETED, [row, {**row, "epoch": 2}],
                                        tmp_path, None)}
    assert names == {"curves.png", "confusion.csv", "confusion.png"}


def test_a_trial_of_a_few_seconds_gets_its_confusion_matrix_as_csv_only(tmp_path) -> None:
    """Thousands of tiny trials: figures would cost the writer more than the trials take."""
    from hpsearch.search.tracking.finish import FIGURES_MIN_S, _artifacts
    from hpsearch.trainables.vocab import Status

    rows = [{"epoch": e, "train_loss": 0.9, "val_loss": 1.0, "epoch_seconds": 0.4,
             "test_confusion": [[3, 1], [0, 4]] if e == 2 else None} for e in (1, 2)]
    names = {p.name for p in _artifacts("t", Status.COMPLETED, rows, tmp_path, None)}
    assert names == {"confusion.csv"}
    rows[0]["epoch_seconds"] = FIGURES_MIN_S
    names = {p.name for p in _artifacts("t", Status.COMPLETED, rows, tmp_path, None)}
    assert names == {"curves.png", "confusion.csv", "confusion.png"}
