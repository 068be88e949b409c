"""Every code snippet of the documentation (``docs/*.md`` and ``README.md``) works as written.

Rules for the pages' authors:

- **Python blocks run.** All unmarked ```` ```python ```` blocks of a page run in order in
  ONE fresh Python process (a page is one notebook session: a block may use what an earlier
  block of the same page defined), with a fresh temporary folder as working directory, the
  environment of :data:`SNIPPET_ENV` (CPU only, no experiment tracking, no display) and a
  timeout. Write them at tiny size, e.g. on ``ctvoco.make_synthetic_cohort`` with small
  parameters. Files a page's code reads come from the fixtures the page names anywhere in its
  text with ``<!-- snippet-env: NAME ... -->`` (:data:`~tests.docs.snippet_fixtures.FIXTURES`);
  the code that runs is exactly what the page shows.
- **Blocks that need real data** are marked by ``<!-- snippet: needs-data -->`` on the line
  right before the fence. They are not run; they must compile, and every ctvoco name they
  import (``from ctvoco... import X``, ``import ctvoco.x``) or use (``ctvoco.X``) must exist.
  Every python block, marked or not, is checked the same way.
- **Shell blocks compose.** Every ``ctvoco-<program>`` command line of a ```` ```bash ````
  block (also after ``srun``, ``torchrun``, ``docker run IMAGE``; continuation lines joined)
  of a Hydra program (``pretrain``, ``finetune``, ``predict``, ``preprocess``, ``synth``) is
  composed with the package's configs and the line's overrides, as the program composes them
  (``-m``: every job of the sweep; ``--config-dir DIR``: the files the block writes with
  ``cat > FILE <<'TAG'``), so that a key or option that does not exist fails. Placeholders
  (``<time>``, ``...``, shell variables) are replaced as
  :data:`~tests.docs.snippets.SUBSTITUTIONS` says. The other ctvoco programs
  (:data:`ARGPARSE_PROGRAMS`) run ``--help``, whose text must name every option the line
  uses. Of the other commands, ``python SCRIPT`` must name a file of the repository and
  ``make TARGET`` a target of the Makefile (``VAR=value`` arguments aside); the rest
  (``pip``, ``docker``, ``du``, shell built-ins, ...) are not run.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from itertools import product
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from ctvoco.cli.predict import merge_repeated
from tests.docs.snippet_fixtures import FIXTURES
from tests.docs.snippets import (
    DOCS,
    ROOT,
    Block,
    Invocation,
    blocks,
    doc_pages,
    heredocs,
    invocations,
    other_commands,
    page_fixtures,
    relative,
)

MARKS = {"needs-data": "reads real data (RSNA or FLARE23 paths); compiled, not run"}
SNIPPET_ENV = {
    "CUDA_VISIBLE_DEVICES": "",
    "WANDB_MODE": "disabled",
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "2",
}
PAGE_TIMEOUT_S = 300
SLOW_PAGES = {"docs/notebook.md": "trains two small models: 15-45 s on two CPU cores"}
"""Pages whose python blocks run only with the tests marked slow -> why."""
HYDRA_PROGRAMS = ("pretrain", "finetune", "predict", "preprocess", "synth", "segment")
ARGPARSE_PROGRAMS = ("cv-report", "info", "demo", "study")
RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    print(f"--- {block['name']}", flush=True)
    exec(compile(block["code"], block["name"], "exec"), namespace)
"""
NOTEBOOK = DOCS / "notebook.md"
NOTEBOOK_MAX_LINES = 40


def all_blocks(language: str) -> list[Block]:
    """The blocks of ``language`` of every page."""
    return [block for page in doc_pages() for block in blocks(page, language)]


def block_id(block: Block) -> str:
    return f"{block.page}#{block.index}"


def runnable_pages() -> list[object]:
    """The pages with at least one unmarked python block (those of :data:`SLOW_PAGES`
    marked slow)."""
    return [
        pytest.param(p, id=relative(p), marks=[pytest.mark.slow] * (relative(p) in SLOW_PAGES))
        for p in doc_pages()
        if any(not b.marks for b in blocks(p, "python"))
    ]


# -- Python blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class PageRun:
    """The outcome of a page's python blocks.

    Attributes:
        workdir: Where they ran.
        returncode: The process's exit status.
        output: Its standard output and error.
    """

    workdir: Path
    returncode: int
    output: str


_RUNS: dict[str, PageRun] = {}


