"""GPU: AMP bf16 + channels_last against fp32, trials packed on one GPU, a sweep's efficiency.

For a machine with an NVIDIA GPU (the README's "GPUs"); a few minutes on one H100. Each part
prints figures measured in this run and their ratios:

1. speed: img/s of hpsearch's epoch loop (``fit``) for the default CNN and resnet18 on
   CIFAR-shaped data (3x32x32 uint8 images, 10 classes; random pixels: the device machine
   cannot fetch CIFAR-10, and speed does not depend on the pixels), AMP + channels_last (the
   defaults on CUDA; bf16 where the device has it) against fp32 (target: >= 2x on resnet18).
   The last epoch of each run counts: the first carries cuDNN's autotuning.
2. packing: 1, 2, 4, 8 and 16 trials of the default CNN training at once on one GPU, each in
   its own process with its own copy of the data on the device, as Ray places trials with
   ``resources.gpu`` 1, 1/2, ... 1/16: aggregate img/s over the epochs after the first, GPU
   utilisation sampled by nvidia-smi meanwhile (target: >= 80 %), and device memory per trial
   (torch's peak allocation in each trial; and nvidia-smi's used memory while they train, less
   what was in use before they started, per trial, which adds each process's CUDA context).
3. sweep: a real hpsearch sweep (Ray Tune, Optuna, MLflow) of ``--sweep-trials`` trials of the
   default CNN with ``resources.gpu`` 1/``--sweep-pack``: sweep efficiency = sum of the trials'
   epoch seconds / (wall seconds x slots) (target >= 0.85). Needs Ray, MLflow and Optuna; where
   they are not installed the part says so and is skipped.

Without CUDA, ``--smoke`` runs every part on the CPU at toy sizes: a check of the script
itself, whose numbers mean nothing.

Usage: python bench/gpu.py [--smoke] [--parts speed packing sweep] [--train 45000]
       [--epochs 3] [--packs 1 2 4 8 16] [--sweep-trials 32] [--sweep-pack 8]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout, not installed

import torch  # noqa: E402
from _common import machine  # noqa: E402  (bench/, the script's folder, is on the path)

from hpsearch.trainables.bundle import DataBundle  # noqa: E402
from hpsearch.trainables.config import TrialConfig  # noqa: E402

CLASSES = tuple(f"class{i}" for i in range(10))


def cifar_shaped(n_train: int, n_eval: int, seed: int = 0) -> DataBundle:
    """Random uint8 3x32x32 images with 10 labels, as a dataset loader returns them."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                torch.randint(0, 10, (n,), dtype=torch.int64, generator=gen))

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(n_train), split(n_eval), \
        split(n_eval)
    return DataBundle("cifar_shaped", CLASSES, train_x, train_y, val_x, val_y, test_x, test_y,
                      mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29))


def train(config: TrialConfig, bundle: DataBundle) -> list[dict[str, Any]]:
    """``fit`` the config; each epoch's metrics with the wall time it ended at."""
    from hpsearch.trainables.fit import fit

    epochs: list[dict[str, Any]] = []
    fit(config, lambda metrics, _state: epochs.append({**metrics, "ended": time.time()}),
        data=bundle)
    return epochs


def speed(args: argparse.Namespace, device: str) -> None:
    bundle = cifar_shaped(args.train, args.eval)
    print(f"\n1. speed: img/s of fit's last epoch, {args.train} CIFAR-shaped images, batch "
          f"{args.batch}, {args.speed_epochs} epochs a run, median of {args.repeats} runs; "
          f"TF32 for fp32 convolutions: {torch.backends.cudnn.allow_tf32}, matmuls: "
          f"{torch.backends.cuda.matmul.allow_tf32}")
    print("| model | fp32 img/s | AMP + channels_last img/s | ratio |")
    print("|---|---|---|---|")
    for model in ("cnn", "resnet18"):
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):  # interleaved: drift hits both alike
            for fast in (False, True):
                config = TrialConfig(model=model, epochs=args.speed_epochs,
                                     batch_size=args.batch, device=device, amp=fast,
                                     channels_last=fast)
                rates[fast].append(train(config, bundle)[-1]["images_per_second"])
        slow, quick = statistics.median(rates[False]), statistics.median(rates[True])
        target = " (target >= 2)" if model == "resnet18" else ""
        print(f"| {model} | {slow:,.0f} | {quick:,.0f} | {quick / slow:.2f}{target} |")


