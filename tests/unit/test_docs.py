"""The README stays a user's guide (at most 15 KB) and its links into docs/ and the repo resolve."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_readme_is_at_most_15_kb():
    assert len((REPO / "README.md").read_bytes()) <= 15_000


def test_every_relative_link_in_the_readme_and_docs_resolves():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which does not exist"
