"""Every Python code block of the documentation runs, and every command shown parses.

Conventions (for whoever writes a page):

- A fenced block whose info string is ``python`` (or a ``{code-block} python`` directive) is run. The
  blocks of one page run in order, in one namespace per page, so a later block may use what an earlier one
  defined; keep them small (a few batches, small n).
- A page may need setup it does not show (a model, a batch): put it in an HTML comment that starts with
  ``<!-- doc: setup`` and ends with ``-->``, at the point where it must run. Prefer a visible block.
- A block that must not run here starts with the line ``# doc: skip (<why>)``, e.g. because it needs a GPU
  or a package the test environment lacks. Keep them few: each is listed in SKIPPED below with its reason,
  so a new one is a deliberate change.
- Shell blocks (``bash``, ``console``, ``shell``, ``sh``) are not run. Each ``multimix ...`` command in
  them (also after ``torchrun ... --no-python`` or ``python -m``) is parsed by
  ``multimix.cli.build_parser()`` — no training — so a removed or renamed flag fails here. In a command
  with placeholders (``...``, ``<x>``) and in inline code spans ``multimix <command> ...`` only the
  subcommand and its ``--flags`` are checked.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multimix.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts),
]

FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,})\s*([^\n]*)$")
SETUP = re.compile(r"^<!-- doc: setup\s*$")
SKIP = re.compile(r"^#\s*doc:\s*skip\s*\((.+)\)\s*$")
SHELL = {"bash", "console", "shell", "sh"}

#: Every skipped block, (page, reason): a skip is a decision, not an accident.
SKIPPED = {
    ("docs/how-to/timm.md", "needs timm, which is not installed in the test environment"),
    ("docs/how-to/gpu.md", "needs a CUDA GPU"),
}


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks(page: Path) -> list[tuple[str, int, str]]:
    """(kind, first line number, code) of every fenced block and setup comment, in page order.

    kind is "python", "setup", "shell" or "other"."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        if SETUP.match(line):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "-->")
            found.append(("setup", i + 2, "\n".join(lines[i + 1 : end])))
            i = end + 1
            continue
        fence = FENCE.match(line)
        if not fence:
            i += 1
            continue
        marker, info = fence.group(2), fence.group(3).strip()
        end = next(
            j
            for j in range(i + 1, len(lines))
            if lines[j].strip().startswith(marker) and not lines[j].strip().strip(marker[0])
        )
        body = lines[i + 1 : end]
        if info.startswith("{code-block}") or info.startswith("{code}"):
            language = info.split(maxsplit=1)[1].strip() if " " in info else ""
            body = [b for b in body if not re.match(r"^:[\w-]+:", b)]  # directive options
        else:
            language = info.split()[0] if info else ""
        kind = "python" if language == "python" else "shell" if language in SHELL else "other"
        found.append((kind, i + 2, "\n".join(body)))
        i = end + 1
    return found


def _python_pages() -> list[Path]:
    return [p for p in PAGES if any(k in ("python", "setup") for k, _, _ in _blocks(p))]


#: Pages whose blocks take more than a few seconds.
SLOW_PAGES = {"docs/how-to/analysis.md", "docs/how-to/evaluation.md"}


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=pytest.mark.slow) if _rel(p) in SLOW_PAGES else p
        for p in _python_pages()
    ],
    ids=_rel,
)
def test_the_python_blocks_of_a_page_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    torch.manual_seed(0)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for kind, line, code in _blocks(page):
        if kind not in ("python", "setup"):
            continue
        first = code.strip().splitlines()[0] if code.strip() else ""
        skip = SKIP.match(first)
        if skip:
            assert (_rel(page), skip.group(1)) in SKIPPED, (
                f"{_rel(page)}:{line}: a skipped block not listed in SKIPPED: {skip.group(1)!r}"
            )
            continue
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(code, f"{_rel(page)}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(
                f"{_rel(page)}, the block at line {line} fails: {error!r}"
            ) from error


def test_every_skip_is_still_in_the_docs():
    found = {
        (_rel(p), SKIP.match(code.strip().splitlines()[0]).group(1))
        for p in PAGES
        for kind, _, code in _blocks(p)
        if kind == "python" and code.strip() and SKIP.match(code.strip().splitlines()[0])
    }
    assert found == SKIPPED


# --- commands -----------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\.\.\.|…|<[^>]*>|\[|\|")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _shell_commands(page: Path) -> list[tuple[int, str]]:
    """(line, command) of each line of a shell block that runs multimix, continuations joined."""
    commands = []
    for kind, line, code in _blocks(page):
        if kind != "shell":
            continue
        joined, start = "", line
        for offset, text in enumerate(code.splitlines()):
            if not joined:
                start = line + offset
            text = re.sub(r"^\s*\$\s", "", text)  # a console prompt
            if text.rstrip().endswith("\\"):
                joined += text.rstrip()[:-1] + " "
                continue
            joined += text
            command = joined.split("#", 1)[0].strip() if "#" in joined else joined.strip()
            joined = ""
            match = re.search(r"(?:^|\s|/)multimix(?:\.cli)?\s+(\S.*)$", command)
            if match and not command.startswith(("pip", "git", "make", "cd ")):
                commands.append((start, match.group(1)))
    return commands


def _inline_commands(page: Path) -> list[tuple[int, str]]:
    commands, fence = [], None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        marker = FENCE.match(line)
        if marker:
            fence = None if fence else marker.group(2)
            continue
        if fence is None:
            commands += [(number, m) for m in re.findall(r"`multimix ([a-z][^`]*)`", line)]
    return commands


def _check(arguments: str, where: str, full: bool) -> None:
    words = shlex.split(arguments)
    choices = _subparsers()
    assert words and words[0] in choices, f"{where}: no such subcommand: multimix {arguments}"
    if full and not PLACEHOLDER.search(arguments):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                build_parser().parse_args(words)
            except SystemExit as stop:
                code = stop.code
            else:
                code = 0
        assert code == 0, f"{where}: `multimix {arguments}` does not parse"
        return
    known = choices[words[0]]._option_string_actions
    for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", arguments.split(maxsplit=1)[-1]):
        assert flag in known, f"{where}: multimix {words[0]} has no option {flag}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_command_shown_parses(page: Path):
    for line, arguments in _shell_commands(page):
        _check(arguments, f"{_rel(page)}:{line}", full=True)
    for line, arguments in _inline_commands(page):
        _check(arguments, f"{_rel(page)}:{line}", full=False)


def test_the_command_check_catches_a_renamed_flag():
    with pytest.raises(AssertionError, match="does not parse"):
        _check("train --dataset mnist1d --no-such-flag 3", "here", full=True)
    with pytest.raises(AssertionError, match="has no option"):
        _check("train --method multimix [--no-such-flag]", "here", full=False)
    _check("train --dataset mnist1d --method multimix --epochs 3 --out runs/x", "here", full=True)


def test_the_home_page_figure_script_runs(tmp_path):
    out = tmp_path / "hull.png"
    subprocess.run(
        [sys.executable, str(ROOT / "docs" / "figures" / "hull.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.stat().st_size > 10_000
    assert (ROOT / "docs" / "figures" / "hull.png").is_file()  # the committed one the docs show
