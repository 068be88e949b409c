"""Distributed data-parallel training on CPU (Lightning DDP over gloo, 2 processes).

- In-process ``ddp_spawn`` for both LightningModules over the real RSNA data module: the
  trained weights come back to the main process, each rank reads its own
  :class:`~ctvoco.data.sampling.SeededSampler` shard, VoCo's cross-rank pairing
  (``inter_pairing="global"``) gives the losses and gradients of a single-process
  reference, and the classifier's validation score under DDP equals the single-process one.
- The installed console scripts as a user runs them: ``trainer=ddp`` (Lightning re-launches
  the script for rank 1), ``torchrun`` and ``trainer=ddp_sim``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import default_collate

from ctvoco.classify import InferenceSpecFromData, InjuryClassifier, SliceStackViews
from ctvoco.classify.module import DEFAULT_OPTIMIZER as CLASSIFIER_OPTIMIZER
from ctvoco.data.sampling import SeededSampler
from ctvoco.labels import PREDICTION_COLUMNS
from ctvoco.training.optim import with_settings
from ctvoco.voco import VoCoPretrainer, VoCoViews
from ctvoco.voco.losses import inter_volume_loss
from ctvoco.voco.module import DEFAULT_OPTIMIZER as VOCO_OPTIMIZER
from ctvoco.voco.module import DEFAULT_SCHEDULER as VOCO_SCHEDULER
from tests.distributed.conftest import rsna_datamodule

WORLD = 2
BATCH = 2
STEPS = 2
VOCO = {
    "backbone": "test_efficientnet",
    "views": VoCoViews(grid=2, crop_size=16, num_random=2),
    "head_hidden": 32,
    "head_out": 16,
    "dropout": 0.0,  # deterministic student: the reference below recomputes the step
    "optimizer": with_settings(VOCO_OPTIMIZER, lr=1e-3),
    "scheduler": with_settings(VOCO_SCHEDULER, warmup_steps=1),
    "momentum": 0.5,
    "momentum_schedule": "constant",
}
VOCO_VIEWS = {"grid": 2, "crop_size": 16, "num_random": 2, "num_slices": 2, "depth": 8}
CLASSIFIER = {
    "backbone": "test_efficientnet",
    "hidden": 8,
    "optimizer": with_settings(CLASSIFIER_OPTIMIZER, lr=1e-3),
}


# ----------------------------------------------------------------------- rank recorders
# Defined at module level: ddp_spawn pickles them into the worker processes.
class RankRecorder(pl.Callback):
    """Writes what each rank saw and ended with into ``directory``.

    ``keys_rank<r>.json``: the keys of every training batch; ``state_rank<r>.pt``: the
    module's state at the end of training; ``val_rank<r>.csv``: a classifier's
    ``last_predictions`` after validation.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)
        self.keys: list[list[str]] = []

    def _path(self, trainer: pl.Trainer, name: str) -> Path:
        return Path(self.directory) / name.format(rank=trainer.global_rank)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.keys.append(list(batch["key"]))

    def on_train_end(self, trainer, pl_module) -> None:
        record = {"world": trainer.world_size, "keys": self.keys}
        self._path(trainer, "keys_rank{rank}.json").write_text(json.dumps(record))
        torch.save(pl_module.state_dict(), self._path(trainer, "state_rank{rank}.pt"))

    def on_validation_end(self, trainer, pl_module) -> None:
        predictions = getattr(pl_module, "last_predictions", None)
        if predictions is not None and not trainer.sanity_checking:
            predictions.to_csv(self._path(trainer, "val_rank{rank}.csv"), index=False)


class FirstStepPretrainer(VoCoPretrainer):
    """A :class:`VoCoPretrainer` that saves its first step's losses and gradients per rank."""

    record_dir = ""

    def losses(self, emb, targets):
        out = super().losses(emb, targets)
        if self.training and self.global_step == 0:
            self.first_losses = {name: float(value) for name, value in out._asdict().items()}
        return out

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.global_step != 0:
            return
        grads = {
            n: p.grad.detach().clone() for n, p in self.named_parameters() if p.grad is not None
        }
        record = {"losses": self.first_losses, "grads": grads}
        torch.save(record, Path(self.record_dir) / f"first_step_rank{self.global_rank}.pt")


