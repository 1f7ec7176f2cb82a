"""The plugin API in one process of its own (registrations last for the process): what a plugin
entry gets from hpsearch, checked without Ray. Sweeps with plugins: tests/search/test_plugins.py;
bad plugins: tests/test_bad_input.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.plugin_pkg import write_plugin

_SCRIPT = textwrap.dedent('''
    import math
    from hpsearch.trainables.plugins import (import_plugins, run_trainable, shipped_modules,
                                             plugin_roots)
    from hpsearch.trainables.config import parse_trial_config
    from hpsearch.trainables.settings import used_keys

    import_plugins(["my_lab.models", "my_lab.data", "my_lab.augment", "my_lab.loops"])

    # a plugin model: its own settings and the built-in ones it uses are what matters
    config = parse_trial_config({"model": "deep_mlp", "dataset": "blobs", "mlp_depth": 3,
                                 "augment": ["invert"]})
    keys = used_keys(config)
    assert {"mlp_depth", "mlp_width", "dropout", "blob_train", "invert_p"} <= set(keys), keys
    assert "channels" not in keys

    # ... is built, shape-checked and measured like a built-in one
    import torch
    from hpsearch.trainables.data import load_data
    from hpsearch.trainables.models import trial_cost
    from hpsearch.trainables.augment import build_augmenter
    data = load_data(config)
    assert data.classes == ("top", "middle", "bottom") and data.train_x.dtype == torch.uint8
    assert len(data.val_y) == 24 and len(data.train_y) == 216  # val_fraction 0.1 of 240
    cost = trial_cost(config, data)
    assert cost["params"] == 144 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 3 + 3, cost
    x = torch.rand(8, 1, 12, 12)
    a = build_augmenter(config)(x, torch.Generator().manual_seed(1))
    b = build_augmenter(config)(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape  # the seeded generator decides

    # ... keeps the contract every registered model keeps, checked as its author would
    import random
    from torch import nn
    from hpsearch import ContractError, check_model, register_model
    assert check_model("deep_mlp", mlp_depth=2, mlp_width=8)["params"] > 0

    class Stateful(nn.Module):  # a scale kept outside parameters and buffers: lost on resume
        def __init__(self, size):
            super().__init__()
            self.fc, self.scale = nn.Linear(size, 10), 0.5 + random.random()
        def forward(self, x):
            return self.fc(x.flatten(1)) * self.scale

    @register_model("stateful_net")
    def stateful_net(config, in_channels, image_size, num_classes):
        return Stateful(in_channels * image_size[0] * image_size[1])

    try:
        check_model("stateful_net")
        raise SystemExit("stateful_net passed the contract")
    except ContractError as err:
        assert str(err).startswith("model 'stateful_net' on 1x28x28 images: a build loaded "
                                   "from the model's state_dict gives other outputs"), err

    # a plugin trainable: epochs counted, status set, its state wrapped for resume
    line = parse_trial_config({"trainable": "line_fit", "epochs": 3, "line_lr": 0.2})
    assert used_keys(line) == ("trainable", "epochs", "line_lr", "line_points", "line_fail",
                               "line_sleep", "seed"), used_keys(line)
    seen = []
    def report(metrics, make_state):
        seen.append((metrics, make_state()))
    assert run_trainable(line, report, None, ["mse"]) == "completed"
    assert [m["epoch"] for m, _ in seen] == [1, 2, 3]
    assert [m["status"] for m, _ in seen] == ["running", "running", "completed"]
    state = seen[0][1]
    assert state["epoch"] == 1 and state["plugin"]["epoch"] == 1 and len(state["history"]) == 1
    resumed = []
    run_trainable(line, lambda m, s: resumed.append(m), state, ["mse"])
    assert [m["epoch"] for m in resumed] == [2, 3]
    assert math.isclose(resumed[-1]["mse"], seen[-1][0]["mse"], rel_tol=1e-6)

    # a diverging objective ends the trial
    wild = parse_trial_config({"trainable": "line_fit", "epochs": 50, "line_lr": 10.0})
    out = []
    assert run_trainable(wild, lambda m, s: out.append(m), None, ["mse"]) == "diverged"
    assert out[-1]["status"] == "diverged" and len(out) < 50

    # the user's own folder is shipped to a cluster; the installed environment is not
    import pathlib
    assert shipped_modules(["my_lab.models", "my_lab.loops"]) == \\
        [str(pathlib.Path("my_lab").resolve())]
    assert plugin_roots(["my_lab.loops"]) == [str(pathlib.Path(".").resolve())]
    import_plugins(["json"])
    assert shipped_modules(["json"]) == []
    print("ok")
''')


def test_what_a_plugin_entry_gets(tmp_path: Path) -> None:
    root = write_plugin(tmp_path)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
