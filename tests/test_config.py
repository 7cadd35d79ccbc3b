"""TOML recipes: ``extends`` chains, and the shipped recipes that use them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from svi.config import ErftConfig, TrainConfig, load_recipe
from svi.errors import SviError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# Verbatim copies of these recipes as they were before they were rewritten to extend
# world-tiny-lora-anchor-base.toml: shipped LoRAs record the training config, so the
# rewrite must load to exactly the same TrainConfig.
FLAT = Path(__file__).resolve().parent / "fixtures" / "flat_recipes"
REWRITTEN = [
    "world-tiny-clean-lora-anchor",
    "world-tiny-erft-anchor",
    "world-tiny-erft-anchor-noimg",
    "world-tiny-aug-anchor",
]


@pytest.mark.parametrize("name", REWRITTEN)
def test_rewritten_recipes_load_exactly_as_before(name: str) -> None:
    recipe = RECIPES / f"{name}.toml"
    assert "extends = " in recipe.read_text(encoding="utf-8")
    new, old = load_recipe(recipe), load_recipe(FLAT / f"{name}.toml")
    assert new == old
    assert json.dumps(new.to_dict()) == json.dumps(old.to_dict())  # also 1 vs 1.0, key order


def test_the_anchor_contenders_share_everything_but_the_conditioning() -> None:
    base = load_recipe(RECIPES / "world-tiny-lora-anchor-base.toml")
    assert load_recipe(RECIPES / "world-tiny-clean-lora-anchor.toml") == base
    erft = load_recipe(RECIPES / "world-tiny-erft-anchor.toml")
    noimg = load_recipe(RECIPES / "world-tiny-erft-anchor-noimg.toml")
    aug = load_recipe(RECIPES / "world-tiny-aug-anchor.toml")
    for contender in (erft, noimg, aug):
        assert dataclasses.replace(contender, erft=None, augment=None) == base
    assert erft.erft is not None and noimg.erft is not None
    assert noimg.erft == dataclasses.replace(erft.erft, p_image=0.0)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_extends_merges_tables_key_by_key_and_the_child_wins(tmp_path: Path) -> None:
    _write(
        tmp_path / "base" / "root.toml",
        'steps = 10\nseed = 3\n[data]\nkinds = ["consistent"]\npool_size = 8\n'
        "[optim]\nlr = 0.5\nwarmup_steps = 2\n[erft]\np_image = 0.5\nnum_bins = 7\n",
    )
    _write(
        tmp_path / "base" / "middle.toml",  # relative to itself, not to the child
        'extends = "root.toml"\nsteps = 20\n[data]\npool_size = 16\n[erft]\np_image = 0.0\n',
    )
    child = _write(
        tmp_path / "child.toml",
        'extends = "base/middle.toml"\nbatch_size = 2\n[optim]\nlr = 0.25\n',
    )
    cfg = load_recipe(child)
    assert (cfg.steps, cfg.seed, cfg.batch_size) == (20, 3, 2)
    assert cfg.data.kinds == ("consistent",) and cfg.data.pool_size == 16
    assert cfg.optim.lr == 0.25 and cfg.optim.warmup_steps == 2
    assert cfg.erft == ErftConfig(p_image=0.0, num_bins=7)
    assert cfg.data.episode_frames == TrainConfig().data.episode_frames  # defaults below all


def test_extends_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    missing = _write(tmp_path / "missing.toml", 'extends = "nowhere.toml"\nsteps = 1\n')
    with pytest.raises(SviError, match=r"missing\.toml extends .*nowhere\.toml, which does not"):
        load_recipe(missing)
    itself = _write(tmp_path / "self.toml", 'extends = "self.toml"\n')
    with pytest.raises(SviError, match="cycle"):
        load_recipe(itself)
    _write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    _write(tmp_path / "b.toml", 'extends = "sub/../a.toml"\n')
    with pytest.raises(SviError, match=r"cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_recipe(tmp_path / "a.toml")
    bad = _write(tmp_path / "bad.toml", "extends = 3\n")
    with pytest.raises(SviError, match="extends must be a file name"):
        load_recipe(bad)
    typo = _write(tmp_path / "typo.toml", 'extends = "root.toml"\n')
    _write(tmp_path / "root.toml", "stepz = 1\n")
    with pytest.raises(SviError, match=r"unknown key typo\.toml\.stepz"):
        load_recipe(typo)
