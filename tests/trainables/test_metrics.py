"""Top-k, confusion matrix and macro precision / recall / F1 on batches counted by hand."""

from __future__ import annotations

import math

import pytest
import torch

from hpsearch.trainables.metrics import Meter, confusion_matrix, macro_prf

# 8 test images of 3 classes. Rows: true class; columns: predicted class.
#            pred 0  1  2
# true 0          3  0  1
# true 1          0  2  0
# true 2          0  2  0
TARGET = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
PRED = torch.tensor([0, 0, 0, 2, 1, 1, 1, 1])
CM = [[3, 0, 1], [0, 2, 0], [0, 2, 0]]


def test_confusion_matrix_counts_true_by_predicted() -> None:
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == torch.int64 and cm.tolist() == CM
    assert confusion_matrix(PRED, TARGET, 4).tolist() == [row + [0] for row in CM] + [[0] * 4]


def test_macro_scores_by_hand() -> None:
    # precision = diagonal / column: 3/3, 2/4, 0/1; recall = diagonal / row: 3/4, 2/2, 0/2
    # F1 per class = 2PR / (P + R): 6/7, 2/3, 0
    scores = macro_prf(torch.tensor(CM))
    assert scores == pytest.approx({"precision": (1 + 1 / 2 + 0) / 3,
                                    "recall": (3 / 4 + 1 + 0) / 3,
                                    "f1": (6 / 7 + 2 / 3 + 0) / 3})


def test_a_class_never_seen_nor_predicted_scores_zero_and_counts_in_the_mean() -> None:
    scores = macro_prf(confusion_matrix(PRED, TARGET, 4))
    assert scores == pytest.approx({"precision": 1.5 / 4, "recall": 1.75 / 4,
                                    "f1": (6 / 7 + 2 / 3) / 4})


def test_perfect_and_all_wrong_predictions() -> None:
    assert macro_prf(confusion_matrix(TARGET, TARGET, 3)) == {"precision": 1.0, "recall": 1.0,
                                                              "f1": 1.0}
    wrong = confusion_matrix((TARGET + 1) % 3, TARGET, 3)
    assert macro_prf(wrong) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_meter_counts_top1_top3_and_the_mean_loss_over_uneven_batches() -> None:
    # 5 classes; the true class ranks 1st, 2nd, 5th and 3rd in the four samples.
    logits = torch.tensor([[9.0, 1, 2, 3, 4], [1, 9, 8, 2, 3], [9, 8, 7, 1, 6], [0, 5, 4, 3, 1]])
    y = torch.tensor([0, 2, 3, 3])
    meter = Meter(keep_preds=True)
    meter.update(logits[:1], y[:1], torch.tensor(0.5))
    meter.update(logits[1:], y[1:], torch.tensor(2.0))
    result = meter.result("val")
    assert result == pytest.approx({"val_loss": (0.5 * 1 + 2.0 * 3) / 4, "val_top1": 1 / 4,
                                    "val_top3": 3 / 4})
    assert torch.cat(meter.preds).tolist() == [0, 1, 0, 1]
    assert meter.samples == 4


def test_meter_with_fewer_than_three_classes_top3_is_every_sample() -> None:
    meter = Meter()
    meter.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]),
                 torch.tensor(math.log(2)))
    assert meter.result("train") == pytest.approx(
        {"train_loss": math.log(2), "train_top1": 0.5, "train_top3": 1.0})
