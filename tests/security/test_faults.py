"""Faults and hostile inputs: unusable directories, a full disk, pickled code in checkpoints,
ids that try to become paths, and configs that try to instantiate arbitrary callables.

The console scripts run as subprocesses (``WANDB_MODE=disabled``); being root here, permission
bits do not stop writes, so an unusable directory is a path below an existing *file*.
"""

from __future__ import annotations

import ast
import collections
import logging
import os
import pickletools
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra._internal.utils import _locate

import ctvoco
import ctvoco.cache.builder as builder
from ctvoco.cache import VolumeCache, build_cache
from ctvoco.classify.module import InjuryClassifier
from ctvoco.cli.components import check_targets
from ctvoco.data.flare import flare_cases
from ctvoco.data.rsna import read_rsna_labels, read_series_meta, rsna_series
from ctvoco.errors import DataError, UserError
from ctvoco.inference import discover_input, load_classifier
from ctvoco.io.nifti import nifti_case_id
from ctvoco.io.series import check_key
from ctvoco.models import create_backbone, export_backbone, load_backbone_weights
from ctvoco.preprocessing import PreprocessConfig
from ctvoco.training.checkpoints import ModelCheckpoint
from ctvoco.training.history import MetricsHistory
from tests.data.conftest import label_row, write_csv
from tests.voco.test_module import loader as voco_loader
from tests.voco.test_module import make_module as voco_module

