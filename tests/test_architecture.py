"""The import order of docs/architecture.md: a tfseg module imports only from its own package
and the packages before it (utils -> config -> data -> models -> tasks -> runs -> deploy ->
training -> benchmarking -> commands), deferred imports included."""

import ast

import pytest
from conftest import REPO

# Rank of each package; the commands are the modules at the top of tfseg/.
ORDER = {"utils": 0, "config": 1, "recipes": 1, "data": 2, "models": 3, "tasks": 4, "runs": 5,
         "deploy": 6, "training": 7, "benchmarking": 8}
COMMANDS = 9


def package_of(module):
    """(package name, rank) of a dotted tfseg module name; None for `tfseg` itself (its
    version, which any module may read)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    if parts[1] in ORDER:
        return parts[1], ORDER[parts[1]]
    return "commands", COMMANDS


def imported_tfseg_modules(path):
    """The tfseg modules that the source file `path` imports, anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def upward_imports(root):
    """(importing module, imported module) pairs of the package `root` against the order."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        own = package_of(module)
        for imported in imported_tfseg_modules(path):
            other = package_of(imported) if imported.split(".")[0] == "tfseg" else None
            if own is None or other is None or other[0] == own[0]:
                continue
            if other[1] >= own[1]:
                found.append((module, imported))
    return found


def test_tfseg_imports_follow_the_package_order():
    assert upward_imports(REPO / "tfseg") == []


@pytest.mark.parametrize("module, source, imported", [
    ("data/reader.py", "from tfseg.models import build\n", "tfseg.models"),
    ("runs/folder.py", "def late():\n    import tfseg.training.loop\n", "tfseg.training.loop"),
    ("training/loop.py", "from tfseg.benchmarking import cases\n", "tfseg.benchmarking"),
    ("cli.py", "from tfseg.utils.errors import TfsegError\n", None),
])
def test_an_import_against_the_order_is_found(tmp_path, module, source, imported):
    path = tmp_path / "tfseg" / module
    path.parent.mkdir(parents=True)
    path.write_text(source)
    expected = ".".join(("tfseg", *module.removesuffix(".py").split("/")))
    assert upward_imports(tmp_path / "tfseg") == ([(expected, imported)] if imported else [])
