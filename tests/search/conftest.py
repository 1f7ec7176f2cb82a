"""Fixtures for the search tests."""

from __future__ import annotations

from collections.abc import Iterator

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