BIN = Path(sys.executable).parent
SRC = Path(ctvoco.__file__).parent
MB = 2**20


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run(
        [str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def user_error_line(result: subprocess.CompletedProcess[str], script: str) -> str:
    """The one ``<script>: error: ...`` line of a user error (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{script}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------------ unusable directories


@pytest.mark.parametrize("script", ["ctvoco-finetune", "ctvoco-preprocess"])
def test_uncreatable_output_dir_is_a_user_error_before_any_work(script: str, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    output_dir = blocker / "run"
    result = run(script, f"paths.output_dir={output_dir}", cwd=tmp_path)
    line = user_error_line(result, script)
    assert str(output_dir) in line and "paths.output_dir" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"], "nothing else was written"


@pytest.mark.parametrize(
    "script",
    [
        "ctvoco-preprocess",
        pytest.param("ctvoco-finetune"),
    ],
)
def test_unusable_cache_dir_is_a_user_error_naming_data_cache_dir(
    script: str, tiny_cohort, tmp_path: Path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache_dir = blocker / "cache"
    result = run(
        script,
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={cache_dir}",
        "data.preprocess.shape=[16,64,64]",
        f"paths.output_dir={tmp_path / 'run'}",
        *(
            ["model.module.backbone=test_efficientnet", "logger=none"]
            if script == "ctvoco-finetune"
            else []
        ),
        cwd=tmp_path,
    )
    line = user_error_line(result, script)
    assert str(cache_dir) in line and "data.cache_dir" in line
    assert blocker.read_text() == ""


# ------------------------------------------------------------------------ full disk
DiskUsage = collections.namedtuple("DiskUsage", "total used free")


def test_full_disk_stops_the_cache_build_before_any_series(tiny_cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(100 * MB, 99 * MB, 1 * MB))
    processed: list = []
    monkeypatch.setattr(builder, "process_series", lambda *args: processed.append(args))
    sources = rsna_series(tiny_cohort.rsna_root)
    cache = VolumeCache(tmp_path / "cache")

    with pytest.raises(UserError, match="not enough disk space") as info:
        build_cache(sources, cache, PreprocessConfig(), progress=False)  # 96x256x256 each

    message = str(info.value)
    assert str(cache.root) in message and "data.cache_dir" in message
    assert f"{len(sources)} series" in message
    assert processed == [], "no series was processed"
    assert not cache.volumes_dir.exists() or not any(cache.volumes_dir.iterdir())
    assert cache.records() == []


# ------------------------------------------------------------------------ weights_only everywhere
def source_calls() -> list[tuple[str, ast.Call]]:
    """Every call in ``src/ctvoco`` as ``(file:line, node)``."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                found.append((f"{path.relative_to(SRC.parent)}:{node.lineno}", node))
    return found


def callee(node: ast.Call) -> str:
    """``torch.load`` for ``torch.load(...)``, ``.fit`` for ``trainer.fit(...)``."""
    func = node.func
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else ""
        return f"{owner}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


def keyword_is(node: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in node.keywords
    )


def test_every_torch_load_in_the_library_is_weights_only():
    loads = [(where, node) for where, node in source_calls() if callee(node).endswith(".load")]
    torch_loads = [(w, n) for w, n in loads if callee(n) == "torch.load"]
    assert torch_loads, "read_state_file calls torch.load"
    unsafe = [w for w, n in torch_loads if not keyword_is(n, "weights_only", True)]
    assert not unsafe, f"torch.load without weights_only=True at {unsafe}"
    numpy_loads = [(w, n) for w, n in loads if callee(n) == "np.load"]
    assert all(keyword_is(n, "allow_pickle", False) for _, n in numpy_loads), numpy_loads
    imports = {
        alias.name
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert not imports & {"pickle", "dill", "joblib", "cloudpickle"}, "no pickle loaders"


def test_nothing_in_the_library_asks_for_weights_only_false():
    offenders = [
        f"{path.relative_to(SRC.parent)}:{i}"
        for path in sorted(SRC.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"weights_only\s*=\s*(False|None|0)\b", line)
    ]
    assert not offenders, offenders


def test_lightning_checkpoint_loads_are_weights_only():
    """``load_from_checkpoint`` and ``trainer.fit/validate/test/predict(ckpt_path=...)``.

    Lightning's own default (``weights_only=None``) defers to torch's default, which is
    ``False`` on torch < 2.6 (allowed by the ``torch>=2.4`` floor) and can be flipped by
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``: every call must say ``weights_only=True``.
    """
    lightning_loads = [
        (where, node)
        for where, node in source_calls()
        if callee(node).endswith(".load_from_checkpoint")
        or (
            callee(node).split(".")[-1] in ("fit", "validate", "test", "predict")
            and any(k.arg == "ckpt_path" for k in node.keywords)
        )
    ]
    where = sorted(w for w, _ in lightning_loads)
    assert any("inference/checkpoints.py" in w for w in where), where
    assert any("cli/finetune.py" in w for w in where), where
    assert any("cli/pretrain.py" in w for w in where), where
    unsafe = [w for w, n in lightning_loads if not keyword_is(n, "weights_only", True)]
    assert not unsafe, f"Lightning checkpoint loads without weights_only=True: {unsafe}"


def test_ctvoco_checkpoints_resume_with_weights_only(tmp_path: Path):
    """What the CLI's ``weights_only=True`` loads: a checkpoint with the CLI's callbacks."""
    callbacks = [
        ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True),
        pl.callbacks.LearningRateMonitor(logging_interval="step"),
        MetricsHistory(tmp_path),
    ]
    options = {
        "accelerator": "cpu",
        "logger": pl.loggers.CSVLogger(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    pl.Trainer(max_steps=1, callbacks=callbacks, **options).fit(
        voco_module(), voco_loader(count=2, batch_size=1)
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 1

    resumed = pl.Trainer(max_steps=2, callbacks=[MetricsHistory(tmp_path)], **options)
    resumed.fit(
        voco_module(), voco_loader(count=2, batch_size=1), ckpt_path=last, weights_only=True
    )
    assert resumed.global_step == 2


# ------------------------------------------------------------------------ pickled code
class Payload:
    """Unpickling this calls ``print("pwned")`` (a harmless stand-in for ``os.system``)."""

    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture
def malicious_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "evil.ckpt"
    state = {"student_encoder.backbone.conv_stem.weight": Payload()}
    torch.save({"state_dict": state, "hyper_parameters": {"backbone": "test_efficientnet"}}, path)
    return path


def pickled_globals(path: Path) -> set[str]:
    """Globals the pickle inside a ``torch.save`` archive would import (read, not run)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        data = archive.read(name)
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def test_the_malicious_checkpoint_really_carries_code(malicious_checkpoint, capsys):
    assert pickled_globals(malicious_checkpoint) & {"builtins print", "__builtin__ print"}
    assert "pwned" not in capsys.readouterr().out


def loaders(path: Path, tmp_path: Path) -> dict[str, object]:
    return {
        "load_backbone_weights": lambda: load_backbone_weights(
            create_backbone("test_efficientnet"), path
        ),
        "load_classifier": lambda: load_classifier(path, torch.device("cpu")),
        "export_backbone": lambda: export_backbone(path, tmp_path / "out.pt"),
        "InjuryClassifier(init=voco:...)": lambda: InjuryClassifier(
            backbone="test_efficientnet", hidden=8, init=f"voco:{path}"
        ),
    }


@pytest.mark.parametrize(
    "entry",
    [
        "load_backbone_weights",
        "load_classifier",
        "export_backbone",
        "InjuryClassifier(init=voco:...)",
    ],
)
def test_malicious_checkpoint_is_refused_and_never_run(
    entry: str, malicious_checkpoint, tmp_path, capsys
):
    with pytest.raises(DataError) as info:
        loaders(malicious_checkpoint, tmp_path)[entry]()
    assert str(malicious_checkpoint) in str(info.value)
    captured = capsys.readouterr()
    assert "pwned" not in captured.out and "pwned" not in captured.err
    assert not (tmp_path / "out.pt").exists()


def imagenet_weights(tmp_path: Path) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save({"conv_stem.weight": Payload()}, folder / "test_efficientnet.pth")
    return folder


def test_malicious_imagenet_weights_are_never_run(tmp_path, capsys):
    with pytest.raises(Exception, match="weights_only"):
        create_backbone(
            "test_efficientnet", init="imagenet", weights_dir=str(imagenet_weights(tmp_path))
        )
    captured = capsys.readouterr()
    assert "pwned" not in captured.out and "pwned" not in captured.err


def test_unreadable_imagenet_weights_are_a_data_error_naming_the_file(tmp_path):
    folder = imagenet_weights(tmp_path)
    with pytest.raises(DataError, match=re.escape(str(folder / "test_efficientnet.pth"))):
        create_backbone("test_efficientnet", init="imagenet", weights_dir=str(folder))


# ------------------------------------------------------------------------ ids that want to be paths
HOSTILE_IDS = [
    "../../etc",
    "1; rm -rf /",
    "-1",
    "²",
    "0x10",
    pytest.param("1e3"),
]


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_patient_id_in_train_csv_is_a_data_error_naming_file_and_line(bad, tmp_path):
    path = write_csv(tmp_path / "train.csv", [label_row(10001), label_row(bad), label_row(10002)])
    with pytest.raises(DataError, match=re.escape(f"{path}:3")) as info:
        read_rsna_labels(path)
    assert "patient_id" in str(info.value)


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_hostile_series_id_in_series_meta_is_a_data_error(bad, tmp_path):
    path = tmp_path / "train_series_meta.csv"
    path.write_text(f"patient_id,series_id\n10001,5\n10001,{bad}\n10002,7\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:3")) as info:
        read_series_meta(path)
    assert "series_id" in str(info.value)


FOLDER_NAMES = ["a b", "12x", "-1", "²", "١٢", "1;rm", "..hidden", ".x"]
"""Image folder names that are not integer ids (a name cannot contain ``/``)."""


def image_tree(root: Path) -> Path:
    images = root / "train_images"
    for name in FOLDER_NAMES:
        (images / name / "5").mkdir(parents=True)
    (images / "10001" / "5").mkdir(parents=True)
    (images / "10001" / "a b").mkdir()
    (images / "10001" / "..x").mkdir()
    return images


def test_rsna_folders_that_are_not_ids_are_skipped_with_a_warning(tmp_path, caplog):
    image_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ctvoco.data.rsna"):
        sources = rsna_series(tmp_path)
    assert [s.key for s in sources] == ["10001_5"]
    assert all(Path(s.source).parent.parent == tmp_path / "train_images" for s in sources)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    # Hidden entries ("..hidden", ".x", "10001/..x") are ignored by design; the rest are named.
    assert "skipped 7 entries whose names are not integer ids" in warnings[0]


def test_prediction_input_folders_that_are_not_ids_are_skipped(tmp_path):
    sources, patients = discover_input(image_tree(tmp_path))
    assert patients == ["10001"]
    assert [s.key for s in sources] == ["10001_5"]


@pytest.mark.parametrize(
    "key",
    [
        "a/b",
        "../x",
        "..",
        "a..b",
        ".hidden",
        "",
        "a b",
        "x" * 129,
        "a\x00b",
        "é",
        "a\\b",
        "-rf",
        "%2e%2e",
        pytest.param("abc\n"),
    ],
)
def test_bad_cache_keys_are_refused(key: str, tmp_path: Path):
    with pytest.raises(DataError, match="invalid cache key"):
        check_key(key)
    cache = VolumeCache(tmp_path / "cache")
    with pytest.raises(DataError):
        cache.write(key, np.zeros((1, 2, 2), np.uint8))
    assert not any(tmp_path.rglob("*.npy")), "nothing written anywhere"


@pytest.mark.parametrize("key", ["10001_5", "FLARE23_0001", "a.b-c_d", "x" * 128])
def test_good_cache_keys_pass(key: str):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "name",
    [
        "..%2F_0000.nii.gz",
        "..evil_0000.nii.gz",
        "a b_0000.nii.gz",
        "x;rm -rf ~_0000.nii.gz",
        "$(id)_0000.nii.gz",
        "é_0000.nii.gz",
        pytest.param("FLARE\n_0000.nii.gz"),
    ],
)
def test_flare_case_ids_outside_the_key_alphabet_are_refused(name: str, tmp_path: Path):
    case = nifti_case_id(tmp_path / name)
    with pytest.raises(DataError, match="invalid cache key"):
        check_key(case)
    (tmp_path / "FLARE23_0001_0000.nii.gz").write_bytes(b"")
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match="invalid cache key"):
        flare_cases(tmp_path)


def test_flare_case_id_of_a_normal_file():
    assert check_key(nifti_case_id("/data/imagesTr/FLARE23_0001_0000.nii.gz")) == "FLARE23_0001"


# ------------------------------------------------------------------------ config targets
def user_config(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "user_configs"
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    (folder / "experiment" / f"{name}.yaml").write_text(f"# @package _global_\n{text}")
    return folder


def test_data_target_of_another_kind_exits_2(tmp_path: Path):
    configs = user_config(tmp_path, "evil", "data:\n  _target_: subprocess.Popen\n")
    result = run(
        "ctvoco-preprocess",
        "--config-dir",
        str(configs),
        "+experiment=evil",
        f"paths.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    line = user_error_line(result, "ctvoco-preprocess")
    assert "data._target_='subprocess.Popen' is not a LightningDataModule" in line


def test_callback_target_of_another_kind_exits_2(tiny_cohort, tmp_path: Path):
    marker = tmp_path / "marker"
    configs = user_config(
        tmp_path,
        "evil",
        "defaults:\n"
        "  - override /callbacks: none\n"
        "callbacks:\n"
        "  evil:\n"
        "    _target_: subprocess.Popen\n"
        f"    args: [touch, {marker}]\n",
    )
    result = run(
        "ctvoco-finetune",
        "--config-dir",
        str(configs),
        "+experiment=evil",
        f"data.root={tiny_cohort.rsna_root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.shape=[16,64,64]",
        "model.module.backbone=test_efficientnet",
        "logger=none",
        f"paths.output_dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    line = user_error_line(result, "ctvoco-finetune")
    assert "callbacks.evil._target_='subprocess.Popen' is not a Lightning Callback" in line
    assert not marker.exists(), "the callable was never called"


@pytest.mark.parametrize(
    ("target", "resolves_to"),
    [
        ("ctvoco.cli.components.Path", Path),
        ("torch.optim.optimizer.torch.Tensor", torch.Tensor),
    ],
)
def test_a_kind_is_checked_on_what_the_target_resolves_to(target: str, resolves_to):
    assert _locate(target) is resolves_to  # what Hydra would call (nothing is called here)
    shown = f"{resolves_to.__module__}.{resolves_to.__qualname__}"
    with pytest.raises(UserError, match=f"is not a Lightning Callback: {shown} is no subclass"):
        check_targets({"callbacks": {"evil": {"_target_": target}}})
