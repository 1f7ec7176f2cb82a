"""Bad input, as a user types it: each case gives one clear line per problem, exit code 2, no
traceback, and starts nothing (no sweep folder, no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.badspecs import BAD_SPECS, GOOD, LAUGHS, write_spec
from tests.badspecs import spec_with as _with
from tests.driver import hpsearch as run_hpsearch

# A handful of bad spec files through the command (one of them through the real one);
# tests/search/test_spec.py checks every case of BAD_SPECS. Together they pass through YAML
# syntax, the top level, an unknown key, a trial setting, a rule across sections and the
# bounded reading of a file.
CLI_CASES = ("yaml-syntax", "top-level-list", "typo-top-level", "unknown-model",
             "grace-over-max-epochs", "not-utf8")
SPECS = [case for case in BAD_SPECS if case[0] in CLI_CASES]


def hpsearch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # a short wait for a cluster at --address, so the unreachable case is quick
    return run_hpsearch(*args, cwd=cwd, timeout=120,
                        env={**os.environ, "HPSEARCH_CONNECT_TIMEOUT": "2"})


@pytest.fixture
def cli(cli: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The in-process command (tests/conftest.py), with the short wait for a cluster."""
    monkeypatch.setenv("HPSEARCH_CONNECT_TIMEOUT", "2")
    return cli


def _assert_clean_failure(out: subprocess.CompletedProcess[str], phrase: str,
                          cwd: Path) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr
    assert phrase in out.stderr, out.stderr
    assert all(line.startswith("hpsearch: error: ") for line in out.stderr.splitlines())
    assert not (cwd / "runs").exists(), "nothing may start on bad input"
    assert "hpsearch sweep '" not in out.stdout


@pytest.mark.parametrize("case, spec, phrase", SPECS, ids=[c[0] for c in SPECS])
def test_bad_spec(cli: Any, tmp_path: Path, case: str, spec: Any, phrase: str) -> None:
    path = write_spec(tmp_path / f"{case}.yaml", spec)
    out = cli("sweep", str(path), cwd=tmp_path)
    _assert_clean_failure(out, phrase, tmp_path)
    assert len(out.stderr.splitlines()) == 1, out.stderr


def test_a_bad_spec_through_the_real_command(tmp_path: Path) -> None:
    case, spec, phrase = SPECS[0]
    out = hpsearch("sweep", str(write_spec(tmp_path / f"{case}.yaml", spec)), cwd=tmp_path)
    _assert_clean_failure(out, phrase, tmp_path)
    assert len(out.stderr.splitlines()) == 1, out.stderr


def test_three_problems_give_three_lines(cli: Any, tmp_path: Path) -> None:
    spec = _with("budget.trials", 0)
    spec["scheduler"]["grace_perod"] = 1
    spec["fixed"]["model"] = "cnnn"
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = cli("sweep", str(path), cwd=tmp_path)
    _assert_clean_failure(out, "did you mean 'grace_period'", tmp_path)
    assert len(out.stderr.strip().splitlines()) == 3


@pytest.mark.parametrize("args, phrase", [
    (["sweep", "missing.yaml"], "missing.yaml: no such file"),
    (["sweep", "spec.yaml", "--set", "budget.trials"], "expected key=value"),
    (["resume", "never-ran"], "no sweep named 'never-ran'"),
    (["sweep", "spec.yaml", "--set", "storage=nosuch://bucket/runs"],
     "storage: nosuch://bucket/runs cannot be used (Unrecognized filesystem type"),
    (["resume", "x", "--storage", "nosuch://bucket/runs"], "storage: nosuch://bucket/runs"),
    (["report", "x", "--storage", "nosuch://bucket/runs"], "storage: nosuch://bucket/runs"),
    (["sync", "x", "--storage", "nosuch://bucket/runs"], "storage: nosuch://bucket/runs"),
    (["report", "nosuch://bucket/runs/x"], "storage: nosuch://bucket/runs/x"),
    (["submit", "spec.yaml", "--address", "http://127.0.0.1:9"], "--address"),
    (["sweep", "spec.yaml", "--address", "127.0.0.1:1"],
     "--address 127.0.0.1:1: no Ray cluster answered within 2 s (Connection refused)"),
    (["sweep", "spec.yaml", "--set", "resources.cpu=4096"],
     "resources.cpu: 4096 CPUs per trial asked for, but this machine has"),
    (["sweep", "spec.yaml", "--set", "resources.gpu=1.5"],
     "resources.gpu: a fraction is allowed below 1 only"),
    (["resume", ".."], "resume NAME: must be a plain folder name"),
    (["resume", "../x"], "resume NAME: must be a plain folder name"),
    (["report", "../x"], "report NAME: must be a plain folder name"),
    (["report", ".."], "report NAME: must be a plain folder name"),
    (["sync", ".."], "sync NAME: must be a plain folder name"),
    (["ui", "../x"], "ui NAME: must be a plain folder name"),
    (["finalize", "never-ran"], "no sweep named 'never-ran'"),
    (["finalize", "../x"], "finalize NAME: must be a plain folder name"),
    (["finalize", "x", "--storage", "nosuch://bucket/runs"], "storage: nosuch://bucket/runs"),
])
def test_bad_cli_calls(cli: Any, tmp_path: Path, args: list[str], phrase: str) -> None:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(GOOD))
    _assert_clean_failure(cli(*args, cwd=tmp_path), phrase, tmp_path)


