"""The README and docs/ hold together: every relative link and anchor leads somewhere, the README
stays short and shows the test command CI runs, and files that point at the docs name pages that exist.
What the docs' commands do is tested where they run: tests/test_demo.py (the tag demo and promote,
read from README.md and docs/lifecycle.md), tests/faults/test_secrets.py (docs/catalog.md's example),
tests/test_docs.py (docs/templates.md's check-template output)."""

import re
from pathlib import Path

from conftest import PROJECT

DOCS = [PROJECT / "README.md", PROJECT / "bench" / "RESULTS.md", *sorted((PROJECT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s): not checked offline
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(PROJECT)}: {target}: no such file")
            elif anchor and anchor not in anchors(dest):
                broken.append(f"{doc.relative_to(PROJECT)}: {target}: no heading with that anchor")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
    readme = (PROJECT / "README.md").read_text()
    unlinked = [p.name for p in (PROJECT / "docs").glob("*.md") if f"(docs/{p.name}" not in readme]
    assert unlinked == []
    assert "(bench/RESULTS.md)" in readme


def test_the_readme_is_short_and_shows_the_test_command_ci_runs():
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    ci = [line.strip() for line in (PROJECT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-2:] == ["bin/setup", "bin/test"]
    block = re.search(r"```bash\n(.*?)```", readme[readme.index("## The two commands"):], re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if not line.lstrip().startswith("#")]
    assert commands[:2] == ["bin/demo", "bin/test"]


def test_files_that_point_at_the_docs_name_pages_that_exist():
    pointers = {}
    for path in [*(PROJECT / "deploy").rglob("*.yaml"), PROJECT / "compliance" / "debian11-container.xml"]:
        pointers[path] = re.findall(r"docs/[\w.-]+\.md", path.read_text())
    assert any(pointers.values())
    missing = [f"{path.relative_to(PROJECT)}: {page}" for path, pages in pointers.items() for page in pages
               if not (PROJECT / page).exists()]
    assert missing == []
