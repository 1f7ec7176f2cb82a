"""Fixtures for the search tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3_server import S3Server


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A private local Ray instance (2 CPUs) for one test module; sweeps in it reuse it."""
    import ray

    # address="local": a new instance even when another cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 API (moto's server) on 127.0.0.1 with the bucket ``hpsearch-test``."""
    with S3Server(tmp_path_factory.mktemp("moto"), bucket="hpsearch-test") as server:
        yield server


@pytest.fixture(scope="session")
def _empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with MLflow's tables made: its migrations take seconds, so
    they run once a session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_db(tmp_path: Path, _empty_mlflow_db: Path) -> str:
    """The tracking URI of a new, empty MLflow SQLite store ``tmp_path/mlflow.db``, as MLflow
    makes one (a copy of :func:`_empty_mlflow_db`)."""
    shutil.copyfile(_empty_mlflow_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