class GpuSampler:
    """GPU 0's utilisation (%) and used memory (MiB) every 200 ms, stamped as read: through
    NVML (nvidia-ml-py) where it imports, else by asking nvidia-smi each time (its own loop
    mode buffers its output when piped, so its lines arrive late)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._read = self._nvml() or (self._smi if shutil.which("nvidia-smi") else None)
        if self._read is not None and torch.cuda.is_available():
            threading.Thread(target=self._loop, daemon=True).start()

    def _nvml(self) -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - no NVML here: nvidia-smi instead
            return None

        def read() -> tuple[float, float]:
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            return float(util), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        return read

    @staticmethod
    def _smi() -> tuple[float, float]:
        line = subprocess.run(["nvidia-smi", "-i", "0", "--query-gpu=utilization.gpu,memory.used",
                               "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=10).stdout
        util, used = (float(x) for x in line.split(","))
        return util, used

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                util, used = self._read()
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
            self.samples.append((time.time(), util, used))

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        return [(u, m) for t, u, m in self.samples if start <= t <= end]

    def close(self) -> None:
        self._stop.set()


def _packed_trial(config_json: str, n_train: int, n_eval: int, seed: int, go: Any,
                  out: Any) -> None:
    """One packed trial: its own process, data and CUDA context, like a Ray trial worker."""
    torch.set_num_threads(1)
    config = TrialConfig.model_validate_json(config_json)
    bundle = cifar_shaped(n_train, n_eval, seed)
    go.wait()  # every trial starts training together
    epochs = train(config, bundle)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    out.put([{k: e[k] for k in ("ended", "train_samples", "epoch_seconds")} for e in epochs]
            + [{"peak": peak}])


def packing(args: argparse.Namespace, device: str) -> None:
    config = TrialConfig(model="cnn", epochs=args.epochs, batch_size=args.batch, device=device)
    print(f"\n2. packing: trials of the default CNN at once on one GPU, each its own process "
          f"and data copy ({args.train * 3 * 32 * 32 / 2**20:,.0f} MB of training images); "
          f"{args.train} images x {args.epochs} epochs each, batch {args.batch}; img/s over "
          "the epochs after the first")
    print("| trials | aggregate img/s | per trial img/s | vs 1 trial | GPU util % (mean) | "
          "peak allocated / trial MB | nvidia-smi used / trial MB |")
    print("|---|---|---|---|---|---|---|")
    ctx = mp.get_context("spawn")  # CUDA in children needs spawn
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # what part 1 left cached in this process's own context
    sampler = GpuSampler()
    single = None
    try:
        for n in args.packs:
            time.sleep(0.5)
            idle = [m for _, _, m in sampler.samples[-2:]]  # used before these trials start
            base = min(idle) if idle else 0.0
            go, out = ctx.Barrier(n + 1), ctx.Queue()
            procs = [ctx.Process(target=_packed_trial, args=(
                config.model_dump_json(), args.train, args.eval, i, go, out)) for i in range(n)]
            for p in procs:
                p.start()
            go.wait(timeout=args.pack_timeout)
            results = [out.get(timeout=args.pack_timeout) for _ in procs]
            for p in procs:
                p.join()
            epochs = [r[:-1] for r in results]
            start = min(e[0]["ended"] for e in epochs)  # the first epoch ended: past warm-up
            end = max(e[-1]["ended"] for e in epochs)
            images = sum(x["train_samples"] for e in epochs for x in e[1:])
            rate = images / max(end - start, 1e-9)
            single = single or rate
            seen = sampler.between(start, end)
            util = f"{statistics.mean(u for u, _ in seen):.0f}" if seen else "n/a"
            used = f"{(max(m for _, m in seen) - base) / n:,.0f}" if seen else "n/a"
            peak = statistics.mean(r[-1]["peak"] for r in results) / 2**20
            print(f"| {n} | {rate:,.0f} | {rate / n:,.0f} | {rate / single:.2f} | {util} | "
                  f"{peak:,.0f} | {used} |")
    finally:
        sampler.close()
    print("target: GPU utilisation >= 80 % with small-CNN trials packed")


def sweep_part(args: argparse.Namespace, device: str) -> None:
    try:
        import mlflow  # noqa: F401
        import optuna  # noqa: F401
        import ray  # noqa: F401
    except ImportError as err:
        print(f"\n3. sweep: skipped ({err.name} is not installed here; it needs Ray, MLflow "
              "and Optuna)")
        return
    from _common import sweep, trial_rows

    from tests.fakedata import write_cifar10

    gpu = 1 / args.sweep_pack if device == "cuda" else 0
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar10(Path(tmp) / "cifar", n_train=args.sweep_train, n_test=args.eval)
        lrs = [round(10 ** (-3.5 + 2 * i / max(1, args.sweep_trials - 1)), 6)
               for i in range(args.sweep_trials)]
        spec = {"name": "bench_gpu_sweep",
                "fixed": {"dataset": "cifar10", "data_dir": str(data), "model": "cnn",
                          "batch_size": args.batch, "eval_limit": args.eval, "device": device},
                "space": {"lr": {"type": "grid", "values": lrs}},
                "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
                "budget": {"max_epochs": args.sweep_epochs},
                "resources": {"cpu": 1, "gpu": gpu}}
        outcome, wall = sweep(spec, Path(tmp))
        rows = trial_rows(outcome)
    cpus = os.cpu_count() or 1  # 1 CPU a trial
    slots = min(cpus, args.sweep_pack) if device == "cuda" else cpus
    busy = sum(r["epoch_seconds"] for trial in rows.values() for r in trial)
    print(f"\n3. sweep: {len(rows)} trials of the default CNN, {args.sweep_train} CIFAR-shaped "
          f"images x {args.sweep_epochs} epochs, gpu {gpu:g} each ({slots} at once); wall "
          f"{wall:.1f} s, trial seconds {busy:.1f}")
    print(f"sweep efficiency = {busy / (wall * slots):.2f}  (target >= 0.85); start overhead "
          f"per trial {(wall * slots - busy) / max(1, len(rows)):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="no GPU: every part on the CPU at toy sizes (checks the script)")
    parser.add_argument("--parts", nargs="+", default=["speed", "packing", "sweep"],
                        choices=["speed", "packing", "sweep"])
    parser.add_argument("--train", type=int, default=45000, help="training images (CIFAR-10's)")
    parser.add_argument("--eval", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--speed-epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each packed trial")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--pack-timeout", type=float, default=240)
    parser.add_argument("--sweep-trials", type=int, default=32)
    parser.add_argument("--sweep-pack", type=int, default=8, help="trials per GPU in the sweep")
    parser.add_argument("--sweep-train", type=int, default=20000)
    parser.add_argument("--sweep-epochs", type=int, default=3)
    args = parser.parse_args()
    if args.smoke:
        args.train, args.eval, args.batch, args.repeats = 256, 64, 64, 1
        args.epochs, args.packs, args.speed_epochs = 2, [1, 2], 2
        args.sweep_trials, args.sweep_train, args.sweep_epochs = 2, 500, 1
        device = "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        sys.exit("bench/gpu.py: no CUDA device here; --smoke checks the script on the CPU")
    print(f"machine: {machine()}")
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, bf16 "
              f"{torch.cuda.is_bf16_supported()}")
    started = time.perf_counter()
    for part in args.parts:
        {"speed": speed, "packing": packing, "sweep": sweep_part}[part](args, device)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
