"""What users read: docstrings cite the documentation, the README states the
threat model and what is out of scope (issue 14)."""

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import skrecon

README = Path(__file__).resolve().parents[1] / "README.md"

def _docstrings(module):
    """The module's docstring and those of everything defined in it."""
    yield module.__name__, inspect.getdoc(module) or ""
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if callable(member) or isinstance(member, property):
                    where = f"{module.__name__}.{name}.{attr}"
                    yield where, inspect.getdoc(member) or ""
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", inspect.getdoc(obj) or ""


def _modules():
    names = ["skrecon"] + [f"skrecon.{info.name}"
                           for info in pkgutil.iter_modules(skrecon.__path__)]
    for name in names:
        try:
            yield importlib.import_module(name)
        except ImportError:  # an optional dependency
            continue


def test_docstrings_cite_the_theory_page_not_the_design_brief():
    citing = {}
    for module in _modules():
        for where, doc in _docstrings(module):
            if "DESIGN" in doc:
                citing.setdefault(module.__name__, []).append(where)
    assert citing == {}  # DESIGN.md is the developers' brief, not the users'


@pytest.mark.parametrize("phrase", [
    "## Threat model and scope",
    "It need not craft anything: the current model of **any FedSGD round**",
    "**convolutional first layer**",
    "**BatchNorm in training mode**",
    "**FedAvg with several epochs of mini-batches**",
    "Secure aggregation of FedSGD updates is *in* scope",
])
def test_readme_states_the_threat_model_and_the_scope(phrase):
    assert phrase in README.read_text(encoding="utf-8")


def test_readme_python_runs_and_says_what_it_prints(capsys):
    """The README's Python blocks run as written, in order (one namespace),
    and print what their comments say."""
    import re
    import warnings

    import sklearn

    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    namespace = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a search's fits may warn
            for block in blocks:
                exec(compile(block, str(README), "exec"), namespace)
    finally:
        sklearn.set_config(enable_metadata_routing=False)
    lines = capsys.readouterr().out.splitlines()
    worst, residual = (float(x) for x in lines[0].split())
    assert worst < 1e-10 and residual < 1e-10
    assert lines[1] == "{'activation': 'tanh'}"


@pytest.mark.filterwarnings("ignore")  # the page shows a failed fit's warnings
def test_the_pages_doctests_run():
    # doc/sklearn_integration.rst shows routing, searches and pipelines as
    # doctests: they are checked here, not only when the docs are built
    import doctest

    page = README.parent / "doc" / "sklearn_integration.rst"
    result = doctest.testfile(str(page), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 40 and result.failed == 0