_BOMB = "more than 10,000 values with aliases expanded"


@pytest.mark.parametrize("args, phrase", [
    (["sweep", "laughs.yaml"], f"laughs.yaml: {_BOMB}"),
    (["sweep", "--check", "laughs.yaml"], f"laughs.yaml: {_BOMB}"),
    (["train", "laughs.yaml"], f"laughs.yaml: {_BOMB}"),
    (["train", "junk.yaml"], "junk.yaml: not a UTF-8 text file (byte 0x00 at offset 0)"),
    (["sweep", "spec.yaml", "--set", "fixed={" + LAUGHS.replace("\n", ", ") + "}"],
     f"--set 'fixed': {_BOMB}"),
], ids=["sweep", "check", "train", "train-binary", "set"])
def test_hostile_yaml_is_refused_at_once(cli: Any, tmp_path: Path, args: list[str],
                                         phrase: str) -> None:
    """The first case through the real command, the others in this process."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(GOOD))
    (tmp_path / "laughs.yaml").write_text(LAUGHS)
    (tmp_path / "junk.yaml").write_bytes(bytes(range(256)) * 4)
    start = time.monotonic()
    out = (hpsearch if args == ["sweep", "laughs.yaml"] else cli)(*args, cwd=tmp_path)
    assert time.monotonic() - start < 10, "reading the spec must not hang"
    _assert_clean_failure(out, phrase, tmp_path)
    assert len(out.stderr.splitlines()) == 1 and len(out.stderr) < 300, out.stderr[:1000]


def test_huge_values_give_short_lines(cli: Any, tmp_path: Path) -> None:
    spec = _with("fixed.dataset", "x" * 200_000)  # under the size limit
    spec["space"]["optimizer"] = [f"adamm{i}" for i in range(30)]
    spec["fixed"]["channels"] = [-1] * 2000
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = cli("sweep", "s.yaml", "--set", "name=" + "n" * 100_000, cwd=tmp_path)
    _assert_clean_failure(out, "name: must be a plain folder name", tmp_path)
    lines = out.stderr.splitlines()
    assert len(lines) == 21 and lines[-1].endswith("more problem(s)"), lines[-1]
    assert max(len(line) for line in lines) <= 520 and len(out.stderr) < 12_000


def test_missing_data_offline_fails_before_ray(cli: Any, tmp_path: Path) -> None:
    spec = _with("fixed.dataset", "cifar10")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = cli("sweep", "s.yaml", cwd=tmp_path)
    _assert_clean_failure(out, "cifar10", tmp_path)


def test_gpus_asked_for_but_absent(cli: Any, tmp_path: Path, tiny_mnist_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = _with("resources.gpu", 0.25)
    spec["fixed"]["data_dir"] = str(tiny_mnist_dir)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    _assert_clean_failure(cli("sweep", "s.yaml", cwd=tmp_path), "resources.gpu", tmp_path)


def test_infeasible_constraints_fail_before_ray(
        cli: Any, tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _with("constraints", {"max_params": 10})
    spec["fixed"]["data_dir"] = str(tiny_mnist_dir)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    _assert_clean_failure(cli("sweep", "s.yaml", cwd=tmp_path),
                          "constraints: none of", tmp_path)


def test_grid_config_that_cannot_run_on_this_data(
        cli: Any, tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _with("space", {"model": ["cnn", "alexnet"]})
    spec["search"] = {"algorithm": "grid"}
    spec["fixed"].update(data_dir=str(tiny_mnist_dir), stem="imagenet",
                         channels=[8, 8, 8, 8, 8])
    spec["fixed"].pop("model")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    _assert_clean_failure(cli("sweep", "s.yaml", cwd=tmp_path),
                          "'alexnet'} cannot run", tmp_path)


def test_data_setting_in_the_space_is_refused(
        cli: Any, tmp_path: Path, tiny_mnist_dir: Path) -> None:
    spec = _with("space.val_fraction", [0.1, 0.2])
    spec["fixed"]["data_dir"] = str(tiny_mnist_dir)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    _assert_clean_failure(cli("sweep", "s.yaml", cwd=tmp_path), "space.val_fraction",
                          tmp_path)


def test_resume_with_an_incompatibly_changed_spec(cli: Any, tmp_path: Path) -> None:
    from hpsearch.search.runner import _write_meta
    from hpsearch.search.spec import parse_spec

    run_dir = tmp_path / "elsewhere" / "bad"
    run_dir.mkdir(parents=True)
    _write_meta(run_dir, parse_spec(GOOD), yaml.safe_dump(GOOD), "sqlite:///x.db")
    changed = _with("space.lr", {"type": "loguniform", "low": 1e-5, "high": 1e-1})
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    out = cli("resume", "bad", "--storage", str(tmp_path / "elsewhere"), "--spec",
                   "changed.yaml", cwd=tmp_path)
    _assert_clean_failure(out, "changed incompatibly", tmp_path)
    assert json.loads((run_dir / "hpsearch.json").read_text())["name"] == "bad"


@pytest.mark.parametrize("case, change, phrase", [
    ("ok", {}, None),
    ("no-data", {"fixed.data_dir": "missing-folder"}, "missing-folder does not hold mnist"),
    ("too-many-cpus", {"resources.cpu": 4096}, "resources.cpu: 4096 CPUs per trial"),
    ("infeasible", {"constraints": {"max_params": 10}}, "constraints: none of"),
    ("name-taken", {}, "a sweep named 'bad' already exists"),
])
def test_check_runs_every_rule_a_sweep_runs_before_ray(cli: Any,
        tmp_path: Path, tiny_mnist_dir: Path, case: str, change: dict[str, Any],
        phrase: str | None) -> None:
    spec = _with("fixed.data_dir", str(tiny_mnist_dir))
    for key, value in change.items():
        *parents, leaf = key.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    spec["storage"] = str(tmp_path / "runs")
    if case == "name-taken":
        (tmp_path / "runs" / spec["name"]).mkdir(parents=True)
        (tmp_path / "runs" / spec["name"] / "hpsearch.json").write_text("{}")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    out = cli("sweep", "--check", "s.yaml", cwd=tmp_path)
    if phrase is None:
        assert out.returncode == 0, out.stderr[-2000:]
        assert "OK (bad)" in out.stdout
        assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
        return
    assert out.returncode == 2 and phrase in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- plugins

_TWIN = """
    from hpsearch import register_model

    @register_model("twin")
    def twin(config, in_channels, image_size, num_classes):
        raise NotImplementedError
