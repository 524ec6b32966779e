"""Sphinx configuration of the pyrovae documentation site.

Build (offline, a minute or two on one core), warnings as errors::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

Generated at build time (git-ignored): ``docs/api/_autosummary/`` (the API reference stubs),
``docs/_generated/`` (the configuration reference and the component catalogue, written by this
file from the code), ``docs/tutorials/`` and ``docs/sg_execution_times.rst`` (sphinx-gallery's
output from ``examples/gallery/``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(DOCS / "sphinxext"))

# The gallery scripts run in this process: one BLAS thread keeps the build lean on shared cores
# (and the numbers the same from machine to machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "agg")

import torch  # noqa: E402

torch.set_num_threads(1)

import pyrovae  # noqa: E402

project = "pyrovae"
author = "the pyrovae developers"
copyright = "the pyrovae developers"  # noqa: A001
release = version = getattr(pyrovae, "__version__", "")

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "tutorials/*.ipynb", "**/*.py", "**/*.zip"]
templates_path = ["_templates"]

# MyST: ``{include}``/``{eval-rst}`` directives, ``$...$`` maths, and anchors for headings so
# ``[text](page.md#heading)`` links resolve.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# API reference: one page per module under api/_autosummary, whatever the package layout is.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

html_theme = "furo"
html_title = "pyrovae"
html_static_path: list[str] = []

# ---------------------------------------------------------------------------------------------
# Tutorials: examples/gallery/plot_*.py, executed at build time on scikit-learn's digits.


sphinx_gallery_conf = {
    "examples_dirs": [str(REPO / "examples" / "gallery")],
    "gallery_dirs": ["tutorials"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_modules": ("matplotlib", "pyrovae_gallery.reset_pyro"),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "show_memory": False,
    # Link names in the code to the module that defines them (``pyrovae.evaluate.Evaluation``),
    # where the API reference documents them, not to the top-level re-export.
    "prefer_full_module": {r"pyrovae"},
    "plot_gallery": "True",
}

# ---------------------------------------------------------------------------------------------
# Pages generated from the code: the configuration reference and the component catalogue.

GENERATED = DOCS / "_generated"


def _config_reference():
    """``config_reference()``, wherever the restructuring puts it."""
    for name in ("pyrovae.cli.config", "pyrovae.cli.config_reference", "pyrovae.reference"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        function = getattr(module, "config_reference", None)
        if callable(function):
            return function
    raise ImportError("no config_reference() in pyrovae.cli.config, config_docs or reference")


def _registry():
    """The module with ``builtin``, ``lookup`` and ``component_options``."""
    for name in ("pyrovae.registry", "pyrovae.components.registry", "pyrovae.components"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if all(hasattr(module, f) for f in ("builtin", "lookup", "component_options")):
            return module
    raise ImportError("no component registry (builtin, lookup, component_options) found")


CATALOGUE_KINDS = {
    "program": "Programs",
    "prior": "Priors",
    "guide": "Guides (variational families)",
    "likelihood": "Likelihoods",
    "network": "Networks",
    "estimator": "Estimators",
    "dataset": "Datasets",
}


def _default_text(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        return "required"
    default = list(param.default) if isinstance(param.default, tuple) else param.default
    if isinstance(default, str):
        return f'`"{default}"`'
    return f"`{default!r}`"


def _annotation_text(param: inspect.Parameter) -> str:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return f"`{text}`"


def _component_catalogue() -> str:
    registry = _registry()
    lines = [
        "<!-- Generated by docs/conf.py from the component registry: do not edit. -->",
        "",
    ]
    for kind, title in CATALOGUE_KINDS.items():
        names = registry.builtin(kind)
        if not names:
            continue
        lines += [f"## {title}", ""]
        lines += [f"`{kind}` components: {', '.join(f'`{n}`' for n in names)}.", ""]
        for name in names:
            factory = registry.lookup(kind, name)
            target = f"{factory.__module__}.{factory.__qualname__}"
            role = "py:class" if inspect.isclass(factory) else "py:func"
            lines += [f"### `{name}`", "", f"{{{role}}}`{target}`", ""]
            if kind == "dataset":
                lines += ["Options: the `data.*` keys of the configuration.", ""]
            else:
                options = registry.component_options(kind, name)
                if options:
                    lines += ["| option | type | default |", "|---|---|---|"]
                    for param in options.values():
                        row = (param.name, _annotation_text(param), _default_text(param))
                        lines.append("| `{}` | {} | {} |".format(*row).replace("|  |", "| |"))
                    lines.append("")
                else:
                    lines += ["No options.", ""]
            doc = inspect.getdoc(factory) or "(No docstring.)"
            # Docstrings are reStructuredText: render them as such inside the Markdown page.
            lines += ["```{eval-rst}", doc, "```", ""]
    return "\n".join(lines) + "\n"


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:  # keep Sphinx's incremental build honest
        path.write_text(text)


def _architecture() -> str:
    """ARCHITECTURE.md (repository root) for the design page, or a placeholder until it exists."""
    path = REPO / "ARCHITECTURE.md"
    if not path.is_file():
        return (
            "The one-page map of the packages, their layers and where new code goes will be "
            "`ARCHITECTURE.md` at the root of the repository; it is not written yet.\n"
        )
    text = re.sub(r"\A\s*# [^\n]*\n", "", path.read_text())  # the design page has the title

    def plain(match: re.Match) -> str:
        # Links relative to the repository root (to code) have no page in the site: keep the
        # text and show the path, so the page reads the same and no reference dangles.
        label, target = match.group(1), match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:|#", target):
            return match.group(0)
        shown = target.removeprefix("./")
        return label if shown in label else f"{label} (`{shown}`)"

    return re.sub(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)", plain, text)


def _escape_html(markdown: str) -> str:
    """``<`` and ``>`` outside code spans as entities: ``runs/<name>`` is text, not a tag."""
    parts = re.split(r"(`[^`]*`)", markdown)
    return "".join(
        part if part.startswith("`") else part.replace("<", "&lt;").replace(">", "&gt;")
        for part in parts
    )


def _remove_stale_api_stubs() -> None:
    """Drop API stubs of modules that no longer exist (a module moved or was renamed): an
    orphaned stub would be a page outside every toctree, a warning, so an error under -W."""
    import importlib.util

    for stub in (DOCS / "api" / "_autosummary").glob("*.rst"):
        try:
            found = importlib.util.find_spec(stub.stem) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            stub.unlink()


def _generate_pages() -> None:
    reference = _escape_html(_config_reference()())
    _write_if_changed(
        GENERATED / "config_reference.md",
        "<!-- Generated by docs/conf.py from config_reference(): do not edit. -->\n\n"
        + reference
        + "\n",
    )
    _write_if_changed(GENERATED / "components.md", _component_catalogue())
    _write_if_changed(GENERATED / "architecture.md", _architecture())
    _remove_stale_api_stubs()


_generate_pages()
