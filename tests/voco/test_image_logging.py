"""Tests of the VoCo figure (:mod:`ctvoco.voco.figures`) and its callback (:mod:`ctvoco.voco.image_logging`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ctvoco.errors import ArgumentError, UserError
from ctvoco.training.history import log_image_file
from ctvoco.voco.figures import OverlapSample, overlap_figure
from ctvoco.voco.image_logging import FIGURE_PREFIX, VoCoImageLogger
from ctvoco.voco.targets import overlap_targets
from tests.reports.figure_checks import luminance, offset_axes, small_texts
from tests.voco.test_module import CROP, GRID, NUM_RANDOM, SLICES, loader, make_module, make_trainer

N, R, S, K = 2, 8, 3, 2


def fake_sample(seed: int) -> OverlapSample:
    rng = np.random.default_rng(seed)
    centers = rng.integers(R // 2, N * R - R // 2, size=(K, 2))
    return OverlapSample(
        base=rng.integers(0, 256, size=(N * N, S, 1, R, R), dtype=np.uint8),
        random=rng.integers(0, 256, size=(K, S, 1, R, R), dtype=np.uint8),
        targets=overlap_targets(centers, N, R).numpy(),
        predicted=rng.uniform(0, 1, size=(K, N * N)),
        centers=centers,
    )


def test_overlap_figure_has_base_views_and_both_matrices() -> None:
    samples = [fake_sample(0), fake_sample(1)]
    fig = overlap_figure(samples, title="step 3")
    assert len(fig.axes) == len(samples) * (1 + K + 2)
    columns = 1 + K + 2
    for row, sample in enumerate(samples):
        canvas, *views, true, predicted = fig.axes[row * columns : (row + 1) * columns]
        assert canvas.images[0].get_array().shape == (N * R, N * R)
        outlines = [p for p in canvas.patches if isinstance(p, Rectangle)]
        assert len(outlines) == N * N + K  # the grid cells and one outline per view
        assert "slice 2 of 3" in canvas.get_title()
        assert [t.get_text() for t in canvas.texts] == [str(j) for j in range(N * N)]
        for k, view in enumerate(views):
            assert view.images[0].get_array().shape == (R, R)
            assert view.get_title().startswith(f"view {k + 1}")
            assert "slice 2 of 3" in view.get_title()
        for ax, values, name in (
            (true, sample.targets, "true"),
            (predicted, sample.predicted, "predicted"),
        ):
            assert name in ax.get_title()
            image = ax.images[0]
            np.testing.assert_allclose(image.get_array(), values)
            assert image.norm.vmin == 0.0 and image.norm.vmax == 1.0
            for text in ax.texts:
                col, row_k = (round(v) for v in text.get_position())
                cell = luminance(image.cmap(image.norm(values[row_k, col])))
                assert abs(cell - luminance(to_rgba(text.get_color()))) > 0.4
    assert offset_axes(fig) == []
    assert small_texts(fig) == []


def tensorboard_images(log_dir: Path) -> dict[str, list[int]]:
    """The steps of the image events of each tag in the TensorBoard files under ``log_dir``."""
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}


def fit_with_images(tmp_path: Path, every: int, epochs: int = 4) -> tuple[VoCoImageLogger, Path]:
    """A tiny VoCo fit validating every epoch, with a TensorBoard logger and the callback."""
    images = VoCoImageLogger(tmp_path / "figures", every_n_validations=every, num_volumes=2)
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    trainer = make_trainer(
        max_steps=-1,
        max_epochs=epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=logger,
        callbacks=[images],
    )
    trainer.fit(make_module(), loader(count=2, batch_size=2), loader(count=2, batch_size=2))
    return images, Path(logger.log_dir)


def test_fit_logs_figures_every_n_validations(tmp_path: Path) -> None:
    images, log_dir = fit_with_images(tmp_path, every=3)
    # validations 1 and 4 of 4 (after steps 1 and 4); not the sanity check
    pngs = sorted((tmp_path / "figures").glob(f"{FIGURE_PREFIX}*.png"))
    assert [p.name for p in pngs] == [f"{FIGURE_PREFIX}0000001.png", f"{FIGURE_PREFIX}0000004.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert images.written == pngs
    assert images.validations == 4
    assert tensorboard_images(log_dir) == {"voco/overlaps": [1, 4]}


def test_zero_never_draws(tmp_path: Path) -> None:
    images, log_dir = fit_with_images(tmp_path, every=0, epochs=2)
    assert not (tmp_path / "figures").exists()
    assert images.written == []
    assert tensorboard_images(log_dir) == {}


def test_the_figure_shows_the_batch_and_the_models_overlaps(tmp_path: Path) -> None:
    module = make_module().eval()
    batch = next(iter(loader(count=2, batch_size=2)))
    samples = VoCoImageLogger(num_volumes=1, max_views=1).samples(module, batch)
    assert len(samples) == 1
    (sample,) = samples
    assert sample.base.shape == (GRID * GRID, SLICES, 1, CROP, CROP)
    assert sample.random.shape == (1, SLICES, 1, CROP, CROP)
    np.testing.assert_array_equal(sample.targets, batch["targets"][0, :1].numpy())
    with torch.no_grad():
        emb = module.embed(batch["random"], batch["base"])
    from ctvoco.voco.losses import similarity

    expected = similarity(emb["student_random"], emb["teacher_base"])[0, :1]
    np.testing.assert_allclose(sample.predicted, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert NUM_RANDOM >= 1 and not module.training


class SpyWandb(WandbLogger):
    """A wandb logger that records ``log_image`` calls and starts no run."""

    def __init__(self, disabled: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self._run = type("Run", (), {"disabled": disabled})()

    @property
    def experiment(self) -> Any:
        return self._run

    def log_image(
        self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        self.calls.append({"key": key, "images": images, "step": step, **kwargs})


def test_figures_go_to_wandb_and_tensorboard(tmp_path: Path) -> None:
    png = tmp_path / "figure.png"
    fig = overlap_figure([fake_sample(0)])
    fig.savefig(png)
    wandb, disabled = SpyWandb(), SpyWandb(disabled=True)
    tensorboard = TensorBoardLogger(tmp_path, name="tb", version="")
    took = log_image_file([wandb, disabled, tensorboard], "voco/overlaps", png, step=7)
    tensorboard.experiment.flush()
    assert took == ["wandb", "tensorboard"]
    assert wandb.calls == [
        {"key": "voco/overlaps", "images": [str(png)], "step": 7, "caption": ["figure"]}
    ]
    assert disabled.calls == []
    assert tensorboard_images(Path(tensorboard.log_dir)) == {"voco/overlaps": [7]}


@pytest.mark.parametrize(
    ("option", "value"), [("every_n_validations", -1), ("num_volumes", 0), ("max_views", 1.5)]
)
def test_bad_settings_name_the_option(option: str, value: object) -> None:
    with pytest.raises(ArgumentError, match=option):
        VoCoImageLogger(**{option: value})


def test_refuses_a_module_that_is_not_a_voco_pretrainer() -> None:
    class NotVoCo(torch.nn.Module):
        pass

    with pytest.raises(UserError, match="voco_images"):
        VoCoImageLogger().on_fit_start(None, NotVoCo())  # type: ignore[arg-type]


def test_state_survives_a_checkpoint() -> None:
    images = VoCoImageLogger(every_n_validations=2)
    images.validations = 5
    restored = VoCoImageLogger(every_n_validations=2)
    restored.load_state_dict(images.state_dict())
    assert restored.validations == 5
    assert [restored.is_due(v) for v in range(5)] == [True, False, True, False, True]
