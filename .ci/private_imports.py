"""List the private names that cross skrecon's modules.

Walks every module of skrecon/ (top-level and in-function imports) and prints
one line per ``from .x import _name`` (or ``from skrecon.x import _name``)
and per ``x._name`` attribute read on an imported skrecon module, where the
name is private (one leading underscore) and lives in another module. Names
defined by a private module for its siblings (``from ._harness import
run_trials``) are not private and are not listed. Exit status: 0 always; the
list is for review (``python .ci/private_imports.py [--count]``).
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "skrecon"


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _target(module, level, here):
    """The skrecon module an import refers to, as a dotted name below skrecon."""
    if level == 0:
        if module is None or not (module == "skrecon" or module.startswith("skrecon.")):
            return None
        return module[len("skrecon."):] if module != "skrecon" else ""
    return module or ""


def crossings():
    """``(file, line, source module, name)`` of every private name crossing."""
    found = []
    for path in sorted(ROOT.glob("*.py")):
        here = path.stem
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases = {}  # local name -> skrecon module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(node.module, node.level, here)
                if target is None:
                    continue
                for alias in node.names:
                    if target == "":  # from . import moments
                        aliases[alias.asname or alias.name] = alias.name
                    elif _private(alias.name) and target != here:
                        found.append((path.name, node.lineno, target, alias.name))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)
                    and aliases[node.value.id] != here):
                source = aliases[node.value.id]
                found.append((path.name, node.lineno, source, node.attr))
    return sorted(set(found))


def main(argv):
    rows = crossings()
    for file, line, source, name in rows:
        print(f"skrecon/{file}:{line}: {name} from skrecon/{source}.py")
    if "--count" in argv or not rows:
        print(f"{len(rows)} private name(s) cross modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
