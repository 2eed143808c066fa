"""The docs stand on their own: every relative link in README.md and docs/ names a file
inside the repository (none points outside it, as ../shared/DESIGN.md once did)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LINK = re.compile(r"\]\(([^)\s]+)\)")
MENTION = re.compile(r"`(\.\./[^`]+)`")


def test_relative_links_resolve_inside_the_repository() -> None:
    broken = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for target in LINK.findall(text) + MENTION.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert broken == []
