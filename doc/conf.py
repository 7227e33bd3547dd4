"""Sphinx configuration for skrecon's documentation.

Builds offline: no intersphinx, no remote images. MathJax is only referenced
from the generated HTML (the browser loads it); nothing is fetched at build
time. Build with::

    python -m sphinx -W --keep-going -b html doc doc/_build/html
"""

import os
import re
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

# Import skrecon from the working tree even when it is not installed.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import skrecon  # noqa: E402

# -- Project information -----------------------------------------------------

project = "skrecon"
author = "skrecon developers"
copyright = "skrecon developers"
version = skrecon.__version__
release = skrecon.__version__

# -- General configuration ---------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
language = "en"

nitpicky = False
default_role = "literal"

# autodoc / autosummary
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"

# numpydoc
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# math
math_number_all = False

# -- sphinx-gallery ----------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "image_scrapers": ("matplotlib",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "abort_on_example_error": True,
    # "Examples using X" mini-galleries on the API pages; local links only
    "doc_module": ("skrecon",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"skrecon": None},
}

# Matplotlib's Agg backend under sphinx-gallery: figures are not shown.
warnings.filterwarnings(
    "ignore",
    category=UserWarning,
    message="Matplotlib is currently using agg, which is a non-GUI backend",
)

# -- HTML output -------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skrecon {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {
    "index": [],
    "install": [],
    "changelog": [],
}
html_show_sourcelink = False


# -- Docstring pre-processing ------------------------------------------------

# numpydoc renders the type of a "name : type" line as reStructuredText, where
# a word ending in an underscore is a hyperlink reference: the shape
# "(batch_size_, n_inputs)" of a fitted attribute then fails the -W build
# with 'Unknown target name: "batch_size"'. Escape such trailing underscores
# in the type part of parameter/attribute lines before numpydoc parses them
# (this hook runs before numpydoc's, which has the default priority 500).
_FIELD_LINE = re.compile(r"^(?P<head>\s*[*\w][\w, *]*\s:\s)(?P<type>.*)$")
_TRAILING_UNDERSCORE = re.compile(r"\b(?P<word>[A-Za-z]\w*?[A-Za-z0-9])_(?=[^\w]|$)")


def _escape_type_underscores(app, what, name, obj, options, lines):
    for k, line in enumerate(lines):
        match = _FIELD_LINE.match(line)
        if match and "_" in match["type"]:
            escaped = _TRAILING_UNDERSCORE.sub(r"\g<word>\\_", match["type"])
            lines[k] = match["head"] + escaped


# Every public name (the __all__ of skrecon and of its public modules) must
# appear in an autosummary of api.rst: a name added to the code but not to
# the reference fails the -W build with a warning that names it.
_AUTOSUMMARY_ENTRY = re.compile(r"^   (?P<name>[A-Za-z_][\w.]*)\s*$")


def _check_api_reference(app):
    import importlib
    import pkgutil

    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    api = os.path.join(app.srcdir, "api.rst")
    with open(api, encoding="utf-8") as f:
        entries = {m["name"] for m in map(_AUTOSUMMARY_ENTRY.match, f) if m}
    listed = set()
    for entry in entries:
        module, _, name = f"skrecon.{entry}".rpartition(".")
        try:
            listed.add(id(getattr(importlib.import_module(module), name)))
        except (ImportError, AttributeError):
            logger.warning(f"api.rst lists {entry!r}, which is not importable "
                           f"as {module}.{name}")
    modules = [skrecon] + [
        importlib.import_module(f"skrecon.{info.name}")
        for info in pkgutil.iter_modules(skrecon.__path__)
        if not info.name.startswith("_")
    ]
    for module in modules:
        for name in getattr(module, "__all__", ()):
            if name.startswith("__"):
                continue
            if id(getattr(module, name)) not in listed:
                logger.warning(f"public name {module.__name__}.{name} is missing "
                               "from the API reference (doc/api.rst)")


def setup(app):
    app.connect("autodoc-process-docstring", _escape_type_underscores, priority=400)
    app.connect("builder-inited", _check_api_reference)
