"""MkDocs hooks of the documentation site (`make docs`, `mkdocs.yml`).

- The front page is README.md (outside `docs/`), added as `index.md` with its
  links rewritten for the site: `docs/x.md` -> `x.md`; a link to a file of
  the repository that is not a page (`examples/quickstart.py`) keeps its
  text and loses the link.
- In the guides, a link to `../README.md` points at that front page.
- One API page per public module: `kd.Distiller` and every module of
  `keras_distill.__all__` plus `kd.terms` (`api_pages()`), each rendered by
  mkdocstrings from the docstrings.
- The nav: the front page, the guides (every `docs/*.md`, titled by its first
  heading) and the API pages, so a new guide or public module needs no edit.
"""

import ast
import os
import re

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.abspath(__file__))
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def public_modules():
    """The public modules of `keras_distill`, read from its `__init__.py`.

    Returns:
        The sorted names of `keras_distill.__all__`'s modules (the lazy ones
        of `_LAZY_MODULES`) and `terms`.
    """
    with open(os.path.join(ROOT, "keras_distill", "__init__.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "_LAZY_MODULES" for t in node.targets
        ):
            return sorted({*ast.literal_eval(node.value), "terms"})
    raise RuntimeError("keras_distill/__init__.py has no _LAZY_MODULES")


def api_pages():
    """The API pages: `{path in the site: (title, markdown)}`."""
    pages = {
        "api/Distiller.md": (
            "kd.Distiller",
            "# kd.Distiller\n\n::: keras_distill.distiller.Distiller\n",
        )
    }
    for name in public_modules():
        text = (
            f"# kd.{name}\n\n::: keras_distill.{name}\n"
            "    options:\n      show_root_heading: false\n"
        )
        # A package's modules follow it, each under its own heading.
        for sub in _submodules(name):
            text += f"\n::: keras_distill.{name}.{sub}\n"
        pages[f"api/{name}.md"] = (f"kd.{name}", text)
    return pages


def _submodules(name):
    folder = os.path.join(ROOT, "keras_distill", name)
    if not os.path.isdir(folder):
        return []
    return sorted(
        f[:-3]
        for f in os.listdir(folder)
        if f.endswith(".py") and not f.startswith("_")
    )


def front_page(text):
    """README.md's text with its links rewritten for the site's `index.md`."""

    def link(match):
        bang, label, target = match.groups()
        if re.match(r"[a-z]+:|#", target):
            return match.group(0)
        if target.startswith("docs/"):
            return f"{bang}[{label}]({target[len('docs/') :]})"
        return label  # a file of the repository, not a page of the site

    return _LINK.sub(link, text)


def _title(path):
    with open(path) as f:
        for line in f:
            if line.startswith("# "):
                return line[2:].strip().replace("`", "")
    return os.path.basename(path)


def on_config(config):
    guides = sorted(
        name
        for name in os.listdir(config["docs_dir"])
        if name.endswith(".md") and name != "index.md"
    )
    config["nav"] = [
        {"Home": "index.md"},
        {"Guides": [{_title(os.path.join(config["docs_dir"], g)): g} for g in guides]},
        {"API reference": [{t: p} for p, (t, _) in api_pages().items()]},
    ]
    return config


def on_files(files, config):
    with open(os.path.join(ROOT, "README.md")) as f:
        files.append(File.generated(config, "index.md", content=front_page(f.read())))
    for path, (_, text) in api_pages().items():
        files.append(File.generated(config, path, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "index.md":
        return markdown
    return markdown.replace("](../README.md", "](index.md")
