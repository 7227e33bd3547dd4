"""The house's layout: private names that cross modules (.ci/private_imports.py)."""

import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / ".ci" / "private_imports.py"


def _crossings():
    spec = importlib.util.spec_from_file_location("private_imports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.crossings()


def test_the_script_sees_a_crossing(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("private_imports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "a.py").write_text("def _helper():\n    pass\n")
    (tmp_path / "b.py").write_text(
        "from .a import _helper\nfrom . import a\n\n\ndef f():\n"
        "    from skrecon.a import _helper as h\n    return a._helper, h\n")
    (tmp_path / "c.py").write_text("from ._mlp import forward\n")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.crossings() == [("b.py", 1, "a", "_helper"),
                                  ("b.py", 6, "a", "_helper"),
                                  ("b.py", 7, "a", "_helper")]


def test_no_private_name_crosses_modules():
    # every module's private names stay its own (15 crossed before the
    # layout of issue 24); a new crossing fails here with its place
    assert _crossings() == []