# ------------------------------------------------------------------------------ helpers
def cpu_trainer(devices: int = WORLD, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU trainer; ``ddp_spawn`` over gloo when ``devices > 1``."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": devices,
        "strategy": "ddp_spawn" if devices > 1 else "auto",
        "use_distributed_sampler": False,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed_parameters(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    return [n for n, p in module.named_parameters() if not torch.equal(p.detach(), before[n])]


def shard(size: int, rank: int, seed: int) -> list[tuple[int, int]]:
    """``(index, sample_seed)`` of one rank in epoch 0 of a shuffled training loader."""
    return list(SeededSampler(size, shuffle=True, seed=seed, num_replicas=WORLD, rank=rank))


def read_keys(directory: Path) -> dict[int, list[str]]:
    """The keys each rank trained on, in order (written by :class:`RankRecorder`)."""
    records = {}
    for rank in range(WORLD):
        record = json.loads((directory / f"keys_rank{rank}.json").read_text())
        assert record["world"] == WORLD
        records[rank] = [key for batch in record["keys"] for key in batch]
    return records


def assert_sharded(datamodule: Any, directory: Path, steps: int) -> None:
    """Each rank's batches are the first ``steps`` batches of its own SeededSampler shard."""
    datamodule.setup("fit")
    dataset = datamodule.train_set
    keys = read_keys(directory)
    for rank in range(WORLD):
        order = shard(len(dataset), rank, datamodule.seed)[: steps * BATCH]
        expected = [dataset.items["key"].iloc[i] for i, _ in order]
        assert keys[rank] == expected, f"rank {rank} did not read its shard"
    assert not set(keys[0]) & set(keys[1]), "ranks read the same volumes"


@dataclass
class SpawnRun:
    """A finished ``ddp_spawn`` fit: the module in the main process and what ranks wrote."""

    module: pl.LightningModule
    initial: dict[str, torch.Tensor]
    datamodule: Any
    records: Path


# ------------------------------------------------------------------ 1. ddp_spawn fits
@pytest.fixture(scope="module")
def voco_run(tiny_cohort, ddp_cache, tmp_path_factory) -> SpawnRun:
    """VoCo with cross-rank pairing trained for 2 steps on 2 spawned CPU processes."""
    records = tmp_path_factory.mktemp("voco_ranks")
    torch.manual_seed(0)
    module = FirstStepPretrainer(inter_pairing="global", **VOCO)
    module.record_dir = str(records)
    # A teacher that is not (yet) the student, as after some EMA steps: with identical
    # networks the consistency target equals the prediction and the inter loss is 0.
    with torch.no_grad():
        for p in [*module.teacher_encoder.parameters(), *module.teacher_head.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    initial = snapshot(module)
    datamodule = rsna_datamodule(
        tiny_cohort, ddp_cache, purpose="pretrain", views=VoCoViews(**VOCO_VIEWS)
    )
    trainer = cpu_trainer(max_steps=STEPS, limit_val_batches=0, callbacks=[RankRecorder(records)])
    trainer.fit(module, datamodule=datamodule)
    return SpawnRun(module, initial, datamodule, records)


def test_ddp_spawn_trains_voco_and_returns_the_weights(voco_run):
    module, records = voco_run.module, voco_run.records
    changed = changed_parameters(module, voco_run.initial)
    student = [n for n, _ in module.named_parameters() if n.startswith("student_")]
    assert set(student) <= set(changed), "every student tensor got a step"
    assert any(n.startswith("teacher_encoder.") for n in changed), "the EMA teacher moved"
    # What came back is rank 0's final state exactly, and the replicas agree.
    final = {r: torch.load(records / f"state_rank{r}.pt", weights_only=True) for r in range(WORLD)}
    for name, value in module.state_dict().items():
        assert torch.equal(value, final[0][name]), name
    for name, _ in module.named_parameters():
        assert torch.equal(final[0][name], final[1][name]), f"replicas differ in {name}"
    assert_sharded(voco_run.datamodule, records, STEPS)


def test_ddp_spawn_trains_the_classifier_and_returns_the_weights(tiny_cohort, ddp_cache, tmp_path):
    torch.manual_seed(0)
    module = InjuryClassifier(**CLASSIFIER)
    initial = snapshot(module)
    datamodule = rsna_datamodule(
        tiny_cohort,
        ddp_cache,
        purpose="classify",
        fold=0,
        views=SliceStackViews.plain(num_slices=4, crop=48, random_crop=True),
        val_views=SliceStackViews.plain(num_slices=4, crop=48),
    )
    trainer = cpu_trainer(max_steps=STEPS, limit_val_batches=0, callbacks=[RankRecorder(tmp_path)])
    trainer.fit(module, datamodule=datamodule)

    changed = changed_parameters(module, initial)
    assert any(n.startswith("net.encoder.") for n in changed)
    assert any(n.startswith("net.heads.") for n in changed)
    final = torch.load(tmp_path / "state_rank0.pt", weights_only=True)
    for name, value in module.state_dict().items():
        assert torch.equal(value, final[name]), name
    assert_sharded(datamodule, tmp_path, STEPS)


# ------------------------------------------------------- 2. VoCo cross-rank pairing
def test_global_pairing_matches_a_single_process_reference(voco_run):
    """Rank ``r``'s volume ``b`` pairs with global volume ``(r*B + b + 1) mod (W*B)``.

    The first step is recomputed in this process from the initial weights and each rank's
    first batch: the logged inter-volume loss of every rank is the global-pairing value (not
    the local one), and the DDP gradient is that of the mean of both ranks' losses, so the
    gathered partner embeddings carried gradients back to the rank they came from.
    """
    datamodule = voco_run.datamodule
    datamodule.setup("fit")
    dataset = datamodule.train_set
    first = {
        r: torch.load(voco_run.records / f"first_step_rank{r}.pt", weights_only=True)
        for r in range(WORLD)
    }
    reference = VoCoPretrainer(inter_pairing="global", **VOCO)
    reference.load_state_dict(voco_run.initial)
    reference.train()  # batch-norm statistics per rank batch, as in the DDP step

    embeddings, local = [], []
    for rank in range(WORLD):
        items = shard(len(dataset), rank, datamodule.seed)[:BATCH]
        batch = default_collate([dataset[item] for item in items])
        emb = reference.embed(batch["random"], batch["base"])
        embeddings.append(emb)
        local.append(reference.criterion(*_voco_inputs(emb), batch["targets"].float()))
    teacher_bases = torch.cat([e["teacher_base"].detach() for e in embeddings])

    def mean_loss(partners_carry_gradient: bool) -> torch.Tensor:
        totals = []
        for rank, emb in enumerate(embeddings):
            student_bases = torch.cat(
                [
                    e["student_base"]
                    if partners_carry_gradient or r == rank
                    else e["student_base"].detach()
                    for r, e in enumerate(embeddings)
                ]
            )
            partner = (rank * BATCH + torch.arange(BATCH) + 1) % (WORLD * BATCH)
            inter = inter_volume_loss(
                emb["student_random"],
                student_bases,
                emb["teacher_random"],
                teacher_bases,
                partner_index=partner,
            )
            totals.append(local[rank].intra + inter + local[rank].reg)  # all weights are 1
            if partners_carry_gradient:
                logged = first[rank]["losses"]
                assert logged["inter"] == pytest.approx(inter.item(), rel=1e-4, abs=1e-6)
                assert logged["intra"] == pytest.approx(local[rank].intra.item(), rel=1e-4)
                assert logged["reg"] == pytest.approx(local[rank].reg.item(), rel=1e-4)
                # Local pairing (partner in the same process batch) gives another value.
                assert abs(local[rank].inter.item() - inter.item()) > 1e-3
        return torch.stack(totals).mean()  # DDP averages the ranks' gradients

    params = [(n, p) for n, p in reference.named_parameters() if p.requires_grad]
    expected = torch.autograd.grad(mean_loss(True), [p for _, p in params], retain_graph=True)
    without = torch.autograd.grad(mean_loss(False), [p for _, p in params], allow_unused=True)
    assert set(first[0]["grads"]) == {n for n, _ in params}
    for (name, _), grad in zip(params, expected, strict=True):
        assert _close(first[0]["grads"][name], grad), name
        torch.testing.assert_close(first[1]["grads"][name], first[0]["grads"][name])
    # The check can tell: without the partners' gradient the student would get another step.
    assert any(w is None or not _close(g, w) for g, w in zip(expected, without, strict=True))


def _close(grad: torch.Tensor, reference: torch.Tensor) -> bool:
    """Equal up to float32 summation order (a relative 1e-4 of the gradient's norm)."""
    return float((grad - reference).norm()) <= 1e-4 * float(reference.norm()) + 1e-5


def _voco_inputs(emb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (emb["student_random"], emb["student_base"], emb["teacher_random"], emb["teacher_base"])


# ------------------------------------------- 3. validation score: DDP == one process
def test_ddp_validation_score_equals_the_single_process_score(tiny_cohort, ddp_cache, tmp_path):
    fold, n_val = _odd_validation_fold(tiny_cohort, ddp_cache)

    def fold_data():
        # One data module per trainer: a LightningDataModule keeps a reference to the last
        # trainer it served, and ddp_spawn would pickle that trainer along with it.
        return rsna_datamodule(
            tiny_cohort,
            ddp_cache,
            purpose="classify",
            fold=fold,
            views=SliceStackViews.plain(num_slices=4, crop=48, random_crop=True),
            val_views=SliceStackViews.plain(num_slices=4, crop=48),
        )

    pl.seed_everything(0, verbose=False)
    training_data = fold_data()
    trainer = cpu_trainer(
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[InferenceSpecFromData(training_data)],
    )
    trainer.fit(InjuryClassifier(**CLASSIFIER), datamodule=training_data)
    checkpoint = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(checkpoint)

    single = InjuryClassifier.load_from_checkpoint(checkpoint, weights_only=True)
    [single_metrics] = cpu_trainer(devices=1).validate(single, datamodule=fold_data())
    ddp = InjuryClassifier.load_from_checkpoint(checkpoint, weights_only=True)
    [ddp_metrics] = cpu_trainer(callbacks=[RankRecorder(tmp_path)]).validate(
        ddp, datamodule=fold_data()
    )

    assert n_val % WORLD == 1, "the sampler pads the validation set: one series is repeated"
    assert ddp_metrics["val/score"] == pytest.approx(single_metrics["val/score"], abs=1e-6)
    for key, value in single_metrics.items():
        if key.startswith("val/") and key != "val/loss":  # val/loss averages the padding too
            assert ddp_metrics[key] == pytest.approx(value, abs=1e-6), key
    reference = single.last_predictions.sort_values("series_id").reset_index(drop=True)
    assert len(reference) == n_val
    for rank in range(WORLD):
        gathered = pd.read_csv(tmp_path / f"val_rank{rank}.csv")
        gathered = gathered.sort_values("series_id").reset_index(drop=True)
        assert len(gathered) == n_val, "the padding duplicate was not dropped"
        assert gathered["series_id"].tolist() == reference["series_id"].astype(int).tolist()
        pd.testing.assert_frame_equal(
            gathered[list(PREDICTION_COLUMNS)],
            reference[list(PREDICTION_COLUMNS)],
            check_dtype=False,
            atol=1e-6,
            rtol=0,
        )


def _odd_validation_fold(cohort: Any, cache: Path) -> tuple[int, int]:
    """The first fold of the tiny cohort with an odd number of validation series."""
    for fold in range(5):
        _, val = rsna_datamodule(cohort, cache, purpose="classify", fold=fold).split_items()
        if len(val) % 2:
            return fold, len(val)
    pytest.fail("no fold of the tiny cohort has an odd number of validation series")


# -------------------------------------------------- 4./5. the console scripts under DDP
BIN = Path(sys.executable).parent
DDP_CPU = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
"""``trainer=ddp`` on CPUs exactly as a user types it: ctvoco switches ``sync_batchnorm``
off there, and ``bf16-mixed`` runs on CPUs."""
RANK_1_JOINED = "GLOBAL_RANK: 1, MEMBER: 2/2"
"""Lightning's log line when rank 1 joins; on stderr, or on stdout through the run's logging
when Lightning is imported after Hydra has set logging up."""
RANK_LOGS = (
    "hydra.job_logging.handlers.file.filename=${hydra:runtime.output_dir}/${hydra:job.name}.log"
)
"""Each process logs to ``<its run directory>/<its Hydra job name>.log``; Lightning names
the re-launched rank 1 job ``train_ddp_process_1``."""
# The tiny overrides of tests/cli/test_pipeline.py, one epoch.
TINY_PRETRAIN = [
    "data=rsna",
    "data.exclude_folds=[0]",
    "data.batch_size=2",
    "model.module.backbone=test_efficientnet",
    "model.module.head_hidden=64",
    "model.module.head_out=32",
    "model.module.scheduler.warmup_steps=2",
    "model.views.crop_size=16",
    "model.views.grid=2",
    "model.views.num_slices=4",
    "model.views.depth=8",
    "trainer.max_epochs=1",
    "logger=csv",
]
TINY_FINETUNE = [
    "model.module.backbone=test_efficientnet",
    "model.module.hidden=16",
    "model.views.num_slices=8",
    "model.views.crop=48",
    "trainer.max_epochs=1",
    "logger=csv",
]


def cohort_data(cohort: Any) -> list[str]:
    return [
        f"data.root={cohort.rsna_root}",
        f"data.cache_dir={cohort.root / 'cache'}",
        "data.preprocess.shape=[16,64,64]",
        "data.num_workers=0",
    ]


def run_script(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [*command], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, (
        f"{command[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-5000:]}"
    )
    return result


def only_run_dir(cwd: Path, task: str) -> Path:
    """The one run directory under ``./outputs``; nothing else was written in ``cwd``."""
    assert sorted(p.name for p in cwd.iterdir()) == ["outputs"]
    outputs = cwd / "outputs"
    assert [p.relative_to(outputs).as_posix() for p in outputs.glob("*/*")] == [f"{task}/runs"]
    runs = list((outputs / task / "runs").iterdir())
    assert len(runs) == 1, f"more than one run directory: {runs}"
    return runs[0]


def assert_both_ranks_logged_in(run_dir: Path) -> None:
    rank1 = run_dir / "train_ddp_process_1.log"
    assert rank1.is_file(), (
        f"rank 1 used another run directory: {sorted(p.name for p in run_dir.iterdir())}"
    )
    assert "RSNADataModule:" in rank1.read_text()
    rank0 = [p for p in run_dir.glob("*.log") if p != rank1]
    assert len(rank0) == 1 and "RSNADataModule:" in rank0[0].read_text()


def test_finetune_console_script_under_ddp(cli_cohort, tmp_path):
    result = run_script(
        str(BIN / "ctvoco-finetune"),
        *DDP_CPU,
        *cohort_data(cli_cohort),
        *TINY_FINETUNE,
        RANK_LOGS,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert RANK_1_JOINED in output
    assert output.count("sync_batchnorm=true needs GPUs: switched off") == 1, "rank 0 says it once"
    run_dir = only_run_dir(tmp_path, "finetune")
    assert str(run_dir.resolve()) in result.stdout
    assert_both_ranks_logged_in(run_dir)
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert (run_dir / "metrics.json").is_file()
    oof = pd.read_csv(run_dir / "oof.csv")
    _, val = rsna_datamodule(cli_cohort, cli_cohort.root / "cache", fold=0).split_items()
    assert not oof.duplicated(["patient_id", "series_id"]).any()
    assert sorted(oof["series_id"]) == sorted(val["series_id"].astype(int))


def test_pretrain_console_script_under_ddp(cli_cohort, tmp_path):
    result = run_script(
        str(BIN / "ctvoco-pretrain"),
        *DDP_CPU,
        *cohort_data(cli_cohort),
        *TINY_PRETRAIN,
        "model.module.inter_pairing=global",
        RANK_LOGS,
        cwd=tmp_path,
    )
    assert RANK_1_JOINED in result.stdout + result.stderr
    assert "position MAE" in result.stdout
    run_dir = only_run_dir(tmp_path, "pretrain")
    assert_both_ranks_logged_in(run_dir)
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert (run_dir / "metrics.csv").is_file()
    export = run_dir / "export" / "test_efficientnet.pt"
    assert {"conv_stem.weight"} <= set(torch.load(export, weights_only=True))


@pytest.mark.slow
def test_finetune_multirun_under_ddp(cli_cohort, tmp_path):
    """``-m`` with ``trainer=ddp``: every job runs in a process of its own, and Lightning
    re-launches that job's command (not the sweep) for rank 1, into the job's directory."""
    sweep = tmp_path / "sweep"
    result = run_script(
        str(BIN / "ctvoco-finetune"),
        "-m",
        *DDP_CPU,
        *cohort_data(cli_cohort),
        *TINY_FINETUNE,
        "trainer.max_steps=2",
        RANK_LOGS,
        "data.fold=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert (result.stdout + result.stderr).count(RANK_1_JOINED) == 2
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for job in ("0", "1"):
        run_dir = sweep / job
        assert_both_ranks_logged_in(run_dir)
        assert (run_dir / "oof.csv").is_file() and (run_dir / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"], "no stray run directories"


@pytest.mark.slow
def test_pretrain_console_script_under_torchrun(cli_cohort, tmp_path):
    """torchrun starts both processes (Lightning's TorchElasticEnvironment); the run
    directory is given explicitly since every process composes its own config."""
    run_dir = tmp_path / "run"
    result = run_script(
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc-per-node=2",
        str(BIN / "ctvoco-pretrain"),
        *DDP_CPU,
        *cohort_data(cli_cohort),
        *TINY_PRETRAIN,
        f"paths.output_dir={run_dir}",
        cwd=tmp_path,
    )
    assert RANK_1_JOINED in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (run_dir / "export" / "test_efficientnet.pt").is_file()
    assert list((run_dir / "checkpoints").glob("*.ckpt"))


@dataclass
class ScriptRun:
    """A finished console-script run: its output and its working directory."""

    result: subprocess.CompletedProcess[str]
    cwd: Path


@pytest.fixture(scope="module")
def ddp_sim_finetune(cli_cohort, tmp_path_factory) -> ScriptRun:
    """``ctvoco-finetune trainer=ddp_sim``: 2 CPU processes, gloo, the program re-launched."""
    cwd = tmp_path_factory.mktemp("ddp_sim_finetune")
    result = run_script(
        str(BIN / "ctvoco-finetune"),
        "trainer=ddp_sim",
        *cohort_data(cli_cohort),
        *TINY_FINETUNE,
        cwd=cwd,
    )
    return ScriptRun(result, cwd)


@pytest.mark.slow
def test_finetune_console_script_trains_with_ddp_sim(ddp_sim_finetune):
    assert RANK_1_JOINED in ddp_sim_finetune.result.stdout + ddp_sim_finetune.result.stderr
    run_dir = only_run_dir(ddp_sim_finetune.cwd, "finetune")
    assert list((run_dir / "checkpoints").glob("*.ckpt"))
    assert (run_dir / "metrics.csv").is_file()


@pytest.mark.slow
def test_finetune_console_script_evaluates_with_ddp_sim(ddp_sim_finetune):
    run_dir = only_run_dir(ddp_sim_finetune.cwd, "finetune")
    assert (run_dir / "oof.csv").is_file(), ddp_sim_finetune.result.stderr[-2000:]
    assert (run_dir / "metrics.json").is_file()
