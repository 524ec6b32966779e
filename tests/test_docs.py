"""Every Python snippet of the documentation site runs, and the site's sources stay whole.

This file proves:
- every ```python block of a page in docs/ (MyST Markdown) runs as a script, from the
  repository root, in a fresh interpreter (so a snippet cannot lean on another's state);
- every file a page includes (``{include}``, ``{literalinclude}``) or shows (``![..](..)``)
  exists, so moving an example or a results table is caught here, before the docs build;
- the tutorials (examples/gallery/plot_*.py) have the title docstring sphinx-gallery needs.

The build itself (``sphinx-build -W``, which also executes the tutorials) runs in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))  # hand-written pages; _generated/ and _build/ are outputs
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, block in enumerate(FENCE.findall(page.read_text()), start=1):
            found.append((f"{page.name}#{number}", block))
    return found


def test_the_docs_have_pages_and_snippets():
    assert (DOCS / "conf.py").is_file()
    assert {"index.md", "getting_started.md", "configuration.md"} <= {p.name for p in PAGES}
    assert snippets(), "no ```python block found in docs/*.md"


@pytest.mark.parametrize("name, code", snippets(), ids=[name for name, _ in snippets()])
def test_docs_python_snippet_runs(name, code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{name} failed:\n{code}\n{done.stderr[-2000:]}"


def test_docs_included_files_exist():
    include = re.compile(r"^```\{(?:literal)?include\}\s+(\S+)", re.M)
    image = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
    missing = []
    for page in PAGES:
        text = page.read_text()
        for target in include.findall(text) + image.findall(text):
            if target.startswith("_generated/"):  # written by docs/conf.py at build time
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.name}: {target}")
    assert not missing, missing


def test_tutorials_have_a_title_docstring():
    scripts = sorted((REPO / "examples" / "gallery").glob("plot_*.py"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        match = re.match(r'"""\n(.+)\n(=+)\n', text)
        assert match and len(match.group(2)) >= len(match.group(1)), script.name
