"""TPE's own time per suggestion as a study grows: Optuna's TPESampler against hpsearch's
BoundedTPE (the default ``tpe``, modelling at most ``TPE_WINDOW`` finished trials), in one run.

A study of six settings (two log-uniform, two categorical, one int, one more categorical) is
filled with random finished trials up to each size; then, after one untimed ask (Optuna's
search space reads the added trials once), ten asks are timed.

Usage: python bench/tpe_ask.py [--sizes 100,500,1000,2000,5000]
"""

from __future__ import annotations

import argparse
import random
import time

import optuna
from _common import machine
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.search.algorithms import TPE_WINDOW, BoundedTPE

SPACE = {"lr": FloatDistribution(1e-4, 1e-1, log=True),
         "weight_decay": FloatDistribution(1e-6, 1e-3, log=True),
         "batch_size": CategoricalDistribution([32, 64, 128, 256]),
         "optimizer": CategoricalDistribution(["sgd", "adam", "adamw"]),
         "fc_depth": IntDistribution(1, 3),
         "fc_width": CategoricalDistribution([64, 128, 256])}


def draw(rng: random.Random) -> dict[str, object]:
    return {"lr": 10 ** rng.uniform(-4, -1), "weight_decay": 10 ** rng.uniform(-6, -3),
            "batch_size": rng.choice([32, 64, 128, 256]),
            "optimizer": rng.choice(["sgd", "adam", "adamw"]), "fc_depth": rng.randint(1, 3),
            "fc_width": rng.choice([64, 128, 256])}


def ask_ms(sampler: optuna.samplers.BaseSampler, sizes: list[int]) -> list[float]:
    """Mean ms per ask (and tell) at each size of the study."""
    rng = random.Random(0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out, have = [], 0
    for size in sizes:
        study.add_trials([optuna.trial.create_trial(params=draw(rng), distributions=SPACE,
                                                    value=rng.random())
                          for _ in range(size - have)])
        trial = study.ask(SPACE)  # untimed: Optuna's first look at the added trials
        study.tell(trial, rng.random())
        start = time.perf_counter()
        for _ in range(10):
            trial = study.ask(SPACE)
            study.tell(trial, rng.random())
        out.append((time.perf_counter() - start) * 100)  # ms per ask: seconds / 10 * 1000
        have = size + 11
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000,2000,5000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plain = ask_ms(optuna.samplers.TPESampler(seed=0), sizes)
    bounded = ask_ms(BoundedTPE(seed=0), sizes)
    print(f"machine: {machine()}; BoundedTPE window {TPE_WINDOW}")
    for size, p, b in zip(sizes, plain, bounded, strict=True):
        print(f"{size:6d} finished trials: Optuna TPE {p:6.1f} ms per ask, BoundedTPE {b:6.1f} ms "
              f"(ratio {b / p:.2f})")


if __name__ == "__main__":
    main()
