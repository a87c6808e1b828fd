"""The documentation a clone carries is whole: nothing sends a reader to files outside the
repository, and every relative link in the README and under docs/ (anchors included) resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = ("METHOD" + ".md", "shared" + "/docs")
PENDING: set[str] = set()  # pages another branch of a change adds: a link to them may dangle until it merges
SKIP_DIRS = {".git", ".venv", ".dvc", "cache", "data", "reports", "runs", "__pycache__", ".pytest_cache"}

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def repo_files() -> list[Path]:
    """Files git would commit (tracked, or untracked and not ignored); a plain walk without git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
        return [REPO / p for p in sorted(set(out.decode().split("\0"))) if p and (REPO / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        found = []
        for root, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
            found += [Path(root) / f for f in files]
        return found


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        rel = dest.relative_to(REPO).as_posix() if dest.is_relative_to(REPO) else str(dest)
        if rel in PENDING and not dest.exists():
            continue
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading '#{anchor}' in {rel}")
    return problems


def test_no_file_sends_a_reader_outside_the_repository():
    offenders = []
    for path in repo_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if any(word in line for word in OUTSIDE):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:80]}")
    assert not offenders, "references to files a clone does not have:\n" + "\n".join(offenders)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(path):
    assert not broken_links(path), "\n".join(broken_links(path))


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "target.md").write_text("# Title\n\n## A `code` heading (with α)\n\n## Title\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](target.md#a-code-heading-with-α) [dup](target.md#title-1) [web](https://x.org/a.md)\n"
                    "[gone](missing.md) [bad anchor](target.md#nope) `[in code](missing2.md)`\n"
                    "```\n[in a fence](missing3.md)\n```\n")
    assert broken_links(page) == ["missing.md: no such file", "target.md#nope: no heading '#nope' in target.md"]


def test_method_page_holds_every_registered_method():
    from pipeline.config import METHODS

    text = (REPO / "docs" / "method.md").read_text(encoding="utf-8")
    missing = [m for kind in METHODS.values() for m in kind if f"**{m}**" not in text]
    assert not missing, f"docs/method.md does not define: {missing}"
