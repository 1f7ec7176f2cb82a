"""Every committed study spec validates, and its grid/OFAT designs expand as described."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.search.space import grid_configs, ofat_configs
from hpsearch.search.spec import load_spec

STUDIES = sorted((Path(__file__).resolve().parents[2] / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem


def test_classroom_designs_have_the_described_sizes() -> None:
    root = STUDIES[0].parent
    assert len(grid_configs(load_spec(root / "classroom_a_optimizer_augmentation.yaml"))) == 12
    assert len(grid_configs(load_spec(root / "classroom_b_depth.yaml"))) == 15
    assert len(grid_configs(load_spec(root / "classroom_e_cifar_resnet.yaml"))) == 36
    # baseline + 4 activations + 2 optimizers + 2 learning rates + 2 batch sizes
    assert len(ofat_configs(load_spec(root / "classroom_d_mnist_ofat.yaml"))) == 11
