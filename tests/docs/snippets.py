"""The fenced code blocks of the documentation pages, read as the snippet tests need them.

A block is marked by an HTML comment on the last non-blank line before its fence, e.g.
``<!-- snippet: needs-data -->``; a page names the fixtures its blocks run on anywhere in
its text, e.g. ``<!-- snippet-env: dicom-series demo-outputs -->``. Neither shows on the
rendered page, and neither changes the code that runs.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ ]*$",
    flags=re.M | re.S,
)
MARK = re.compile(r"<!--\s*snippet:\s*(?P<marks>[\w\s-]+?)\s*-->\s*$")
PAGE_ENV = re.compile(r"<!--\s*snippet-env:\s*(?P<names>[\w\s-]+?)\s*-->")
HEREDOC = re.compile(
    r"^cat\s*>\s*(?P<path>\S+)\s*<<-?\s*'?(?P<tag>\w+)'?[ ]*\n(?P<body>.*?)^(?P=tag)[ ]*$",
    flags=re.M | re.S,
)
PROGRAM = re.compile(r"^ctvoco-(?P<name>[a-z][a-z-]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page.

    Attributes:
        page: The page, relative to the repository root (``docs/data.md``).
        language: The fence's language (``python``, ``bash``, ...).
        index: The block's position among the page's blocks of that language (from 0).
        line: The line of the opening fence (from 1).
        code: The block's text, dedented.
        marks: The words of the ``<!-- snippet: ... -->`` comment before the block.
    """

    page: str
    language: str
    index: int
    line: int
    code: str
    marks: frozenset[str]

    @property
    def name(self) -> str:
        """``docs/data.md, python block 0 (line 99)``: how tests and tracebacks name it."""
        return f"{self.page}, {self.language} block {self.index} (line {self.line})"


@dataclass(frozen=True)
class Invocation:
    """A ``ctvoco-<program>`` command line of a shell block.

    Attributes:
        program: The name after ``ctvoco-`` (``finetune``, ``cv-report``, ...).
        args: The arguments, unquoted as a shell would pass them.
        text: The command line as the test read it (continuations joined).
    """

    program: str
    args: tuple[str, ...]
    text: str


SUBSTITUTIONS: tuple[tuple[str, str, str], ...] = (
    (r"\$\(which (ctvoco-[a-z-]+)\)", r"\1", "a launcher given the console script's path"),
    (r'"\$\(ls ([^)"]*?)best-\*\.ckpt\)"', r"\1best.ckpt", "a checkpoint found with ls"),
    (r"\$\{RUN_DIR\}", "/shared/outputs/pretrain/runs/job-1", "the batch script's variable"),
    (r"\$\{fold\}", "0", "the shell loop's variable"),
    (r"\$PWD", "/work", "the current directory"),
    (r"<time>|<date>", "2026-01-05_10-00-00", "a run directory's time stamp"),
    (r"<fold run>", "outputs/finetune/runs/fold0", "a run directory"),
    (r"<multirun folder>", "outputs/finetune/multiruns/2026-01-05", "a multirun directory"),
    (r"/\.\.\./", "/run/", "an elided part of a path"),
    (r"=\.\.\.(?=\s|$)", "=/data/elided", "an elided value"),
    (r"(?<=\s)\.\.\.(?=\s)", "", "elided overrides"),
)
"""What a shell block's placeholders become before its commands are read:
``(pattern, replacement, what the placeholder stands for)``."""


def doc_pages() -> list[Path]:
    """Every documentation page and the README."""
    return [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]


def relative(page: Path) -> str:
    """The page's path relative to the repository root."""
    return page.resolve().relative_to(ROOT).as_posix()


def blocks(page: Path, language: str) -> list[Block]:
    """The page's fenced blocks of ``language``, in page order."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match["lang"] != language:
            continue
        before = text[: match.start()].rstrip().splitlines()
        mark = MARK.search(before[-1]) if before else None
        found.append(
            Block(
                page=relative(page),
                language=language,
                index=len(found),
                line=text.count("\n", 0, match.start()) + 1,
                code=textwrap.dedent(match["code"]),
                marks=frozenset(mark["marks"].split()) if mark else frozenset(),
            )
        )
    return found


def page_fixtures(page: Path) -> list[str]:
    """The fixture names of the page's ``<!-- snippet-env: ... -->`` comments, in order."""
    return [name for m in PAGE_ENV.finditer(page.read_text()) for name in m["names"].split()]


def heredocs(code: str) -> dict[str, str]:
    """The files a shell block writes with ``cat > PATH <<'TAG'``: path -> text."""
    return {m["path"]: m["body"] for m in HEREDOC.finditer(code)}


def command_lines(code: str) -> list[str]:
    """A shell block's command lines: heredoc bodies removed, continuations joined,
    placeholders substituted (:data:`SUBSTITUTIONS`), comments and blank lines dropped."""
    code = HEREDOC.sub("", code).replace("\\\n", " ")
    for pattern, replacement, _ in SUBSTITUTIONS:
        code = re.sub(pattern, replacement, code)
    lines = []
    for line in code.splitlines():
        if shlex.split(line, comments=True):
            lines.append(" ".join(line.split()))
    return lines


def invocations(code: str) -> list[Invocation]:
    """Every ``ctvoco-<program>`` command of a shell block (also after a launcher such as
    ``srun``, ``torchrun`` or ``docker run ... IMAGE``)."""
    found = []
    for line in command_lines(code):
        tokens = shlex.split(line, comments=True)
        for position, token in enumerate(tokens):
            match = PROGRAM.match(token)
            if match:
                found.append(Invocation(match["name"], tuple(tokens[position + 1 :]), line))
                break
    return found


def other_commands(code: str) -> list[list[str]]:
    """The tokens of a shell block's command lines that run no ``ctvoco-*`` program."""
    lines = [shlex.split(line, comments=True) for line in command_lines(code)]
    return [tokens for tokens in lines if not any(PROGRAM.match(t) for t in tokens)]
