"""Classification metrics computed from logits: top-k, confusion matrix, macro P/R/F1."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Meter", "confusion_matrix", "macro_prf"]


@dataclass
class Meter:
    """Accumulates loss and top-1/top-3 hits over batches without a host sync per batch."""

    samples: int = 0
    loss_sum: torch.Tensor | float = 0.0
    top1: torch.Tensor | int = 0
    top3: torch.Tensor | int = 0
    preds: list[torch.Tensor] = field(default_factory=list)
    keep_preds: bool = False

    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Add one batch: ``loss`` is the batch's mean loss."""
        n = y.shape[0]
        k = min(3, logits.shape[1])
        topk = logits.detach().topk(k, dim=1).indices
        hits = topk.eq(y[:, None])
        self.samples += n
        self.loss_sum = self.loss_sum + loss.detach().float() * n
        self.top1 = self.top1 + hits[:, 0].sum()
        self.top3 = self.top3 + hits.any(dim=1).sum()
        if self.keep_preds:
            self.preds.append(topk[:, 0].cpu())

    def result(self, prefix: str) -> dict[str, float]:
        """``{prefix}_loss``, ``{prefix}_top1``, ``{prefix}_top3`` (accuracies as fractions)."""
        n = max(self.samples, 1)
        return {
            f"{prefix}_loss": float(self.loss_sum) / n,
            f"{prefix}_top1": float(self.top1) / n,
            f"{prefix}_top3": float(self.top3) / n,
        }


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[true, predicted]`` counts as an int64 ``num_classes x num_classes`` tensor."""
    idx = target.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def macro_prf(confusion: torch.Tensor) -> dict[str, float]:
    """Macro-averaged precision, recall and F1 from a confusion matrix (0 where undefined)."""
    cm = confusion.double()
    tp = cm.diag()
    predicted = cm.sum(dim=0)
    actual = cm.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12),
                     torch.zeros_like(tp))
    return {"precision": precision.mean().item(), "recall": recall.mean().item(),
            "f1": f1.mean().item()}
