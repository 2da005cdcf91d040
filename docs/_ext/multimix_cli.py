"""The ``multimix-cli`` directive: the command-line reference, generated from the parser itself.

It walks ``multimix.cli.build_parser()`` at build time, so the page can never drift from the code:
for the program and every subcommand, a section with its description, its usage line and, group by
group, every option (Sphinx ``option`` objects, linkable as ``{option}`multimix train --dataset```)
with its help, its default and its choices. Options whose help is ``argparse.SUPPRESS`` (the
deprecated spellings) are left out, as ``--help`` leaves them out.

Usage, in a MyST page::

    ```{multimix-cli}
    ```
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Parser as RSTParser
from docutils.utils import new_document
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

#: Width of the usage lines, in characters (argparse reads it from $COLUMNS).
USAGE_WIDTH = 90


def _escape(text: str) -> str:
    """Help text as reStructuredText: markup characters literal, `quoted` spans as inline code."""
    # Flags become inline code (and so escape smartquotes, which would make ``--out`` an en dash).
    text = re.sub(r"(?<![^\s(\[,/])(--?[A-Za-z][\w-]*)", r"`\1`", text)
    pieces = re.split(r"(`[^`]+`)", text)
    out = []
    for piece in pieces:
        if piece.startswith("`") and piece.endswith("`") and len(piece) > 2:
            out.append(f"\\ ``{piece[1:-1]}``\\ ")
        else:
            out.append(re.sub(r"([\\*_|\[\]<>:`])", r"\\\1", piece))
    return "".join(out)


def _literal(value: Any) -> str:
    text = str(value) if not isinstance(value, str) else value
    return f"``{text}``" if text.strip() else f"``{value!r}``"


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers by name, in the order they were added."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions ``--help`` shows (not the subcommand dispatcher, not suppressed ones)."""
    return [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)
    ]


def _signature(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if not action.option_strings:
        metavar = formatter._metavar_formatter(action, action.dest)(1)[0]
        return metavar + (" ..." if action.nargs in ("+", "*") else "")
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    args = formatter._format_args(action, action.dest.upper())
    return ", ".join(f"{s} {args}" for s in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    formatter = parser._get_formatter()
    text = formatter._expand_help(action) if action.help else ""
    lines = [_escape(" ".join(text.split())) if text else "(no help)"]
    shows_default = "(default" in text
    if (
        not shows_default
        and action.default not in (None, argparse.SUPPRESS, False)
        and action.nargs != 0
    ):
        lines += ["", f"Default: {_literal(action.default)}"]
    if action.choices is not None:
        lines += ["", "Choices: " + ", ".join(_literal(c) for c in action.choices)]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(USAGE_WIDTH + 2)
    try:
        return parser.format_usage().strip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _underline(title: str, char: str) -> list[str]:
    return [title, char * len(title), ""]


def _parser_rst(parser: argparse.ArgumentParser, title: str, level: str, summary: str) -> list[str]:
    lines = _underline(title, level)
    for paragraph in (summary, parser.description):
        if paragraph:
            lines += [_escape(paragraph), ""]
    lines += [".. code-block:: text", ""]
    lines += ["   " + line for line in _usage(parser).splitlines()]
    lines += ["", f".. program:: {parser.prog}", ""]
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a in documented_actions(parser)]
        if not actions:
            continue
        lines += [f".. rubric:: {_escape(group.title or 'options').capitalize()}", ""]
        if group.description:
            lines += [_escape(group.description), ""]
        for action in actions:
            lines += [f".. option:: {_signature(action, formatter)}", ""]
            lines += ["   " + line if line else "" for line in _help(parser, action)]
            lines += [""]
    if parser.epilog:
        lines += [_escape(" ".join(parser.epilog.split())), ""]
    return lines


def cli_rst(parser: argparse.ArgumentParser) -> str:
    """The whole reference as reStructuredText: the program, then one section per subcommand."""
    lines = _parser_rst(parser, f"{parser.prog}", "=", "")
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
    for name, sub in subcommands(parser).items():
        lines += _parser_rst(sub, sub.prog, "=", helps.get(name) or "")
    return "\n".join(lines) + "\n"


class MultimixCli(SphinxDirective):
    """Insert the generated CLI reference."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from multimix.cli import build_parser

        text = cli_rst(build_parser())
        # Parse as reStructuredText whatever the page's own syntax (MyST pages included), into a
        # scratch document that shares this one's settings (and so Sphinx's environment).
        doc = new_document(self.env.docname, self.state.document.settings)
        doc.reporter = self.state.document.reporter
        RSTParser().parse(text, doc)
        for node in doc.findall(nodes.Element):
            if node.get("names"):
                self.state.document.note_implicit_target(node, node)
        return list(doc.children)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("multimix-cli", MultimixCli)
    # The page depends on cli.py (and on what it imports): rebuild it when that changes.
    app.connect("env-get-outdated", _cli_pages_outdated)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


def _cli_pages_outdated(
    app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]
) -> list[str]:
    return [doc for doc in env.found_docs if doc.endswith("reference/cli")]
