"""The examples in ``docs/*.md`` run: every ```python block of a file, in order, in one
namespace, so documentation that no longer matches the code fails here.

Each file runs in a fresh interpreter (its examples register systems, models and
integrators, which must not leak into the registries other tests check) with a
temporary working directory (the files they write land there) and one intra-op
thread. Blocks that must not run use another fence (```text, ```console). A failing
example's traceback names the Markdown file and line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

# Runs the blocks with their own line numbers: each is compiled padded with newlines
# to the line where it starts in the Markdown file, so tracebacks point there.
RUNNER = """
import json, sys
import torch
torch.set_num_threads(1)
path, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    exec(compile("\\n" * (line - 1) + code, path, "exec"), namespace)
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(first line, code)`` of every ```python block, in order (lines from 1)."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```text\nnot run\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x\n")]


def test_docs_index_lists_every_page():
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    index = (DOCS / "README.md").read_text()
    assert pages and all(f"({name})" in index for name in pages)


def test_links_stay_inside_the_repository():
    """Docs never point outside the repository: every link is a relative path to a
    file that exists in it (papers are cited by title and authors)."""
    root = DOCS.parent
    for page in DOCS.glob("*.md"):
        for target in LINK.findall(page.read_text()):
            path = target.split("#")[0]
            if not path:
                continue  # an anchor on the same page
            resolved = (DOCS / path).resolve()
            assert "://" not in target and resolved.is_relative_to(root), (page.name, target)
            assert resolved.exists(), (page.name, target)


README = DOCS.parent / "README.md"
PAGES = {**{p.name: p for p in sorted(DOCS.glob("*.md")) if python_blocks(p.read_text())},
         "README.md": README}
"""Every page with Python examples: the docs and the README (its quick start too)."""

STATED = {"README.md": {
    0: "assert repr(data).startswith('Dataset(three-body, trajectories=256, points=100, "
       "particles=3')\n"
       "assert float(data.energy_drift().max()) < 1e-10\n"
       "assert set(data.meta['resampled']) == {'rejected_by_system', 'energy_drift'}\n"
       "assert q.shape == p.shape == (1001, state.q.shape[0], 2)\n",
    1: "import dataclasses\n"
       "still, floor = (r.summary()['rel_error'] for r in hogn.evaluation.references(\n"
       "    big, 'gauss4', energy=energy).values())\n"
       "error = result.summary()['rel_error']\n"
       "assert 0.002 < error < 0.02 and 0.6 < still < 0.8 and floor < 1e-4, (error, still, floor)\n"
       "q, p = result.q.float(), result.p.float()  # scored in the data's float64\n"
       "assert q.shape == (201, big.q.shape[1], 2) and bool(torch.isfinite(q).all())\n"
       "start = big.state(0).to(dtype=torch.float32)\n"
       "h0 = model.hamiltonian(start).detach()\n"
       "h1 = model.hamiltonian(dataclasses.replace(start, q=q[-1], p=p[-1])).detach()\n"
       "assert h0.shape == (4,) and bool(((h1 - h0).abs() <= 1e-3 * (h0.abs() + 1)).all()),"
       " (h0, h1)  # symplectic: the learned H is kept\n",
    2: "assert q.shape == (101, 1024, 2) and bool(torch.isfinite(q).all())\n"}}
"""What a page says its examples give, checked right after the block (by index)."""


@pytest.mark.parametrize("page", list(PAGES))
def test_examples_run(page, tmp_path):
    path = PAGES[page]
    blocks = python_blocks(path.read_text())
    stated = STATED.get(page, {})
    assert all(i < len(blocks) for i in stated), "a stated check names a missing block"
    blocks = [part for i, block in enumerate(blocks)
              for part in ([block, (1, stated[i])] if i in stated else [block])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(DOCS.parent),
                                                       os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", RUNNER],
                         input=json.dumps([str(path.relative_to(DOCS.parent)), blocks]),
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, f"{page} examples failed:\n{run.stdout}\n{run.stderr}"
