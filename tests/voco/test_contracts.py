"""The pretrainer's contracts: views give it its geometry, the loss gathers across ranks,
and the research options are named after what they do."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

import ctvoco.training.distributed as distributed
import ctvoco.voco.losses as losses_source
import ctvoco.voco.module as module_source
from ctvoco.errors import UserError
from ctvoco.voco import VoCoPretrainer, VoCoViews
from ctvoco.voco.heads import HEAD_NORMS, ProjectionHead
from ctvoco.voco.losses import VoCoLoss, inter_volume_loss
from ctvoco.voco.module import TEACHER_HEADS

ROOT = Path(__file__).resolve().parents[2]
TINY = {"backbone": "test_efficientnet", "head_hidden": 16, "head_out": 8}


def pretrain_module_config(model: str) -> dict:
    with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[f"model={model}", "paths.output_dir=/x"])
    return dict(cfg.model.module)


@pytest.mark.parametrize("model", ["voco", "voco_research", "voco_research_v1"])
def test_the_module_config_repeats_no_view_geometry(model: str) -> None:
    assert not {"grid", "crop_size", "num_random"} & set(pretrain_module_config(model))


def test_the_views_give_the_module_its_grid_crop_size_and_random_crops() -> None:
    views = VoCoViews(grid=3, crop_size=64, num_random=4, num_slices=2, depth=4)
    module = VoCoPretrainer(**TINY, views=views, pooling="flatten", head_norm="per_slot")
    assert module.views == views
    assert module.student_head.num_slots == 4 + 9
    encoder = module.student_encoder  # 64-pixel crops: a 2x2 feature map, flattened
    assert encoder.out_features == 4 * encoder.backbone.num_features
    assert module.hparams.views == {**vars(views)}
    assert "crop_size" not in inspect.signature(VoCoPretrainer).parameters


def test_the_views_may_come_as_the_recorded_mapping() -> None:
    views = VoCoViews(grid=2, crop_size=32, num_random=3)
    recorded = VoCoPretrainer(**TINY, views=views).hparams.views
    assert VoCoPretrainer(**TINY, views=recorded).views == views


def test_the_module_leaves_cross_rank_pairing_to_the_loss() -> None:
    text = inspect.getsource(module_source)
    assert "inter_volume_loss" not in text and "gather_with_grad" not in text
    assert VoCoPretrainer(**TINY, inter_pairing="global").criterion.gather_distributed
    assert not VoCoPretrainer(**TINY).criterion.gather_distributed


def embeddings(batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k, n, d = 2, 4, 6
    shapes = [(batch, k, d), (batch, n, d), (batch, k, d), (batch, n, d)]
    targets = torch.rand(batch, k, n, generator=g)
    return [torch.randn(*s, generator=g) for s in shapes] + [targets / targets.sum(-1, True)]


def test_a_gathering_loss_pairs_with_the_next_ranks_volumes(monkeypatch) -> None:
    """Rank 1 of 2: local volume b pairs with global volume (1*B + b + 1) mod 2B."""
    mine, other = embeddings(2, seed=0), embeddings(2, seed=1)
    monkeypatch.setattr(losses_source, "distributed_rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(distributed, "gather_with_grad", lambda t: torch.cat([_other(t), t]))
    index = {id(t): i for i, t in enumerate(mine)}

    def _other(t: torch.Tensor) -> torch.Tensor:
        position = index.get(id(t))
        return other[position] if position is not None else other[3]  # detached teacher base

    out = VoCoLoss(gather_distributed=True)(*mine)
    sr, sb, tr, tb, _ = mine
    expected = inter_volume_loss(
        sr,
        torch.cat([other[1], sb]),
        tr,
        torch.cat([other[3], tb]),
        partner_index=torch.tensor([3, 0]),
    )
    torch.testing.assert_close(out.inter, expected)
    local = VoCoLoss()(*mine)
    torch.testing.assert_close(out.intra, local.intra)
    torch.testing.assert_close(out.total, local.intra + expected + local.reg)


def test_a_gathering_loss_in_one_process_is_the_local_loss() -> None:
    batch = embeddings(3, seed=2)
    torch.testing.assert_close(VoCoLoss(gather_distributed=True)(*batch), VoCoLoss()(*batch))


def test_the_research_options_say_what_they_do() -> None:
    assert HEAD_NORMS == ("batch", "per_slot")
    assert TEACHER_HEADS == ("ema", "trained")
    research = pretrain_module_config("voco_research")
    assert (research["head_norm"], research["teacher_head"]) == ("per_slot", "trained")
    with pytest.raises(UserError, match="did you mean 'per_slot'"):
        ProjectionHead(8, 8, 8, norm="per-slot", num_slots=2)
    with pytest.raises(UserError, match="did you mean 'trained'"):
        VoCoPretrainer(**TINY, teacher_head="train")


@pytest.mark.parametrize(
    "path",
    [
        "conf/model/voco_research.yaml",
        "src/ctvoco/voco/module.py",
        "src/ctvoco/voco/heads.py",
        "src/ctvoco/voco/losses.py",
        "src/ctvoco/voco/targets.py",
        "docs/research.md",
        "docs/config-reference.md",
        "docs/pretraining.md",
    ],
)
def test_seed_means_a_random_seed_only(path: str) -> None:
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    research = re.compile(
        r"""(:\s*seed\b|=\s*["']seed["']|["']seed["']|\bseed's\b|"""
        r"""\bseed (teacher|norm|head|code|quirk|preset)\b)""",
        re.IGNORECASE,
    )
    assert [line for line in lines if research.search(line)] == []


@pytest.mark.parametrize("path", ["src/ctvoco/voco/module.py", "src/ctvoco/classify/module.py"])
def test_the_training_modules_stay_thin(path: str) -> None:
    assert len((ROOT / path).read_text(encoding="utf-8").splitlines()) < 500
