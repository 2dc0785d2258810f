"""The layout's promise, read from the imports (ast): commands on top import the fakefacegen package, never one
another; inside the package every import goes to the same layer or a lower one, and never back up to a command."""
import ast

import pytest
from conftest import REPO

# fakefacegen's layers, top to bottom: a module imports from its own layer or those below it.
LAYERS = (
    ("presentation", ("fakefacegen.editing", "fakefacegen.reports")),
    ("measurement", ("fakefacegen.metrics",)),
    ("runs", ("fakefacegen.settings", "fakefacegen.checkpoint", "fakefacegen.export", "fakefacegen.runs")),
    ("training", ("fakefacegen.training", "fakefacegen.network", "fakefacegen.sampling")),
    ("data", ("fakefacegen.data",)),
    ("base", ("fakefacegen.cli", "fakefacegen.files", "fakefacegen.grids", "fakefacegen")),
)
COMMAND_FOLDERS = (".", "benchmarks")


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    """{dotted name: path} of the commands (the top level and benchmarks/) and of the package."""
    found = {module_name(p): p for folder in COMMAND_FOLDERS for p in (REPO / folder).glob("*.py")}
    found.update({module_name(p): p for p in (REPO / "fakefacegen").rglob("*.py")})
    return found


def imported(path, known):
    """The project modules a file imports, anywhere in it."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        targets.update(name for name in names if name in known)
    return targets


def layer(name):
    """The index of a package module's layer in LAYERS (0 is the top); None for a command."""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def test_every_package_module_has_a_layer():
    assert [name for name in modules() if name.startswith("fakefacegen") and layer(name) is None] == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_imports_go_down(name):
    known = modules()
    for target in imported(known[name], known):
        if layer(name) is None:  # a command
            assert layer(target) is not None, f"the command {name} imports the command {target}"
        else:
            assert layer(target) is not None, f"{name} imports the command {target}: move what it needs down"
            assert layer(target) >= layer(name), (f"{name} ({LAYERS[layer(name)][0]}) imports {target} "
                                                  f"({LAYERS[layer(target)][0]}), a layer above it")


def test_the_test_sees_an_upward_import(tmp_path):
    known = {"fakefacegen.cli": tmp_path / "cli.py", "fakefacegen.metrics.fid": tmp_path / "fid.py"}
    known["fakefacegen.cli"].write_text("from fakefacegen.metrics.fid import frechet_distance\n")
    assert imported(known["fakefacegen.cli"], known) == {"fakefacegen.metrics.fid"}
    assert layer("fakefacegen.metrics.fid") < layer("fakefacegen.cli")
