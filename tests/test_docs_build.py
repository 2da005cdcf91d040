"""The documentation site builds, warning-free and with every reference resolved, and its reference
pages cover the code: every subcommand and every option of ``train`` on the CLI page (generated from
the parser), every public name (each package's ``__all__``) on the API pages."""

from __future__ import annotations

import argparse
import html
import importlib
import re
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("furo")

from multimix.cli import build_parser

# myst-parser calls APIs that Sphinx 11 will remove: its business, not the docs'
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: The packages (and modules) whose ``__all__`` the API reference documents.
PUBLIC = [
    "multimix",
    "multimix.mixers",
    "multimix.functional",
    "multimix.teacher",
    "multimix.schedules",
    "multimix.train",
    "multimix.evaluate",
    "multimix.analysis",
    "multimix.data",
    "multimix.models",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("html")
    # As `make docs` runs it: warnings are errors, every reference checked, a fresh environment.
    status = build_main(
        [
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-E",
            "-b",
            "html",
            "-d",
            str(out / ".doctrees"),
            *(str(DOCS), str(out)),
        ]
    )
    assert status == 0, "sphinx-build failed: see the warnings above"
    return out


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _text(path: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))


@pytest.mark.slow
def test_cli_page_lists_every_subcommand_and_every_train_option(site: Path) -> None:
    page = site / "reference" / "cli.html"
    source = page.read_text(encoding="utf-8")
    text = _text(page)
    parser = build_parser()
    subcommands = _subcommands(parser)
    assert subcommands, "build_parser() has no subcommands"
    for name, sub in subcommands.items():
        assert sub.format_usage().split()[1] in text, name
        assert f'id="multimix-{name}"' in source, f"no section for `multimix {name}`"
    train = subcommands["train"]
    shown = [a for a in train._actions if a.help != argparse.SUPPRESS]
    for action in shown:
        for flag in action.option_strings:
            # Sphinx's id for an option: its leading dashes become one.
            anchor = f'id="cmdoption-multimix-train-{flag.lstrip("-")}"'
            assert anchor in source, f"`multimix train {flag}` is missing from the CLI page"
    # Suppressed (deprecated) spellings stay out, as in --help.
    hidden = [f for a in train._actions if a.help == argparse.SUPPRESS for f in a.option_strings]
    shown_ids = {f.lstrip("-") for a in shown for f in a.option_strings}
    for flag in hidden:
        if flag.lstrip("-") not in shown_ids:
            assert f'id="cmdoption-multimix-train-{flag.lstrip("-")}"' not in source, flag


@pytest.mark.slow
def test_api_pages_name_every_public_name(site: Path) -> None:
    pages = "".join(
        p.read_text(encoding="utf-8") for p in (site / "reference" / "api").glob("*.html")
    )
    ids = set(re.findall(r'id="([^"]+)"', pages))
    missing = []
    for modname in PUBLIC:
        module = importlib.import_module(modname)
        names = getattr(module, "__all__", None) or [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == modname
        ]
        for name in names:
            documented = any(i.endswith(f".{name}") or i == f"module-{modname}.{name}" for i in ids)
            if not documented:
                missing.append(f"{modname}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"


@pytest.mark.slow
def test_math_is_served_by_the_site_itself(site: Path) -> None:
    page = (site / "concepts" / "multimix.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert any("mathjax" in s for s in scripts), scripts
    assert not [s for s in scripts if "://" in s], f"scripts from the network: {scripts}"
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert "\\(" in page or "\\[" in page  # math left for MathJax to typeset
