"""GPU scheduling and packing, proven on CPUs: a Ray node that advertises 4 logical GPUs.

The trials' tensors stay on the CPU (``device: cpu``); what is checked is what Ray and hpsearch
decide: how many trials run at once for ``gpu`` 1, 0.5 and 0.25, which GPU each one was given
(``CUDA_VISIBLE_DEVICES``, recorded per epoch), and that a trial without a GPU sees none.

The packing test runs a plugin trainable, ``barrier``: each trial waits until as many trials
as the packing allows have started, then holds its slot 2 s. Its trials overlap whatever the
machine's load (a coarser packing than asked never reaches the barrier and fails), and it
trains nothing, so 18 trials take seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpsearch.search.preflight import packing_note
from hpsearch.search.runner import run_sweep
from hpsearch.search.spec import parse_spec
from hpsearch.trainables.errors import UserError

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_db")]


BARRIER = """
import os, time
from pathlib import Path
from pydantic import BaseModel, Field
from hpsearch import register_trainable

class BarrierSettings(BaseModel):
    barrier_dir: str = ""
    barrier_n: int = Field(1, ge=1)

@register_trainable("barrier", metrics={"waited_s": "min"}, settings=BarrierSettings,
                    uses=("seed",))
def barrier(config, report, state):
    folder = Path(config.barrier_dir)
    (folder / f"{os.getpid()}-{time.time_ns()}").touch()
    start = time.monotonic()
    while len(os.listdir(folder)) < config.barrier_n:
        if time.monotonic() - start > 120:
            raise RuntimeError(f"{len(os.listdir(folder))} of {config.barrier_n} trials at once")
        time.sleep(0.05)
    time.sleep(2.0)
    report({"waited_s": time.monotonic() - start}, None)
