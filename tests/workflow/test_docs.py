"""README.md and docs/: every relative link resolves, every command in a code block names what exists, and
every pointer to a documented section (``docs/usage.md: "Reruns"``) in the code and configs finds it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```")


def _prose_and_code(path: Path) -> tuple[list[str], list[str]]:
    """A Markdown file's prose lines and code lines (fenced, or indented by four spaces after a blank line)."""
    prose, code, fenced, indented, previous = [], [], False, False, ""
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        listed = re.match(r"\s*([-|*]|\d+\.)", line)  # a list item's continuation is prose
        indented = line.startswith("    ") and (indented or not previous.strip()) and not listed
        (code if fenced or indented else prose).append(line)
        previous = line
    return prose, code


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = _prose_and_code(path)
    return {slug(m.group(2)) for line in prose if (m := re.match(r"^(#+) (.+)$", line))}


def test_the_readme_is_a_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 220


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    prose, _ = _prose_and_code(doc)
    broken = []
    for target in (m.group(1) for line in prose for m in LINK.finditer(line)):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert broken == []


def _subcommands() -> set[str]:
    from hkd.cli import build_parser

    parser = build_parser()
    return set(next(a for a in parser._actions if a.dest == "command").choices)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_names_what_exists(doc):
    """``hkd X`` names a subcommand; a config, profile, script or workflow file named in a command exists."""
    _, code = _prose_and_code(doc)
    commands, missing = _subcommands(), []
    for line in code:
        for sub in re.findall(r"(?:^|[\s;&|(])hkd ([a-z][a-z-]*)", line):
            if sub not in commands:
                missing.append(f"hkd {sub}")
        named = r"(?:--configfile|--profile|--workflow-profile|python3?|bash)\s+([\w./-]+\.\w+|workflow/profiles/\w+)"
        for path in re.findall(named, line):
            if not (REPO / path).exists():
                missing.append(path)
    assert missing == [], f"{doc.name}: {missing}"


POINTER = re.compile(r'(README|docs/[\w-]+\.md|\b[\w-]+\.md): "([^"]+)"')


def test_every_pointer_to_a_section_finds_it():
    """``docs/methods.md: "Default weights"`` in a module or config names a heading of that file."""
    files = [p for p in (*REPO.joinpath("hkd").rglob("*.py"), *REPO.joinpath("workflow").rglob("*.yaml"),
                         REPO / "config.yaml", *DOCS, *REPO.joinpath("benchmarks").glob("*.py"))]
    lost, found = [], 0
    for path in files:
        text = re.sub(r"\n\s*(#\s*)?", " ", path.read_text())  # a pointer may run over a comment's lines
        for where, title in POINTER.findall(text):
            target = REPO / "README.md" if where == "README" else \
                (REPO / where if where.startswith("docs/") else path.parent / where)
            if not target.exists() or target.suffix != ".md":
                continue
            found += 1
            headings = [h for line in _prose_and_code(target)[0] if (h := re.match(r"^#+ (.+)$", line))]
            if not any(h.group(1).startswith(title) for h in headings):
                lost.append(f"{path.relative_to(REPO)}: {where}: \"{title}\"")
    assert lost == [] and found >= 10
