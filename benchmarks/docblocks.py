"""Measured numbers in docs pages: blocks that the benchmarks write.

A docs page (`docs/*.md`) quotes a measured number only inside a block that
the benchmark measuring it rewrites on every run:

    <!-- benchmark:NAME -->
    ...the benchmark's output...
    <!-- /benchmark -->

`rewrite(path, NAME, text)` replaces a block's contents; a benchmark's
entry point runs inside `report(page, NAME)`, which prints as before and, when
the command line has `--docs`, also writes what was printed into the block.
A number quoted from a paper or another project sits in a
`<!-- cited -->...<!-- /cited -->` block, which links to its source; a
computed value that a test asserts, in a `<!-- tested:tests/x_test.py -->
...<!-- /tested -->` block (each of its decimals appears in that file).
Everywhere else, `measured_numbers(text)` finds the numbers that look
measured (a decimal with two or more digits, or a number with a unit of time,
memory, a percentage or an `x` ratio), and `tests/docs_numbers_test.py` fails
on any: such a number is written by its benchmark, or linked to where one
is (the README's generated tables), or removed. Inline code (`tol=1e-4`) and
code blocks are not prose and are not scanned; neither are version numbers
(`TensorFlow 2.21`, `3.15.1`).

This module imports nothing from the library, so a test or a benchmark
imports it without TensorFlow.
"""

import contextlib
import io
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BEGIN = "<!-- benchmark:{name} -->"
END = "<!-- /benchmark -->"
BLOCK = re.compile(r"<!-- benchmark:([\w-]+) -->\n(.*?)<!-- /benchmark -->", re.S)
CITED = re.compile(r"<!-- cited -->\n(.*?)<!-- /cited -->", re.S)
TESTED = re.compile(r"<!-- tested:([\w/.-]+) -->(.*?)<!-- /tested -->", re.S)
_FENCE = re.compile(r"```.*?```", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK_TARGET = re.compile(r"\]\([^)\s]*\)|https?://\S+")
_VERSION = re.compile(
    r"\b\d+\.\d+\.\d+\b|arXiv:\d+\.\d+"
    r"|\b(?:TensorFlow|TF|Keras|keras-tuner|Python|Keras Tuner|Keras Hub|KerasHub)"
    r"\s+\d+\.\d+\+?"
)
MEASURED = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?"
    r"(?:ms|s|MiB|GiB|KiB|MB|KB|GB|x|trials per hour|minutes|seconds|hours)"
    r"(?![\w])"
    r"|(?<![\w.])\d+\.\d+\s?%"
    r"|(?<![\w.])\d+\.\d{2,}(?!\w|\.\d)"
)


def without_code(text):
    """The page with its fenced code blocks blanked (lines kept)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def blocks(text):
    """The benchmark blocks of a page.

    Args:
        text: A Markdown page.

    Returns:
        A list of `(name, contents)` pairs, in the page's order.
    """
    return BLOCK.findall(without_code(text))


def cited_blocks(text):
    """The contents of the page's `<!-- cited -->` blocks, in order."""
    return CITED.findall(without_code(text))


def tested_blocks(text):
    """The page's `<!-- tested:FILE -->` blocks, as `(FILE, contents)` pairs."""
    return TESTED.findall(without_code(text))


def rewrite(path, name, contents):
    """Replaces the contents of the block `name` of the file `path`.

    Args:
        path: The Markdown file (a docs page).
        name: The block's name, as in `<!-- benchmark:NAME -->`.
        contents: The new contents (a trailing newline is added if missing).

    Raises:
        ValueError: if the file has no block of that name.
    """
    with open(path) as f:
        text = f.read()
    begin = BEGIN.format(name=name)
    start = text.find(begin + "\n")
    end = text.find(END, start)
    if start < 0 or end < 0:
        raise ValueError(f"{path} has no `{begin}` ... `{END}` block")
    if not contents.endswith("\n"):
        contents += "\n"
    start += len(begin) + 1
    with open(path, "w") as f:
        f.write(text[:start] + contents + text[end:])


def prose(text):
    """The page without its blocks, code and link targets (lines kept)."""

    def blank(match):
        return "\n" * match.group(0).count("\n")

    for pattern in (BLOCK, CITED, TESTED, _FENCE):
        text = pattern.sub(blank, text)
    for pattern in (_INLINE_CODE, _LINK_TARGET, _VERSION):
        text = pattern.sub("", text)
    return text


def measured_numbers(text):
    """The numbers of a page's prose that look measured.

    Args:
        text: A Markdown page.

    Returns:
        A list of `(line number, number as written)` pairs.
    """
    found = []
    for number, line in enumerate(prose(text).split("\n"), 1):
        found.extend((number, m.group(0)) for m in MEASURED.finditer(line))
    return found


class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text):
        self.buffer.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


@contextlib.contextmanager
def report(page, name, argv=None):
    """Prints as usual and, with `--docs`, writes the output into a docs block.

    Example:

    ```python
    if __name__ == "__main__":
        with docblocks.report("docs/performance.md", "step-cost"):
            main()
    ```

    Args:
        page: The docs page, relative to the repository's root.
        name: The block's name in that page.
        argv: The command line; defaults to `sys.argv[1:]`. The block is
            written only if it holds `--docs` (which is removed from
            `sys.argv`, so the benchmark's own parsing never sees it), and
            only if the benchmark finishes without an error.
    """
    argv = sys.argv[1:] if argv is None else argv
    write = "--docs" in argv
    if write and "--docs" in sys.argv:
        sys.argv.remove("--docs")
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    if write:
        script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
        header = f"Written by `{script} --docs` on {time.strftime('%Y-%m-%d')}:\n\n"
        rewrite(os.path.join(ROOT, page), name, header + tee.buffer.getvalue())
        print(f"rewrote the block {name!r} of {page}")
