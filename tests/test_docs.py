"""The README and the docs site agree with the code: the family table lists every registered family, the README's
links reach docs pages, and the site builds with warnings as errors (`make docs` does the same in CI)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from genops.config.families import FAMILIES
from tests.conftest import PROJECT


def _table(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| family | what it is"))
    return [line for line in lines[start:] if line.startswith("|")][: len(FAMILIES) + 2]


def test_the_family_table_lists_every_family_once_and_readme_and_site_agree():
    table = _table(PROJECT / "README.md")
    assert table == _table(PROJECT / "docs" / "index.md")
    assert [re.match(r"\| `([a-z-]+)` \|", row).group(1) for row in table[2:]] == list(FAMILIES)


def test_readme_links_reach_docs_pages_and_every_page_is_in_the_site():
    links = re.findall(r"\]\((docs/[^)#]+)", (PROJECT / "README.md").read_text())
    assert len(links) >= 10
    missing = [link for link in links if not (PROJECT / link).is_file()]
    assert not missing, f"README links to missing pages: {missing}"
    nav = {next(iter(item.values())) for item in yaml.safe_load((PROJECT / "mkdocs.yml").read_text())["nav"]}
    pages = {p.name for p in (PROJECT / "docs").glob("*.md")}
    assert pages == nav, f"pages outside the site's nav: {pages - nav}; nav entries without a page: {nav - pages}"


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    proc = subprocess.run([str(Path(sys.executable).with_name("mkdocs")), "build", "--strict", "-q", "-d",
                           str(tmp_path / "site")], cwd=PROJECT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "architecture" / "index.html").is_file()
