"""Shared fixtures: a hermetic environment and tiny datasets in the real on-disk formats."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakedata import write_cifar10, write_image_folder, write_mnist

# Bytecode is written while testing: with PYTHONDONTWRITEBYTECODE set, as in this CI's
# environment, each xdist worker and each hpsearch command a test starts compiled the
# checkout's modules again, and pytest rewrote every test module's asserts again (4 s a
# worker). Loaded before the workers start (tests/ is pytest's testpath), so they and every
# subprocess inherit it. The .pyc files go to __pycache__/, which git ignores.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

_HERMETIC_ENV = ("HPSEARCH_CACHE", "HPSEARCH_OFFLINE", "HPSEARCH_DATA_DIR")
_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process once every report is written, without the interpreter's teardown.

    This process has held Ray's core worker, torch's thread pools, pyarrow's AWS SDK, MLflow's
    and playwright's clients, all native. One CI run passed every test, printed its summary and
    then died of SIGSEGV in the interpreter's teardown (a known hazard of native libraries at
    exit: pyarrow's S3, apache/arrow#38352), turning a green run red. What can be released is
    released here, in order; then the process exits with pytest's own status. The hpsearch
    commands the tests run are separate processes whose exit codes the tests assert, so their
    own teardown stays tested.
    """
    if hasattr(config, "workerinput") or _EXIT_STATUS not in config.stash:
        return  # an xdist worker (its controller ends it), or pytest ended before a session
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    gc.collect()
    if "pyarrow.fs" in sys.modules:
        import pyarrow.fs

        pyarrow.fs.ensure_s3_finalized()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash[_EXIT_STATUS])


@pytest.fixture(scope="session", autouse=True)
def hermetic_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """For the whole session: caches under a tmp dir, never download, no user data dir."""
    saved = {key: os.environ.get(key) for key in _HERMETIC_ENV}
    cache = tmp_path_factory.mktemp("hpsearch-cache")
    os.environ["HPSEARCH_CACHE"] = str(cache)
    os.environ["HPSEARCH_OFFLINE"] = "1"
    os.environ.pop("HPSEARCH_DATA_DIR", None)
    yield cache
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with MNIST in torchvision's layout: 600 train, 200 test images."""
    return write_mnist(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=200)


@pytest.fixture(scope="session")
def tiny_fashion_flat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with Fashion-MNIST as four flat .gz IDX files, as Debian ships them."""
    return write_mnist(tmp_path_factory.mktemp("fashion-flat"), n_train=600, n_test=200,
                       variant="FashionMNIST", layout="flat_gz", seed=1)


@pytest.fixture(scope="session")
def tiny_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with ``cifar-10-batches-py/``: 500 train, 100 test images."""
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_train=500, n_test=100)


@pytest.fixture(scope="session")
def tiny_image_folder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with 3 class folders of 80 RGB 16x16 PNGs each (no train/test dirs)."""
    return write_image_folder(tmp_path_factory.mktemp("image-folder"), per_class=80)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``hpsearch ARGS`` run in this process: the same ``main()`` as the command, without an
    interpreter and torch start per case (each command path keeps a test of the real command,
    :func:`tests.driver.hpsearch`)."""
    from hpsearch.search.cli import main

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run
