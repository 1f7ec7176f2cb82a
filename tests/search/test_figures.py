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