def run_page(page: Path, tmp_path_factory: pytest.TempPathFactory) -> PageRun:
    """Run the page's unmarked python blocks in one fresh process (once per test session)."""
    key = relative(page)
    if key not in _RUNS:
        workdir = tmp_path_factory.mktemp(page.stem)
        for name in page_fixtures(page):
            FIXTURES[name](workdir)
        runnable = [{"name": b.name, "code": b.code} for b in blocks(page, "python") if not b.marks]
        (workdir / ".blocks.json").write_text(json.dumps(runnable))
        env = {**os.environ, **SNIPPET_ENV}
        env.pop("PYTHONPATH", None)  # the snippet sees the installed package only
        try:
            done = subprocess.run(
                [sys.executable, "-c", RUNNER, ".blocks.json"],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=PAGE_TIMEOUT_S,
            )
            _RUNS[key] = PageRun(workdir, done.returncode, done.stdout + done.stderr)
        except subprocess.TimeoutExpired as exc:
            output = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {PAGE_TIMEOUT_S} s"
            _RUNS[key] = PageRun(workdir, -1, output)
    return _RUNS[key]


@pytest.mark.parametrize("page", runnable_pages())
def test_the_python_blocks_of_the_page_run(
    page: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = run_page(page, tmp_path_factory)
    assert run.returncode == 0, f"{relative(page)}: its python blocks failed:\n{run.output[-4000:]}"


def used_ctvoco_names(code: str) -> list[tuple[str, str | None]]:
    """``(module, name)`` of every ctvoco import (``name`` None: the module itself) and of
    every ``ctvoco.X`` attribute of a block."""
    names: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ctvoco":
            names += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [(a.name, None) for a in node.names if a.name.split(".")[0] == "ctvoco"]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "ctvoco"
        ):
            names.append(("ctvoco", node.attr))
    return names


def missing_name(module: str, name: str | None) -> str | None:
    """What of ``from module import name`` does not exist (None: all of it does)."""
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        return f"{module} ({exc})"
    if name is None or hasattr(imported, name):
        return None
    with contextlib.suppress(ImportError):
        importlib.import_module(f"{module}.{name}")
        return None
    return f"{module}.{name}"


@pytest.mark.parametrize("block", all_blocks("python"), ids=block_id)
def test_the_python_block_compiles_and_its_ctvoco_names_exist(block: Block) -> None:
    compile(block.code, block.name, "exec")
    missing = {
        m for module, name in used_ctvoco_names(block.code) if (m := missing_name(module, name))
    }
    assert not missing, f"{block.name} uses names that do not exist: {sorted(missing)}"


def test_marks_and_fixtures_are_known() -> None:
    unknown = []
    for page in doc_pages():
        unknown += [
            f"{relative(page)}: snippet-env {n}" for n in page_fixtures(page) if n not in FIXTURES
        ]
        for language in ("python", "bash"):
            for block in blocks(page, language):
                unknown += [f"{block.name}: snippet: {m}" for m in block.marks - set(MARKS)]
    assert not unknown, f"unknown snippet marks or fixtures: {unknown} (known: {sorted(MARKS)})"


# -- Shell blocks -------------------------------------------------------------------------


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The overrides of every job of a multirun (the cartesian product of its sweeps)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [text]
        for o, text in zip(parsed, overrides, strict=True)
    ]
    return [list(job) for job in product(*choices)]


def hydra_overrides(invocation: Invocation, workdir: Path) -> tuple[list[str], bool]:
    """The overrides a Hydra program composes for the command line, and whether it is a
    multirun (``-m``); ``--config-dir DIR`` becomes a search path entry."""
    overrides, multirun = [], False
    args = list(invocation.args)
    if invocation.program == "segment" and args[:1] == ["predict"]:
        args[:1] = ["mode=predict"]  # what the console script does with its subcommand
    while args:
        arg = args.pop(0)
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in ("--config-dir", "-cd") or arg.startswith("--config-dir="):
            folder = arg.partition("=")[2] or args.pop(0)
            overrides.append(f"hydra.searchpath=[file://{(workdir / folder).resolve()}]")
        elif arg.startswith("-"):
            raise AssertionError(f"{invocation.text}: the test does not know the flag {arg}")
        else:
            overrides.append(arg)
    if invocation.program == "predict":
        overrides = merge_repeated(overrides, "checkpoint")
    return overrides, multirun


def check_hydra_command(invocation: Invocation, workdir: Path) -> None:
    """Compose the command line's config (every job of a multirun)."""
    overrides, multirun = hydra_overrides(invocation, workdir)
    for job in sweep_jobs(overrides) if multirun else [overrides]:
        with initialize_config_module(config_module="ctvoco.conf", version_base="1.3"):
            try:
                compose(config_name=invocation.program, overrides=job)
            except Exception as exc:
                raise AssertionError(f"{invocation.text}\n  does not compose: {exc}") from exc


