"""Cache builds as processes: a killed build leaves no process behind, and concurrent builds
on one cache share the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ctvoco.cache import VolumeCache, build_cache
from tests.cache import worker_probe
from tests.cache.test_builder import CONFIG, quiet, write_cases

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads processes from /proc"
)


def session_processes(sid: int) -> list[tuple[int, str, str]]:
    """``(pid, state, command)`` of the live (not zombie) processes of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile
            continue
        fields = stat.rpartition(")")[2].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state not in ("Z", "X"):
            found.append((int(entry.name), state, command.strip()))
    return found


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def started(log: Path) -> list[tuple[str, int]]:
    """``(key, pid)`` of every series the probe started, in order."""
    if not log.exists():
        return []
    return [(k, int(p)) for k, p in (line.split() for line in log.read_text().splitlines())]


def probe_env(log: Path, seconds: float, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
        worker_probe.LOG_VARIABLE: str(log),
        worker_probe.PAUSE_VARIABLE: str(seconds),
        **extra,
    }


def write_sources(tmp_path: Path, n: int) -> Path:
    sources = write_cases(tmp_path / "raw", n)
    path = tmp_path / "sources.json"
    path.write_text(json.dumps([(s.key, s.source) for s in sources]))
    return path


def kill_session_and_check(process: subprocess.Popen, log: Path) -> None:
    """SIGKILL the main process once two workers run; nothing of its session may remain."""
    sid = process.pid  # start_new_session: the main process leads its own session
    try:
        assert wait_until(lambda: len({p for _, p in started(log)}) >= 2, timeout=120), (
            "the workers never started"
        )
        assert len(session_processes(sid)) >= 4, session_processes(sid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        gone = wait_until(lambda: not session_processes(sid), timeout=5)
        assert gone, f"left behind: {session_processes(sid)}"
    finally:
        for pid, _, _ in session_processes(sid):
            os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()


@linux_only
def test_killed_build_leaves_no_worker_behind(tmp_path) -> None:
    sources = write_sources(tmp_path, 8)
    log = tmp_path / "started.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.cache.build_probe", str(sources), str(tmp_path / "c"), "2"],
        cwd=ROOT,
        env=probe_env(log, 30.0),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_session_and_check(process, log)
    assert len(started(log)) == 2, "the workers started no further series after the kill"


SLOW_SITE = """
import os

if os.environ.get("CTVOCO_SLOW_SERIES"):
    import time

    import ctvoco.cache.builder as builder

    real = builder.preprocess_volume

    def slow(volume, config):
        with open(os.environ["CTVOCO_SLOW_LOG"], "a") as handle:
            handle.write(f"{volume.source} {os.getpid()}\\n")
        time.sleep(float(os.environ["CTVOCO_SLOW_SERIES"]))
        return real(volume, config)

    builder.preprocess_volume = slow
"""


@linux_only
def test_killed_ctvoco_preprocess_leaves_no_process_behind(tiny_cohort, tmp_path) -> None:
    """The console script itself, its two workers slowed down by a site hook in every process."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_SITE)
    log = tmp_path / "started.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "CTVOCO_SLOW_SERIES": "30",
        "CTVOCO_SLOW_LOG": str(log),
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ctvoco-preprocess")),
            f"data.root={tiny_cohort.rsna_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.preprocess.shape=[6,24,24]",
            "num_workers=2",
            f"paths.output_dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_session_and_check(process, log)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_concurrent_builds_share_the_series(tmp_path, num_workers) -> None:
    """Two builds on one cache at once: each series is processed once, both end complete."""
    n = 8
    sources = write_sources(tmp_path, n)
    log = tmp_path / "started.log"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    cache_dir = tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "tests.cache.build_probe",
        str(sources),
        str(cache_dir),
        str(num_workers),
        str(barrier),
    ]
    env = probe_env(log, 0.4)
    runs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        assert wait_until(lambda: len(list(barrier.glob("ready-*"))) == 2, timeout=120)
        (barrier / "go").write_text("")
        outputs = [run.communicate(timeout=240)[0] for run in runs]
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()
    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    keys = [key for key, _ in started(log)]
    assert sorted(keys) == sorted(set(keys)), f"a series was processed twice: {keys}"
    assert len(keys) == n
    assert sum(s["processed"] for s in summaries) == n, summaries
    cache = VolumeCache(cache_dir)
    manifest = cache.manifest()
    assert len(manifest) == n and set(manifest["status"]) == {"ok"}
    assert all(s["failed"] == 0 for s in summaries)


def test_build_waits_for_a_series_another_run_holds(tmp_path) -> None:
    """A series claimed elsewhere is skipped at first, then taken over when its claim ends
    without a record (the other run died)."""
    sources = write_cases(tmp_path / "raw", 3)
    cache = VolumeCache(tmp_path / "cache")
    cache.ensure_variant(CONFIG)
    held = threading.Event()
    release = threading.Event()

    def other_run() -> None:
        with cache.claim(sources[0].key) as claimed:
            assert claimed
            held.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=other_run)
    thread.start()
    held.wait(timeout=30)
    timer = threading.Timer(0.5, release.set)
    timer.start()
    try:
        summary = build_cache(sources, cache, CONFIG, console=quiet())
    finally:
        release.set()
        thread.join()
    assert (summary.processed, summary.ok, summary.skipped) == (3, 3, 0)
    assert all(cache.has(s.key) for s in sources)


def test_build_picks_up_a_series_another_run_finished(tmp_path, monkeypatch) -> None:
    """A series another run recorded while this one waited is not processed again."""
    sources = write_cases(tmp_path / "raw", 2)
    cache = VolumeCache(tmp_path / "cache")
    cache.ensure_variant(CONFIG)
    other = VolumeCache(cache.root)
    held = threading.Event()
    release = threading.Event()

    def other_run() -> None:
        from ctvoco.cache.builder import process_series

        with other.claim(sources[1].key):
            held.set()
            release.wait(timeout=30)
            other.write_record(process_series(sources[1], CONFIG, str(other.root)))

    thread = threading.Thread(target=other_run)
    thread.start()
    held.wait(timeout=30)
    threading.Timer(0.5, release.set).start()
    try:
        summary = build_cache(sources, cache, CONFIG, console=quiet())
    finally:
        release.set()
        thread.join()
    assert (summary.processed, summary.by_other_run, summary.ok) == (1, 1, 2)
    assert all(cache.has(s.key) for s in sources)
    assert len(cache.manifest()) == 2


def test_claims_are_per_series(tmp_path) -> None:
    cache = VolumeCache(tmp_path / "cache")
    cache.ensure_variant(CONFIG)
    with cache.claim("A_1") as first, cache.claim("A_1") as again, cache.claim("B_2") as other:
        assert (first, again, other) == (True, False, True)
    with cache.claim("A_1") as later:
        assert later
