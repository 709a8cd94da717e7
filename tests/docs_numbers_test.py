"""Docs pages quote measured numbers only where a benchmark writes them.

See `benchmarks/docblocks.py`: a measured number sits in a
`<!-- benchmark:NAME -->` block that the benchmark measuring it rewrites
(`--docs`), in a `<!-- cited -->` block with a link to its source, or in a
`<!-- tested:tests/x_test.py -->` block whose numbers that test asserts;
anywhere else a docs page links to the README's generated tables instead.
"""

import ast
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import docblocks  # noqa: E402

PAGES = sorted((ROOT / "docs").glob("*.md"))


def _writers():
    """`{block name: benchmark file}`: the names each benchmark writes.

    A name is the literal second argument of a `docblocks.rewrite(...)` or
    `docblocks.report(...)` call, or a value of the benchmark's module-level
    `DOC_BLOCKS` dict.
    """
    found = {}
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in (
                "rewrite",
                "report",
            ):
                if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                    names = [node.args[1].value]
            elif (
                isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "DOC_BLOCKS" for t in node.targets)
                and isinstance(node.value, ast.Dict)
            ):
                names = [
                    v.value for v in node.value.values if isinstance(v, ast.Constant)
                ]
            found.update(dict.fromkeys(names, path.name))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_measured_number_outside_a_block(page):
    found = docblocks.measured_numbers(page.read_text())
    lines = page.read_text().split("\n")
    where = "\n".join(
        f"  line {n}: {number!r} in {lines[n - 1].strip()[:90]!r}"
        for n, number in found
    )
    assert not found, (
        f"{page.name} quotes measured numbers outside a benchmark block; put them in the "
        f"block its benchmark writes, link to the README's table, or remove them:\n{where}"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_is_written_by_a_benchmark(page):
    writers = _writers()
    text = page.read_text()
    code_free = re.sub(r"`[^`\n]*`", "", docblocks.without_code(text))
    for name, _ in docblocks.blocks(text):
        assert name in writers, f"{page.name}: no benchmark writes block {name!r}"
        # The benchmark names the page it writes.
        assert f"docs/{page.name}" in (ROOT / "benchmarks" / writers[name]).read_text()
    assert code_free.count("<!-- benchmark:") == len(docblocks.blocks(text)), (
        "an unclosed block"
    )
    for block in docblocks.cited_blocks(text):
        assert re.search(r"https?://", block), (
            f"{page.name}: a cited block without a link"
        )
    assert code_free.count("<!-- cited -->") == len(docblocks.cited_blocks(text))
    assert code_free.count("<!-- tested:") == len(docblocks.tested_blocks(text))
    for test_file, block in docblocks.tested_blocks(text):
        source = (ROOT / test_file).read_text()
        for number in re.findall(r"\d+\.\d+", block):
            assert number in source, (
                f"{page.name}: {test_file} does not assert {number}"
            )


def test_the_scanner_finds_measured_numbers_and_spares_the_rest():
    page = (
        "The search took 1.129x the bound, 2,973 trials per hour, 761 MiB, 51 s, 0.9593.\n"
        "TensorFlow 2.21 and Keras 3.15.1; `tol=1e-4` and `alpha=0.25`; 3 seeds; T = 4.\n"
        "```\n0.938 in a code block\n```\n"
        "<!-- benchmark:memory -->\n| curriculum | 675 | 727 | 1.077 |\n<!-- /benchmark -->\n"
        "<!-- cited -->\n73.33 (https://arxiv.org/abs/1503.02531)\n<!-- /cited -->\n"
    )
    assert [n for _, n in docblocks.measured_numbers(page)] == [
        "1.129x",
        "2,973 trials per hour",
        "761 MiB",
        "51 s",
        "0.9593",
    ]
    assert docblocks.blocks(page) == [
        ("memory", "| curriculum | 675 | 727 | 1.077 |\n")
    ]


def test_rewrite_replaces_only_its_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "before\n<!-- benchmark:a -->\nold\n<!-- /benchmark -->\nmiddle\n"
        "<!-- benchmark:b -->\nkept\n<!-- /benchmark -->\n"
    )
    docblocks.rewrite(page, "a", "| new | 1.000 |")
    assert page.read_text() == (
        "before\n<!-- benchmark:a -->\n| new | 1.000 |\n<!-- /benchmark -->\nmiddle\n"
        "<!-- benchmark:b -->\nkept\n<!-- /benchmark -->\n"
    )
    with pytest.raises(ValueError, match="no `<!-- benchmark:c -->`"):
        docblocks.rewrite(page, "c", "x")


def test_report_prints_and_writes_its_block_only_with_docs(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "p.md"
    page.write_text("<!-- benchmark:b -->\nold\n<!-- /benchmark -->\n")
    monkeypatch.setattr(docblocks, "ROOT", str(tmp_path))
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bench.py"), "--docs"])
    with docblocks.report("docs/p.md", "b"):
        print("| ratio | 1.077 |")
    assert "| ratio | 1.077 |" in capsys.readouterr().out
    assert sys.argv == [str(tmp_path / "bench.py")]  # the benchmark never sees --docs
    text = page.read_text()
    assert docblocks.blocks(text)[0][1].endswith("| ratio | 1.077 |\n")
    assert "Written by `bench.py --docs`" in text
    # Without --docs, or when the benchmark fails, the page is left alone.
    with docblocks.report("docs/p.md", "b"):
        print("| ratio | 9.999 |")
    with (
        pytest.raises(RuntimeError),
        docblocks.report("docs/p.md", "b", argv=["--docs"]),
    ):
        raise RuntimeError("failed")
    assert page.read_text() == text
