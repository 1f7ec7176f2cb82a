"""Security properties a user relies on, checked on the real files and code paths."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.driver import hpsearch

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())


def test_every_published_port_is_bound_to_loopback() -> None:
    published = [(name, p) for name, svc in COMPOSE["services"].items()
                 for p in svc.get("ports", [])]
    assert published, "the compose file publishes the dashboard and MLflow"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert not any(":6379" in str(p) for _, p in published), "Ray's GCS port stays private"


def test_ray_nodes_require_token_auth() -> None:
    for name in ("ray-head", "ray-worker"):
        env = COMPOSE["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert ":?" in str(env["RAY_AUTH_TOKEN"]), "no default token: compose refuses to start"


def test_mlflow_server_checks_host_headers() -> None:
    entry = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "--allowed-hosts" in entry
    assert "MLFLOW_ALLOWED_HOSTS" in COMPOSE["services"]["mlflow"]["environment"]


def test_no_secrets_are_committed_or_baked_in() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert "docker/.env" not in tracked and "docker/mlflow-auth.ini" not in tracked
    example = (ROOT / "docker" / ".env.example").read_text()
    values = [line.split("=", 1)[1] for line in example.splitlines()
              if "=" in line and not line.startswith("#")]
    secrets = [v for v, line in zip(values, example.splitlines(), strict=False)
               if "TOKEN" in line or "PASSWORD" in line]
    assert all(v.startswith("replace-with") for v in secrets)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text().upper()
    assert "PASSWORD=" not in dockerfile and "RAY_AUTH_TOKEN=" not in dockerfile
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the build context is an allow-list"
    assert not any(r in ("!docker/", "!docker/.env", "!docker/*") for r in rules)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(_Exploit.target),))

    target = ""


def test_a_malicious_checkpoint_cannot_run_code(tmp_path: Path) -> None:
    from hpsearch.trainables.tune_adapter import CHECKPOINT_FILE, latest_checkpoint_state

    ckpt = tmp_path / "checkpoint_000000"
    ckpt.mkdir()
    _Exploit.target = str(tmp_path / "pwned")
    (ckpt / CHECKPOINT_FILE).write_bytes(pickle.dumps({"epoch": 1, "x": _Exploit()}))
    (ckpt / "COMPLETE").touch()
    with pytest.raises(pickle.UnpicklingError):
        latest_checkpoint_state(tmp_path, None)
    assert not (tmp_path / "pwned").exists()


def _copied_sweep(root: Path, **meta: str) -> Path:
    """A sweep folder as someone else may have left it (on S3, in a tarball): one trial and
    an ``hpsearch.json`` whose names are not ours to trust."""
    trial = root / "copied" / "sw" / "trial_a"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"lr": 0.1}))
    (trial / "result.json").write_text(json.dumps(
        {"trial_id": "a", "val_top1": 0.5, "training_iteration": 1, "epoch": 1}))
    (trial.parent / "hpsearch.json").write_text(json.dumps(
        {"name": "sw", "tracking_uri": "sqlite:///mlflow.db", **meta}))
    return trial.parent


def test_a_copied_sweep_cannot_lead_the_report_out_of_results(tmp_path: Path) -> None:
    sweep = _copied_sweep(tmp_path, name="../escaped")
    out = hpsearch("report", str(sweep), "--out", "results", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "the sweep's name: must be a plain folder name" in out.stderr
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "results").exists()


def test_a_copied_sweep_cannot_lead_mlflow_artifacts_out(tmp_path: Path) -> None:
    sweep = _copied_sweep(tmp_path, experiment="../../x")
    out = hpsearch("sync", str(sweep), cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "hpsearch.json experiment: must be a plain folder name" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied"]


def test_error_lines_cannot_drive_the_terminal(tmp_path: Path) -> None:
    spec = {"name": "x", "budget": {"max_epochs": 1, "trials": 1},
            "space": {"\x1b]0;pwned\x07\x1b[2J": [1]}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = hpsearch("sweep", "s.yaml", cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "space.\\x1b]0;pwned\\x07\\x1b[2J: not a trial" in out.stderr
    assert not any(ch in out.stderr for ch in "\x1b\x07"), out.stderr
