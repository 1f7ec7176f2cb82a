"""Installed, hpsearch lives under its own import name only: a user's ``search`` or
``trainables`` module must never be shadowed by ours (and ours never by theirs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _packages_on_disk() -> set[str]:
    found = {"hpsearch"}
    for top in ("search", "trainables"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(("hpsearch", *init.parent.relative_to(ROOT).parts)))
    return found


def test_pyproject_lists_every_package_under_the_hpsearch_name() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _packages_on_disk()
    assert setuptools["package-dir"]["hpsearch.search"] == "search"


@pytest.mark.integration  # builds a wheel: seconds
def test_the_wheel_claims_no_generic_top_level_name(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: setuptools builds in the source tree (build/)
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "hpsearch", "search", "trainables"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                           if (ROOT / name).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("hpsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = wheel.name.split("-py")[0] + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"hpsearch", dist_info}
    sources = {p.relative_to(ROOT).as_posix() for top in ("search", "trainables")
               for p in (ROOT / top).rglob("*.py")}
    assert {f"hpsearch/{s}" for s in sources} <= set(names)
    entry = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt")
    assert b"hpsearch = hpsearch.search.cli:main" in entry
    # installed into a fresh venv (no dependencies needed for these two imports)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)

    def imports(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"],
                              cwd=tmp_path, capture_output=True, text=True)

    assert imports("hpsearch").returncode == 0
    for generic in ("search", "trainables"):
        assert "No module named" in imports(generic).stderr


def test_a_users_own_search_module_is_not_shadowed(tmp_path: Path) -> None:
    (tmp_path / "search.py").write_text("WHO = 'the user'\n")
    (tmp_path / "trainables.py").write_text("WHO = 'the user too'\n")
    out = subprocess.run(
        [sys.executable, "-c", "import hpsearch.search.spec, search, trainables; "
         "print(search.WHO, '|', trainables.WHO)"],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "the user | the user too"
