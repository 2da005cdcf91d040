"""Sphinx configuration of the multimix documentation (``make docs``).

The build is offline: no intersphinx, MathJax served from the site itself (sphinx-mathjax-offline copies
it into ``_static/mathjax``). ``make docs`` runs with ``-W --keep-going -n``: every warning, and every
cross-reference that does not resolve, fails the build. Names outside multimix (torch, numpy, the standard
library) cannot resolve without intersphinx and are listed in ``nitpick_ignore_regex`` below; multimix's
own names never are.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# The package is installed editable in the venv; the path also lets a plain checkout build.
sys.path.insert(0, str(HERE.parent / "src"))

project = "multimix"
author = "the multimix authors"
copyright = "the multimix authors"
from multimix import __version__ as release  # noqa: E402

version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
    # The module's name has hyphens: Sphinx imports it by name with importlib, which accepts them.
    # It sets mathjax_path to the bundled MathJax 3 and copies it into _static/mathjax after the build.
    "sphinx-mathjax-offline",
    # Ours, in docs/_ext:
    "multimix_cli",  # the {multimix-cli} directive: the CLI reference, walked from build_parser()
    "multimix_refs",  # resolves references to re-exported names (multimix.MultiMix, ...)
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- MyST ------------------------------------------------------------------------------------------
# dollarmath: $...$ and $$...$$ (the concept pages use both); amsmath: \begin{align} ... blocks.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
# Headings get anchors down to level 3, so pages can link to [a section](page.md#anchor).
myst_heading_anchors = 3

# -- autodoc / napoleon ----------------------------------------------------------------------------
# Members are the module's __all__ (ignore-module-all stays unset: giving it any value, even False, would
# set it); packages that re-export add :imported-members: on their directive.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True
python_use_unqualified_type_names = True
add_module_names = False
python_maximum_signature_line_length = 88

# -- cross-references ------------------------------------------------------------------------------
nitpicky = True
# Only names OUTSIDE multimix: without intersphinx (the build is offline) they have no target.
nitpick_ignore_regex = [
    # torch and numpy types in signatures and docstrings (Tensor, nn.Module, Generator, dtype, ndarray).
    ("py:.*", r"(torch|numpy|np|nn|optim)(\..*)?"),
    ("py:.*", r"(Tensor|Module|Generator|Parameter|Optimizer|ndarray|dtype|device|Size)"),
    # The standard library and typing (Path, Sequence, Callable, Iterator, Literal, ...).
    (
        "py:.*",
        r"(pathlib|typing|collections|os|argparse|logging|dataclasses|abc|types|concurrent)(\..*)?",
    ),
    (
        "py:.*",
        r"(Path|Any|Callable|Sequence|Mapping|Iterable|Iterator|Generator|Literal|TypeAlias|Self|NamedTuple|Protocol|Enum|IO|TextIO)",
    ),
    # Builtins: the Python domain links them only through intersphinx.
    (
        "py:.*",
        r"(int|float|str|bool|bytes|dict|list|tuple|set|frozenset|object|type|None|callable|slice|range)",
    ),
    # Built-in exceptions and warnings, by name (multimix's own errors are not matched: they must resolve).
    (
        "py:.*",
        r"(Exception|BaseException|ValueError|RuntimeError|TypeError|OSError|KeyError|IndexError|"
        r"FileNotFoundError|FileExistsError|NotImplementedError|AssertionError|KeyboardInterrupt|"
        r"TimeoutError|PermissionError|ArithmeticError|DeprecationWarning|UserWarning|Warning)",
    ),
    # Third-party libraries the data and evaluation layers use.
    ("py:.*", r"(matplotlib|sklearn|yaml|tqdm|transformers|tensorboard)(\..*)?"),
]

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"multimix {release}"
html_static_path = ["_static"]
html_css_files = ["multimix.css"]
html_theme_options = {
    "navigation_with_keys": True,
    "top_of_page_buttons": [],
}
html_show_sourcelink = False
html_copy_source = False
# copybutton: strip prompts ($, >>>) and the lines they do not start (output) from what is copied.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