"""


@pytest.fixture(scope="module")
def four_gpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A local Ray with 16 CPUs and 4 logical GPUs whose workers (and this driver) can import
    the ``barrier`` plugin."""
    import os
    import sys

    import ray

    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "barrier_plugin.py").write_text(BARRIER)
    sys.path.insert(0, str(plugins))
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugins), before]))
    ray.init(address="local", num_cpus=16, num_gpus=4, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()
    sys.path.remove(str(plugins))
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


def _spec(tmp_path: Path, data_dir: Path, name: str, gpu: float, trials: int,
          device: str = "cpu") -> dict[str, Any]:
    return {
        "name": name,
        "fixed": {"dataset": "mnist", "data_dir": str(data_dir), "channels": [4, 8],
                  "fc_width": 16, "batch_size": 32, "device": device},
        "space": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
        "search": {"algorithm": "random", "seed": 0},
        "scheduler": {"name": "none"},
        "budget": {"trials": trials, "max_epochs": 1},
        "resources": {"cpu": 0.5, "gpu": gpu},
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }


def _run(spec: dict[str, Any]) -> tuple[Any, list[str]]:
    lines: list[str] = []
    return run_sweep(parse_spec(spec), yaml.safe_dump(spec), echo=lines.append), lines


def _spans(run_dir: Path) -> list[dict[str, Any]]:
    """Each trial's training time, as an interval surely inside the real one: Ray's result
    ``timestamp`` is whole seconds (the true time is up to 1 s later), so the start is moved
    1 s later; two such intervals that overlap prove the trials really ran at once."""
    out = []
    for d in sorted(run_dir.glob("trial_*")):
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        out.append({"start": rows[0]["timestamp"] - rows[0]["time_this_iter_s"] + 1.0,
                    "end": rows[-1]["timestamp"], "gpus": rows[-1]["gpu_ids"]})
    return out


def _most_at_once(spans: list[dict[str, Any]]) -> tuple[int, list[list[dict[str, Any]]]]:
    """The largest number of trials training at one moment, and every such moment's trials."""
    moments = [s["start"] for s in spans]
    groups = [[s for s in spans if s["start"] <= t < s["end"]] for t in moments]
    return max(len(g) for g in groups), groups


@pytest.mark.usefixtures("four_gpus")
@pytest.mark.parametrize(("gpu", "at_once"), [(1, 4), (0.5, 8), (0.25, 16)])
def test_gpu_fractions_pack_trials_as_ray_places_them(
        tmp_path: Path, gpu: float, at_once: int) -> None:
    spec = _spec(tmp_path, tmp_path, f"g{at_once}", gpu, at_once + 2)
    (tmp_path / "barrier").mkdir()
    spec["plugins"] = ["barrier_plugin"]
    spec["fixed"] = {"trainable": "barrier", "barrier_dir": str(tmp_path / "barrier"),
                     "barrier_n": at_once}
    spec["space"] = {"seed": {"type": "int", "low": 0, "high": 10**6}}
    spec["objective"] = {"metric": "waited_s"}
    outcome, lines = _run(spec)
    assert lines[0].startswith(f"hpsearch sweep 'g{at_once}': {at_once + 2} trials, "
                               f"{at_once} at once (0.5 CPU, {gpu:g} GPU each")
    spans = _spans(outcome.run_dir)
    assert len(spans) == at_once + 2
    most, groups = _most_at_once(spans)
    assert most <= at_once  # never more than the devices hold
    assert most == at_once  # packing happened: the barrier let every slot's trial through
    for group in groups:  # at any moment no device holds more than 1/gpu trials
        per_device = Counter(s["gpus"] for s in group)
        assert max(per_device.values()) <= round(1 / gpu)
    assert {s["gpus"] for s in spans} <= {"0", "1", "2", "3"}  # one device each, a real one
    # which GPU each trial used: an MLflow tag and a report column, equal to Ray's record
    from mlflow import MlflowClient

    from hpsearch.search.report import load_trials

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(f"g{at_once}")
    tagged = {r.data.tags["hpsearch.trial_id"]: r.data.tags.get("hpsearch.gpu_ids")
              for r in client.search_runs([exp.experiment_id], "tags.`hpsearch.role` = 'trial'")}
    trials = load_trials(f"g{at_once}", storage=str(tmp_path / "runs")).trials
    assert dict(zip(trials["trial_id"], trials["gpus"], strict=True)) == tagged
    assert sorted(tagged.values()) == sorted(s["gpus"] for s in spans)


@pytest.mark.usefixtures("four_gpus")
def test_a_trial_without_a_gpu_sees_none(tmp_path: Path, tiny_mnist_dir: Path) -> None:
    outcome, _ = _run(_spec(tmp_path, tiny_mnist_dir, "nogpu", 0, 2, device="auto"))
    for d in outcome.run_dir.glob("trial_*"):
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        assert rows[-1]["gpu_ids"] == "" and rows[-1]["device"] == "cpu"


@pytest.mark.usefixtures("four_gpus")
def test_more_gpus_per_trial_than_a_node_has_is_one_line(
        tmp_path: Path, tiny_mnist_dir: Path) -> None:
    with pytest.raises(UserError) as err:
        _run(_spec(tmp_path, tiny_mnist_dir, "big", 8, 1))
    assert str(err.value) == ("resources.gpu: 8 GPU per trial asked for, but no node has more "
                              "than 4; set resources.gpu: at most 4")
    assert not (tmp_path / "runs" / "big" / "trial_").exists()


def test_a_fraction_that_wastes_part_of_a_device_warns() -> None:
    base = {"name": "w", "fixed": {"dataset": "mnist"}, "space": {"lr": [0.1, 0.01]},
            "search": {"algorithm": "grid"}, "budget": {"max_epochs": 1}}
    note = packing_note(parse_spec({**base, "resources": {"gpu": 0.3}}))
    assert note == ("warning: resources.gpu: 0.3 packs 3 trials per GPU, not 3.33 (10% of each "
                    "device stays unclaimed); 1/3 = 0.333 claims it all")
    for exact in (0.25, 0.5, 1, 0):
        assert packing_note(parse_spec({**base, "resources": {"gpu": exact}})) is None


def test_gpu_trials_go_to_the_node_that_has_gpus(tmp_path: Path, tiny_mnist_dir: Path) -> None:
    """A 2-node ``ray start`` cluster where only the worker advertises GPUs: a sweep that joins
    it with ``--address`` puts every GPU trial there, and CPU-only trials anywhere."""
    import subprocess
    import sys

    from tests.raycluster import cluster_env, two_nodes

    env = cluster_env(tmp_path)
    with two_nodes(env, gpus=(0, 2)) as (_address, gcs):
        listing = subprocess.run(
            [sys.executable, "-c", "import json, ray; ray.init(address='auto', "
             "logging_level='ERROR'); print(json.dumps({n['NodeID']: n['Resources'].get('GPU', 0)"
             " for n in ray.nodes() if n['Alive']}))"],
            env={**env, "RAY_ADDRESS": gcs}, capture_output=True, text=True, timeout=120)
        gpus_of = json.loads(listing.stdout.strip().splitlines()[-1])
        assert sorted(gpus_of.values()) == [0, 2]
        spec = _spec(tmp_path, tiny_mnist_dir, "placed", 1, 3)
        spec["resources"] = {"cpu": 0.5, "gpu": 1}
        spec["storage"] = env["HPSEARCH_STORAGE"]
        (tmp_path / "placed.yaml").write_text(yaml.safe_dump(spec))
        out = subprocess.run([sys.executable, "-m", "hpsearch", "sweep", "placed.yaml",
                              "--address", gcs], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=400)
        assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
        assert "2 at once" in out.stdout  # the GPU node's two devices, not the head's CPU
    run_dir = Path(env["HPSEARCH_STORAGE"]) / "placed"
    rows = [json.loads(p.read_text().splitlines()[-1])
            for p in run_dir.glob("trial_*/result.json")]
    assert len(rows) == 3
    assert {gpus_of[r["node_id"]] for r in rows} == {2}  # every trial on the GPU node
    assert {r["gpu_ids"] for r in rows} <= {"0", "1"}
