"""The documentation site builds with warnings as errors (`make docs`)."""

import pathlib
import subprocess
import sys

from tests.helpers import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _hooks():
    return load_file("mkdocs_hooks.py")


def _build(config, site):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(config),
            "-d",
            str(site),
        ],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_site_builds_strictly_with_every_guide_and_api_page(tmp_path):
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    site = tmp_path / "site"
    assert "Two commands" in (site / "index.html").read_text()  # README, the front page
    for guide in (ROOT / "docs").glob("*.md"):
        assert (site / guide.stem / "index.html").is_file(), guide.name
    distiller = (site / "api" / "Distiller" / "index.html").read_text()
    assert "compute_loss_report" in distiller or "training_state" in distiller
    # One page per public module, each rendering at least one documented name.
    for name in _hooks().public_modules():
        page = (site / "api" / name / "index.html").read_text()
        assert 'class="doc doc-' in page, name


def test_every_public_module_has_an_api_page():
    import keras_distill as kd

    modules = {n for n in kd.__all__ if n in kd._LAZY_MODULES}
    assert set(_hooks().public_modules()) == modules | {"terms"}


def test_the_front_page_links_point_into_the_site():
    text = (
        "[guide](docs/terms.md#in-a-config) ![plot](docs/quality_table.png) "
        "[example](examples/quickstart.py) [anchor](#two-commands) [web](https://x.org/a)"
    )
    assert _hooks().front_page(text) == (
        "[guide](terms.md#in-a-config) ![plot](quality_table.png) "
        "example [anchor](#two-commands) [web](https://x.org/a)"
    )


def test_a_broken_docstring_cross_reference_fails_the_build(tmp_path):
    # mkdocs.yml's plugin set-up, on a module whose docstring refers to a name
    # that does not exist: strict mode must refuse it.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# API\n\n::: sample\n")
    (tmp_path / "sample.py").write_text(
        'def good():\n    """Like [bad][sample.no_such_function]."""\n'
    )
    config = (ROOT / "mkdocs.yml").read_text()
    config = config.replace("hooks:\n  - mkdocs_hooks.py\n", "")
    (tmp_path / "mkdocs.yml").write_text(config)
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "sample.no_such_function" in result.stderr
    # The same page with the reference fixed builds.
    (tmp_path / "sample.py").write_text(
        'def good():\n    """Like [this][sample.good]."""\n'
    )
    assert _build(tmp_path / "mkdocs.yml", tmp_path / "site").returncode == 0
