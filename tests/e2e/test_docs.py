"""The README is a front door to the docs/ pages, and measured numbers live in results/."""

from __future__ import annotations

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
RESULTS = REPO / "results"
MAX_README_LINES = 250

_LINK = re.compile(r"\]\(([^)\s]+)\)")
# An AUROC-like measurement: 2-3 digits, a point, decimals (94.8, 92.81). Parameters in the
# prose (0.5, 1e-6, 256) are not measurements.
_MEASURED = re.compile(r"(?<![\w.])\d{2,3}\.\d+(?![\w.])")


def _pages() -> list[pathlib.Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _links(page: pathlib.Path) -> list[str]:
    return [m.group(1) for m in _LINK.finditer(page.read_text())]


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, len(lines)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (REPO / link.split("#")[0]).resolve()
        for link in _links(README)
        if not link.startswith(("http:", "https:"))
    }
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages not linked from README.md: {orphans}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for link in _links(page):
        if link.startswith(("http:", "https:", "mailto:", "#")):
            continue
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.exists():
            broken.append(link)
    assert not broken, f"{page.name}: broken links {broken}"


def test_measured_numbers_in_the_docs_come_from_results():
    published = "\n".join(p.read_text(errors="replace") for p in RESULTS.rglob("*") if p.is_file())
    missing = {
        f"{page.relative_to(REPO)}: {number}"
        for page in _pages()
        for number in _MEASURED.findall(page.read_text())
        if number not in published
    }
    assert not missing, sorted(missing)
