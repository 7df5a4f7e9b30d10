"""``experiments/build_results.py``: fragments in a fixed order, missing ones noted."""

from __future__ import annotations


def test_order_missing_and_headings(tmp_path, run_script):
    results = tmp_path / "results"
    results.mkdir()
    (results / "meta_learning.md").write_text("# Meta\n\n```\n# not a heading\n```\n## Sub\n")
    (results / "hnn_paper.md").write_text("## Experiment 1: HNN\n\n| a | b |\n|---|---|\n")
    (results / "data_efficiency.md").write_text("## Experiment 3: data\n\ntext 3\n")
    out = tmp_path / "RESULTS.md"
    proc = run_script("build_results", "--results", results, "--out", out, timeout=60)
    assert "not yet run: hogn_paper" in proc.stdout
    text = out.read_text()
    assert text.startswith("# Results")
    order = [text.index(s) for s in ("## Experiment 1: HNN", "## Experiment 2: HOGN paper",
                                     "## Experiment 3: data", "## Meta")]
    assert order == sorted(order)
    assert "Not yet run: `python experiments/hogn_paper.py`" in text
    assert "- Experiment 2: HOGN paper — DeltaGN, OGN, HOGN (not yet run)" in text
    # a fragment's top-level heading is demoted below the page title; code stays as is
    assert "\n## Meta\n" in text and "\n### Sub\n" in text and "\n# not a heading\n" in text
    assert [line for line in text.splitlines() if line.startswith("# ")] == [
        "# Results: reproducing the papers", "# not a heading"]
    assert not (tmp_path / "RESULTS.md.tmp").exists()


def test_build_without_fragments(tmp_path, load_script):
    text = load_script("build_results").build(tmp_path)
    assert text.count("Not yet run") == len(load_script("build_results").EXPERIMENTS) == 8