def help_text(program: str) -> str:
    """``ctvoco-<program> --help``, run through the console script's entry point."""
    (entry,) = entry_points(group="console_scripts", name=f"ctvoco-{program}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        entry.load()(["--help"])
    assert stop.value.code == 0, f"ctvoco-{program} --help exited with {stop.value.code}"
    return out.getvalue()


def check_argparse_command(invocation: Invocation) -> None:
    """``--help`` runs and names every option the command line uses."""
    text = help_text(invocation.program)
    options = {a.partition("=")[0] for a in invocation.args if a.startswith("--")}
    unknown = sorted(o for o in options if not re.search(rf"(?<![\w-]){o}(?![\w-])", text))
    assert not unknown, f"{invocation.text}: ctvoco-{invocation.program} has no option {unknown}"


def check_other_command(tokens: list[str], block: Block) -> None:
    """``python SCRIPT`` names a file, ``make TARGET`` a Makefile target; others pass."""
    command = tokens[0]
    if command == "python":
        assert (ROOT / tokens[1]).is_file(), f"{block.name}: no file {tokens[1]}"
    elif command == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in (t for t in tokens[1:] if "=" not in t and not t.startswith("-")):
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
                f"{block.name}: the Makefile has no target {target}"
            )


@pytest.mark.parametrize("block", all_blocks("bash"), ids=block_id)
def test_the_commands_of_the_shell_block_compose(block: Block, tmp_path: Path) -> None:
    for path, text in heredocs(block.code).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    for invocation in invocations(block.code):
        if invocation.program in HYDRA_PROGRAMS:
            check_hydra_command(invocation, tmp_path)
        else:
            assert invocation.program in ARGPARSE_PROGRAMS, (
                f"{block.name}: unknown program ctvoco-{invocation.program}"
            )
            check_argparse_command(invocation)
    for tokens in other_commands(block.code):
        check_other_command(tokens, block)


def test_every_program_the_test_knows_is_installed() -> None:
    scripts = {
        e.name for e in entry_points(group="console_scripts") if e.name.startswith("ctvoco-")
    }
    assert scripts == {f"ctvoco-{p}" for p in (*HYDRA_PROGRAMS, *ARGPARSE_PROGRAMS)}


def test_a_key_that_does_not_exist_fails_composition(tmp_path: Path) -> None:
    (invocation,) = invocations("ctvoco-finetune +experiment=rsna data.no_such_key=1\n")
    with pytest.raises(AssertionError, match="does not compose"):
        check_hydra_command(invocation, tmp_path)


def test_a_multirun_composes_every_job() -> None:
    jobs = sweep_jobs(["+experiment=rsna", "data.fold=0,1", "data.exclude_folds=[${data.fold}]"])
    assert jobs == [
        ["+experiment=rsna", "data.fold=0", "data.exclude_folds=[${data.fold}]"],
        ["+experiment=rsna", "data.fold=1", "data.exclude_folds=[${data.fold}]"],
    ]


# -- The notebook page --------------------------------------------------------------------


def test_the_notebook_page_is_short_and_linked() -> None:
    code = [b for b in blocks(NOTEBOOK, "python") if not b.marks]
    lines = sum(len(b.code.strip().splitlines()) for b in code)
    assert 0 < lines < NOTEBOOK_MAX_LINES, f"docs/notebook.md holds {lines} lines of code"
    linked = "(notebook.md)" in (DOCS / "index.md").read_text() + (DOCS / "example.md").read_text()
    assert linked, "neither docs/index.md nor docs/example.md links to docs/notebook.md"


@pytest.mark.slow
def test_the_notebook_page_runs_and_scores(tmp_path_factory: pytest.TempPathFactory) -> None:
    run = run_page(NOTEBOOK, tmp_path_factory)
    assert run.returncode == 0, run.output[-4000:]
    assert re.search(r"'score': \d+\.\d+", run.output), run.output[-2000:]
    submission = (run.workdir / "submission.csv").read_text().splitlines()
    assert len(submission) == 1 + 4  # a header and the four held-out patients


def test_a_name_that_ctvoco_lacks_is_found() -> None:
    code = (
        "import ctvoco\nfrom ctvoco.classify import InjuryClassifier, NoSuchThing\nctvoco.nope()\n"
    )
    missing = {m for module, name in used_ctvoco_names(code) if (m := missing_name(module, name))}
    assert missing == {"ctvoco.classify.NoSuchThing", "ctvoco.nope"}