"""


_PLUGIN_CASES = [
    ("missing", {}, ["nope.models"], {},
     "plugins[0]: cannot import plugin 'nope.models': ModuleNotFoundError: No module named "
     "'nope'"),
    ("raises", {"lab.boom": "import os\nraise RuntimeError('no GPU driver here')\n"},
     ["lab.boom"], {}, "cannot import plugin 'lab.boom': RuntimeError: no GPU driver here"),
    ("syntax", {"lab.syntax": "def broken(:\n"}, ["lab.syntax"], {},
     "cannot import plugin 'lab.syntax': SyntaxError: invalid syntax"),
    ("builtin-name", {"lab.taken": _TWIN.replace('"twin"', '"cnn"')}, ["lab.taken"], {},
     "plugins[0] lab.taken: lab.taken: model 'cnn' is a built-in name; choose another"),
    ("twice", {"lab.one": _TWIN, "lab.two": _TWIN}, ["lab.one", "lab.two"], {},
     "plugins[1] lab.two: lab.two: model 'twin' is registered twice (first by lab.one)"),
    ("not-a-list", {}, "my_lab.models", {},
     "plugins: expected a list of module names, e.g. [my_lab.models]"),
    ("bounds", {}, ["my_lab.models"], {"fixed": {"model": "deep_mlp", "mlp_depth": 99}},
     "fixed.mlp_depth: input should be less than or equal to 8 (got 99)"),
    ("typo", {}, ["my_lab.models"], {"space": {"mlp_dpth": [1, 2]}},
     "space.mlp_dpth: not a trial setting (did you mean 'mlp_depth'?)"),
    ("unknown-name", {}, ["my_lab.models"], {"fixed": {"model": "deep_mpl"}},
     "fixed.model: unknown model 'deep_mpl' (did you mean 'deep_mlp'?)"),
    ("builtin-setting", {"lab.lr": "from pydantic import BaseModel\n"
                                   "from hpsearch import register_model\n"
                                   "class S(BaseModel):\n    lr: float = 0.1\n"
                                   "register_model('mine', settings=S)(lambda *a: None)\n"},
     ["lab.lr"], {}, "setting 'lr' of model 'mine' is a built-in trial setting"),
    ("objective-not-reported", {}, ["my_lab.loops"], {"fixed": {"trainable": "line_fit"}},
     "objective.metric: trainable 'line_fit' does not report 'val_top1'; allowed: mse"),
    ("constraints-on-a-trainable", {}, ["my_lab.loops"],
     {"fixed": {"trainable": "line_fit"}, "objective": {"metric": "mse"},
      "constraints": {"max_params": "1M"}},
     "constraints: limits the built-in classifier's models; trainable 'line_fit' has none"),
    ("trainable-searched", {}, ["my_lab.loops"],
     {"space": {"trainable": ["classifier", "line_fit"]}},
     "space.trainable: set it in fixed: a sweep runs one trainable"),
]
# Each case starts the real command (and torch, for the plugin): three run by default, one of
# them in this process (it registers nothing; a name a plugin registers stays for the process).
_DEFAULT_PLUGIN_CASES = ("missing", "builtin-name", "bounds")
_IN_PROCESS_PLUGIN_CASES = ("builtin-name",)


@pytest.mark.parametrize("case, modules, plugins, change, phrase", [
    pytest.param(*case, id=case[0], marks=() if case[0] in _DEFAULT_PLUGIN_CASES
                 else pytest.mark.integration) for case in _PLUGIN_CASES])
def test_bad_plugin(cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str,
                    modules: dict[str, str], plugins: Any, change: dict[str, Any],
                    phrase: str) -> None:
    """A plugin that cannot be imported or registers what it may not, and plugin settings
    used wrongly: one line, exit 2, before anything starts. The plugin lives in the folder the
    command runs from, outside the repository."""
    from tests.plugin_pkg import write_module, write_plugin

    write_plugin(tmp_path)
    for dotted, text in modules.items():
        write_module(tmp_path, dotted, text)
    spec = {**GOOD, "plugins": plugins, **change}
    if "fixed" in change:
        spec["fixed"] = {**GOOD["fixed"], **change["fixed"]}
    if "space" in change:
        spec["space"] = {**GOOD["space"], **change["space"]}
    path = write_spec(tmp_path / "spec.yaml", {**spec, "storage": str(tmp_path / "runs")})
    if case in _IN_PROCESS_PLUGIN_CASES:
        monkeypatch.setattr(sys, "path", list(sys.path))  # the command adds its folder
        out = cli("sweep", str(path), cwd=tmp_path)
        tops = {m.partition(".")[0] for m in modules}
        for name in [m for m in sys.modules if m.partition(".")[0] in tops]:
            del sys.modules[name]  # the plugin's own package, imported from tmp_path
    else:
        out = hpsearch("sweep", str(path), cwd=tmp_path)
    _assert_clean_failure(out, phrase, tmp_path)


@pytest.mark.integration
def test_train_with_a_plugin_model_that_raises(tmp_path: Path) -> None:
    """`hpsearch train` of a plugin model that raises while it is built fails with the
    plugin's own error (in a sweep it fails that trial only: tests/search/test_plugins.py)."""
    from tests.plugin_pkg import write_plugin

    write_plugin(tmp_path)
    out = run_hpsearch("train", "--plugin", "my_lab.models", "--plugin", "my_lab.data",
                       "--set", "model=broken_net", "--set", "dataset=blobs", cwd=tmp_path,
                       timeout=120)
    assert out.returncode != 0
    assert "broken_net cannot be built" in out.stderr
