"""Resolve references to multimix objects by identity, not by spelling.

autodoc documents a re-exported object once, under the package that exports it
(``multimix.mixers.MultiMix``), while type annotations and prose name it where it is defined
(``multimix.mixers.multimix.MultiMix``) or where it is re-exported again (``multimix.MultiMix``).
For a ``py`` reference to a ``multimix.…`` name that found no target, this imports the object the name
denotes and, if that very object is documented under another name, links there. A name that denotes
nothing documented still fails the build (``-n -W``): a broken reference to our own code is an error.
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.nodes import make_refnode

_MISSING = object()


def _lookup(name: str) -> Any:
    """The object ``name`` (dotted, starting with a module) denotes, or _MISSING."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj
    return _MISSING


def _documented(env: BuildEnvironment) -> dict[int, tuple[str, str, str]]:
    """id(object) → (documented name, docname, node id) for every documented multimix object."""
    cache: dict[int, tuple[str, str, str]] | None = getattr(env, "_multimix_documented", None)
    if cache is None:
        cache = {}
        for name, entry in env.get_domain("py").objects.items():  # type: ignore[attr-defined]
            if not name.startswith("multimix.") or entry.aliased:
                continue
            obj = _lookup(name)
            # Simple values (numbers, strings, None) share identities by accident: never link by them.
            if obj is _MISSING or obj is None or isinstance(obj, (bool, int, float, str, bytes)):
                continue
            cache.setdefault(id(obj), (name, entry.docname, entry.node_id))
        env._multimix_documented = cache  # type: ignore[attr-defined]
    return cache


def resolve(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.reference | None:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    candidates = [target]
    modname = node.get("py:module")
    if modname and not target.startswith("multimix"):
        candidates.append(f"{modname}.{target}")
    for name in candidates:
        if not name.startswith("multimix"):
            continue
        obj = _lookup(name)
        if obj is _MISSING:
            continue
        hit = _documented(env).get(id(obj))
        if hit is not None:
            documented, docname, node_id = hit
            return make_refnode(app.builder, node["refdoc"], docname, node_id, contnode, documented)
    return None


def _forget(app: Sphinx, env: BuildEnvironment, *args: Any) -> None:
    if hasattr(env, "_multimix_documented"):
        del env._multimix_documented


# -- re-exported constants ---------------------------------------------------------------------------
# A constant a package re-exports (``multimix.mixers.ATTENTIONS``) carries its ``#:`` doc comment in the
# module that defines it, where autodoc, reading the package's own source, does not look: it would call
# the constant undocumented and leave it out of the reference. These two handlers keep public
# constants in and give them the comment from where they are defined.


def _constant(name: str, obj: Any) -> bool:
    return name.isupper() and not callable(obj) and not isinstance(obj, type)


def _keep_constants(
    app: Sphinx, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    if what == "module" and skip and _constant(name, obj) and not name.startswith("_"):
        return False
    return None


def _defining_comment(name: str, obj: Any) -> list[str]:
    import sys

    from sphinx.pycode import ModuleAnalyzer

    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("multimix") or getattr(module, name, _MISSING) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # no source: nothing to read
            continue
        lines = docs.get(("", name))
        if lines:
            return list(lines)
    return []


def _constant_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    short = name.rsplit(".", 1)[-1]
    # A constant has no docstring of its own: what autodoc found is nothing, or its type's docstring.
    if (
        what == "data"
        and _constant(short, obj)
        and getattr(obj, "__doc__", None) in (None, type(obj).__doc__)
    ):
        comment = _defining_comment(short, obj)
        if comment:
            lines[:] = comment


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", resolve)
    app.connect("env-updated", _forget)
    app.connect("autodoc-skip-member", _keep_constants)
    # Before napoleon (priority 500), so that it sees the comment.
    app.connect("autodoc-process-docstring", _constant_docstring, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
