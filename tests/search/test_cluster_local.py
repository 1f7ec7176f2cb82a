"""A real 2-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``),
token auth on, a sweep sent with ``hpsearch submit`` as a Ray Job."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fakedata import write_mnist
from tests.raycluster import cluster_env, two_nodes
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration


@pytest.fixture
def two_node_cluster(tmp_path: Path, request: pytest.FixtureRequest,
                     ) -> Iterator[tuple[str, dict[str, str]]]:
    """Tune's storage on both nodes: a shared folder, or (param "s3") an S3 bucket."""
    storage = None
    if getattr(request, "param", "shared") == "s3":
        s3: S3Server = request.getfixturevalue("s3")
        storage = {**s3.env, "HPSEARCH_STORAGE": f"s3://{s3.bucket}/cluster-runs"}
    env = cluster_env(tmp_path, storage)
    with two_nodes(env) as (address, gcs):
        yield address, {**env, "TEST_RAY_GCS_ADDRESS": gcs}


@pytest.mark.parametrize("two_node_cluster", ["shared", "s3"], indirect=True)
def test_submitted_sweep_runs_on_both_nodes(two_node_cluster: tuple[str, dict[str, str]],
                                            tmp_path: Path, request: pytest.FixtureRequest,
                                            ) -> None:
    address, env = two_node_cluster
    # Trials of a few seconds: with sub-second ones, the first (reused) trial actor can finish
    # them all before the second node's worker has even started.
    data = write_mnist(tmp_path / "data", n_train=3000, n_test=300)
    spec = {"name": "submitted",
            "fixed": {"dataset": "mnist", "data_dir": str(data), "model": "cnn",
                      "channels": [8, 16], "fc_width": 32, "batch_size": 32, "device": "cpu"},
            "space": {"lr": [0.001, 0.002, 0.004, 0.008]},
            "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
            "budget": {"max_epochs": 3}, "resources": {"cpu": 1}}
    spec_file = tmp_path / "submitted.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = subprocess.run([sys.executable, "-m", "hpsearch", "submit", str(spec_file),
                          "--address", address, "--follow"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0 and "SUCCEEDED" in out.stdout, out.stdout[-4000:]
    if env["HPSEARCH_STORAGE"].startswith("s3://"):  # nothing on a shared disk: all in S3
        s3: S3Server = request.getfixturevalue("s3")
        assert not (tmp_path / "shared").exists()
        results = {k: s3.read(k).decode() for k in s3.keys("cluster-runs/submitted")
                   if k.endswith("/result.json")}
        assert any("/checkpoint_" in k for k in s3.keys("cluster-runs/submitted"))
    else:
        run_dir = tmp_path / "shared" / "runs" / "submitted"
        results = {str(p): p.read_text() for p in run_dir.glob("trial_*/result.json")}
    nodes = set()
    for text in results.values():
        rows = [json.loads(line) for line in text.splitlines()]
        assert rows[-1]["status"] == "completed"
        nodes.add(rows[-1]["node_id"])
    assert len(results) == 4
    assert len(nodes) == 2, "trials should have run on both nodes"


def test_submit_without_the_token_is_refused(two_node_cluster: tuple[str, dict[str, str]],
                                             tmp_path: Path) -> None:
    address, env = two_node_cluster
    env = {**env, "RAY_AUTH_TOKEN": "wrong" + secrets.token_hex(8)}
    out = subprocess.run([sys.executable, "-m", "hpsearch", "submit",
                          "studies/quickstart.yaml", "--address", address],
                         env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode != 0
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("how", ["sweep", "submit"])
def test_plugin_only_in_the_drivers_folder_runs_on_both_nodes(
        two_node_cluster: tuple[str, dict[str, str]], tmp_path: Path, how: str) -> None:
    """The plugin package lives in the folder the command runs from, on no node's path: Ray's
    runtime environment ships it (``sweep --address`` and ``submit`` alike). ``sweep`` runs the
    plugin's own training loop; ``submit``, the plugin's model on the plugin's dataset with the
    plugin's augmentation, through hpsearch's own loop."""
    from tests.plugin_pkg import write_plugin

    address, env = two_node_cluster
    driver = write_plugin(tmp_path / "driver")
    if how == "sweep":
        # trials of a few seconds each, so that both nodes' workers take some
        plugins, metric = ["my_lab.models", "my_lab.loops"], "mse"
        fixed = {"trainable": "line_fit", "line_sleep": 1.0}
        space: dict = {"line_lr": [0.01, 0.02, 0.05, 0.1]}
    else:
        # 48,000 images: trials of seconds, outlasting the start of the other node's worker
        # (with 12,000, trials of 1-2 s all ran on one node now and then, its actor reused)
        plugins, metric = ["my_lab.models", "my_lab.data", "my_lab.augment"], "val_top1"
        fixed = {"model": "deep_mlp", "mlp_width": 256, "dataset": "blobs",
                 "blob_train": 48000, "augment": ["invert"], "invert_p": 0.2,
                 "batch_size": 64, "device": "cpu"}
        space = {"mlp_depth": [1, 2, 3, 4]}
    spec = {"name": f"plugin_{how}", "plugins": plugins, "fixed": fixed, "space": space,
            "objective": {"metric": metric},
            "search": {"algorithm": "grid"}, "scheduler": {"name": "none"},
            "budget": {"max_epochs": 3}, "resources": {"cpu": 1}}
    (driver / "plugin.yaml").write_text(yaml.safe_dump(spec))
    if how == "sweep":
        args = ["sweep", "plugin.yaml", "--address", env["TEST_RAY_GCS_ADDRESS"]]
    else:
        args = ["submit", "plugin.yaml", "--address", address, "--follow"]
    out = subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=driver, env=env,
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    run_dir = tmp_path / "shared" / "runs" / f"plugin_{how}"
    nodes = set()
    results = list(run_dir.glob("trial_*/result.json"))
    for path in results:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        assert rows[-1]["status"] == "completed" and metric in rows[-1]
        if how == "submit":  # the plugin model was built, costed and trained
            assert rows[-1]["config"]["model"] == "deep_mlp" and rows[-1]["params"] > 0
            assert rows[-1]["val_top1"] > 0.5  # the blobs' bands are easy to tell apart
        nodes.add(rows[-1]["node_id"])
    assert len(results) == 4
    assert len(nodes) == 2, "trials should have run on both nodes"
