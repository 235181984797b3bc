"""Shared fixtures: the real-data folder (skip when absent), a private cache dir, composed configs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List

import pytest
import torch

import graphgt.config  # noqa: F401  (the config resolvers)

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
SHARED_DATA = Path(os.environ.get("GRAPHGT_SHARED_DATA", REPO.parent / "shared" / "data"))

requires_shared = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"real datasets not found at {SHARED_DATA}")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test session writes datasets/PE caches into its own temporary folder."""
    cache = tmp_path_factory.getbasetemp() / "graphgt-cache"
    monkeypatch.setenv("GRAPHGT_CACHE", str(cache))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return cache


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


def compose(overrides: List[str] = ()):
    """The composed ``train`` config with ``overrides`` (as the CLI would build it)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=False)


def compose_with_choices(overrides: List[str] = ()):
    """(cfg, group choices) like HydraConfig.runtime.choices."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg, choices
