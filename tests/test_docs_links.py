"""The documentation the code points at exists, and the documentation's own links resolve.

The source once cited a specification file that is not in the repository ("SPEC §N"); its content now
lives in ``docs/concepts/``, and docstrings point there. These tests keep it that way: no citation of
that document comes back, every ``docs/...md`` path named in ``src/`` exists, and every relative link
in ``docs/**/*.md`` reaches an existing file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOCS = ROOT / "docs"

#: "SPEC" as a word (a document's name, "SPEC §2"); ``cifar.SPECS`` is code and does not match.
SPEC_CITATION = re.compile(r"\bSPEC\b")
#: A docs path named in the source, e.g. ``docs/concepts/multimix.md``.
DOCS_PATH = re.compile(r"\bdocs/[\w./-]*?\.md\b")
#: Inline Markdown links and images, ``[text](target "title")``, and reference definitions, ``[id]: target``.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _source_lines() -> list[tuple[Path, int, str]]:
    return [
        (path, number, line)
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
    ]


def _doc_pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines of a Markdown page outside fenced code blocks, with inline code spans removed."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)
            elif marker.group(1).startswith(fence):
                fence = None
            continue
        if fence is None:
            lines.append((number, re.sub(r"(`+).*?\1", "", line)))
    return lines


def _links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        found += [(number, target) for target in INLINE_LINK.findall(line)]
        reference = REFERENCE_LINK.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def test_the_docs_folder_has_pages():
    assert (DOCS / "concepts" / "index.md").is_file()
    assert len(_doc_pages()) >= 7


def test_no_source_line_cites_the_missing_spec():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path, number, line in _source_lines()
        if SPEC_CITATION.search(line)
    ]
    assert not offenders, "cite docs/concepts/*.md instead of SPEC:\n" + "\n".join(offenders)


def test_every_docs_path_cited_in_the_source_exists():
    cited = [
        (path, number, match)
        for path, number, line in _source_lines()
        for match in DOCS_PATH.findall(line)
    ]
    assert cited, "the source is expected to point at docs/concepts/*.md"
    missing = [
        f"{path.relative_to(ROOT)}:{number}: {target}"
        for path, number, target in cited
        if not (ROOT / target).is_file()
    ]
    assert not missing, "cited documentation that does not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_relative_link_in_the_docs_resolves(page: Path):
    broken = []
    for number, target in _links(page):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not (page.parent / path).exists():
            broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_page_has_one_title(page: Path):
    titles = [
        line
        for _, line in _prose_lines(page.read_text(encoding="utf-8"))
        if re.match(r"^# \S", line)
    ]
    assert len(titles) == 1, f"{page.relative_to(ROOT)} has {len(titles)} H1 titles: {titles}"


def test_the_concepts_index_lists_every_page():
    folder = DOCS / "concepts"
    listed = {target.split("#", 1)[0] for _, target in _links(folder / "index.md")}
    unlisted = [
        p.name for p in sorted(folder.glob("*.md")) if p.name != "index.md" and p.name not in listed
    ]
    assert not unlisted, f"docs/concepts/index.md does not list: {unlisted}"


def test_the_link_checker_sees_links_and_skips_code():
    """The checker itself: inline and reference links are found, code blocks and code spans are not links."""
    text = "\n".join(
        [
            "# Title",
            'See [a](a.md) and ![b](img/b.png "B") and [ext](https://example.org) and `[c](c.md)`.',
            "[ref]: ../d.md",
            "```python",
            "x = [e](e.md)",
            "```",
        ]
    )
    targets = [
        target for number, line in _prose_lines(text) for target in INLINE_LINK.findall(line)
    ]
    references = [
        REFERENCE_LINK.match(line).group(1)
        for _, line in _prose_lines(text)
        if REFERENCE_LINK.match(line)
    ]
    assert targets == ["a.md", "img/b.png", "https://example.org"]
    assert references == ["../d.md"]
    assert SPEC_CITATION.search("see SPEC §2") and SPEC_CITATION.search("(SPEC)")
    assert not SPEC_CITATION.search("cifar.SPECS[name]")
