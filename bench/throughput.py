"""Training throughput: hpsearch's epoch loop against plain PyTorch baselines, in one process.

1. Our loop (``fit``) vs a plain loop over in-memory float tensors: same model, data, batch
   size, optimizer and threads (target >= 0.95x).
2. Our loop with hflip + crop augmentation (batched tensor ops) vs a torchvision DataLoader
   with per-sample PIL transforms (RandomHorizontalFlip, RandomCrop(padding=4), ToTensor,
   Normalize) (target >= 2x on CPU).

Prints images/s and the ratios. Usage: ``python bench/throughput.py [--train 12000] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch.utils.data import DataLoader, Subset

from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.data import load_data, resolve_root
from hpsearch.trainables.fit import fit
from hpsearch.trainables.models import build_model


def ours(config: TrialConfig, bundle) -> float:
    return fit(config, data=bundle).metrics["images_per_second"]


def plain_loop(config: TrialConfig, bundle) -> float:
    """The textbook loop: pre-normalised float tensors in memory, shuffled index batches."""
    torch.manual_seed(config.seed)
    model = build_model(config, bundle.in_channels, bundle.image_size, bundle.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    mean, std = bundle.mean[0], bundle.std[0]
    x_all = (bundle.train_x.float() / 255 - mean) / std
    y_all = bundle.train_y
    model.train()
    start = time.perf_counter()
    perm = torch.randperm(len(y_all))
    for i in range(0, len(y_all), config.batch_size):
        idx = perm[i:i + config.batch_size]
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(y_all) / (time.perf_counter() - start)


def pil_dataloader(config: TrialConfig, bundle, workers: int) -> float:
    """torchvision's FashionMNIST with per-sample PIL transforms in DataLoader workers."""
    import torchvision

    root = resolve_root("fashion_mnist", None)  # torchvision's layout (Debian copy bridged)
    mean, std = bundle.mean[0], bundle.std[0]
    tf = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(28, padding=4), T.ToTensor(),
                    T.Normalize((mean,), (std,))])
    ds = torchvision.datasets.FashionMNIST(str(root), train=True, transform=tf)
    ds = Subset(ds, range(len(bundle.train_y)))
    loader = DataLoader(ds, batch_size=config.batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=False)
    torch.manual_seed(config.seed)
    model = build_model(config, bundle.in_channels, bundle.image_size, bundle.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(ds) / (time.perf_counter() - start)


def pipeline_ours(config: TrialConfig, bundle) -> float:
    """Data pipeline alone: gather, scale, augment (hflip + crop), normalise; no model."""
    from hpsearch.trainables.fit import _Batches

    batches = _Batches(bundle, config, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    perm = torch.randperm(len(bundle.train_y))
    for i in range(0, len(perm), config.batch_size):
        batches(bundle.train_x[perm[i:i + config.batch_size]], gen)
    return len(perm) / (time.perf_counter() - start)


def pipeline_pil(config: TrialConfig, bundle, workers: int) -> float:
    """Data pipeline alone: torchvision DataLoader with per-sample PIL transforms; no model."""
    import torchvision

    root = resolve_root("fashion_mnist", None)
    tf = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(28, padding=4), T.ToTensor(),
                    T.Normalize((bundle.mean[0],), (bundle.std[0],))])
    ds = Subset(torchvision.datasets.FashionMNIST(str(root), train=True, transform=tf),
                range(len(bundle.train_y)))
    loader = DataLoader(ds, batch_size=config.batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(ds) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=12000, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (baseline)")
    parser.add_argument("--model", default="cnn", help="cnn (default, compute-bound here) or "
                        "mlp (small: the data pipeline dominates)")
    args = parser.parse_args()
    base = TrialConfig(dataset="fashion_mnist", train_limit=args.train, eval_limit=500,
                       epochs=1, device="cpu", model=args.model)
    aug = base.model_copy(update={"augment": ("hflip", "crop")})
    bundle = load_data(base)
    runs: dict[str, list[float]] = {"ours": [], "plain": [], "ours_aug": [], "pil_aug": [],
                                    "pipe_ours": [], "pipe_pil": []}
    for _ in range(args.repeats):  # interleaved, so drift on a noisy machine hits all alike
        runs["plain"].append(plain_loop(base, bundle))
        runs["ours"].append(ours(base, bundle))
        runs["pil_aug"].append(pil_dataloader(base, bundle, args.workers))
        runs["ours_aug"].append(ours(aug, bundle))
        runs["pipe_pil"].append(pipeline_pil(aug, bundle, args.workers))
        runs["pipe_ours"].append(pipeline_ours(aug, bundle))
    med = {k: statistics.median(v) for k, v in runs.items()}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"machine: {platform.machine()} {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, commit {commit}; model {args.model}, {args.train} images "
          f"x {args.repeats}, DataLoader workers {args.workers}")
    for k, v in med.items():
        print(f"  {k:<9} {v:8.0f} img/s   (runs: {', '.join(f'{x:.0f}' for x in runs[k])})")
    print(f"ratio ours / plain loop               = {med['ours'] / med['plain']:.2f}  "
          f"(target >= 0.95)")
    print(f"ratio ours+aug / PIL DataLoader+aug   = {med['ours_aug'] / med['pil_aug']:.2f}  "
          f"(target >= 2; bounded by plain/PIL = {med['plain'] / med['pil_aug']:.2f} when the "
          "model dominates)")
    print(f"ratio pipeline alone, ours / PIL      = {med['pipe_ours'] / med['pipe_pil']:.2f}  "
          "(hflip + crop + normalise, no model)")


if __name__ == "__main__":
    main()
