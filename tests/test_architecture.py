"""The layering docs/architecture.md writes out, checked on the source: which layer may import which, and that
a space's or a method's knowledge stays in its own module."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "ista_nas"
LEAVES = {"errors", "fields", "files", "limits", "ops", "solver", "sparse_coding", "costs", "genotype", "published",
          "diagram"}
RANK = {"leaves": 0, "engine": 0, "networks": 1, "spaces": 2, "config": 3, "tools": 4, "methods": 5, "analysis": 6,
        "front": 7}


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top in LEAVES:
        return "leaves"
    if top in ("engine", "networks", "spaces", "config", "methods", "analysis"):
        return top
    if top == "retrain":
        return "methods"
    if top in ("benchmark", "hardware"):
        return "tools"
    return "front"  # export, bench, cli, the package itself


def modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        name = ".".join(parts if parts[-1] != "__init__" else parts[:-1]) or "__init__"
        yield path, name, package


def runtime_imports(path: Path, package: tuple[str, ...]) -> set[str]:
    """The package modules ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and id(node) not in skip:
            base = list(package)[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            if target:
                found.add(target)
            else:  # from . import name
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path,name,package", list(modules()), ids=lambda v: v if isinstance(v, str) else None)
def test_no_module_imports_from_a_layer_above_it(path, name, package):
    mine = layer(name) if name != "__init__" else "front"
    for target in runtime_imports(path, package):
        theirs = layer(target)
        if mine == "engine":
            assert theirs == "engine" or target in ("errors", "files"), f"{name} (engine) imports {target}"
        elif mine == "leaves":
            assert theirs == "leaves", f"{name} (a leaf) imports {target}"
        else:
            assert RANK[theirs] <= RANK[mine], f"{name} ({mine}) imports {target} ({theirs})"


def _sources():
    return {path.relative_to(SRC).as_posix(): path.read_text() for path in SRC.rglob("*.py")}


def test_only_the_nas_bench_201_modules_and_the_registry_name_that_space():
    own = {"networks/nb201.py", "networks/nb201_search.py", "spaces/nb201.py", "spaces/__init__.py"}
    naming = sorted(name for name, text in _sources().items()
                    if re.search(r"nb201|nas-bench-201", text, re.IGNORECASE) and name not in own)
    assert naming == []


def test_only_the_darts_method_module_tests_the_method_name_darts():
    test = re.compile(r"""method\W*\s*(==|!=|\bin\b|\bnot in\b)\s*\(?[^\n]*["']darts["']|["']darts["']\s*(==|!=)""")
    testing = sorted(name for name, text in _sources().items() if test.search(text) and name != "methods/darts.py")
    assert testing == []


def test_runs_start_in_the_driver_and_the_process_group_is_joined_in_one_place():
    """The run directory is files only; the one call that joins the process group is Dist.setup's."""
    sources = _sources()
    assert "engine.distributed" not in runtime_imports(SRC / "engine" / "rundir.py", ("engine",))
    joining = sorted(name for name, text in sources.items() if "init_process_group" in text)
    assert joining == ["engine/distributed.py"]
    tree = ast.parse(sources["engine/distributed.py"])
    callers = {fn.name for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
               for call in ast.walk(fn) if isinstance(call, ast.Call) and ast.unparse(call.func) in
               ("_join", "dist.init_process_group")}
    assert callers == {"_join", "setup"}


def test_no_space_module_reads_the_runs_method():
    """A method's business (e.g. the size its genotype is evaluated at) stays with the methods: the spaces never
    look at which method a run used."""
    reading = re.compile(r"""\.method\b|["']method["']""")
    reading_spaces = [name for name, text in _sources().items() if name.startswith("spaces/") and reading.search(text)]
    assert reading_spaces == []


def test_a_method_module_imports_no_other_method():
    """A method reads top to bottom in its own module: what methods share lives in methods/base.py (and the
    budget's recovery in methods/budget.py), so no method module imports another method's."""
    from ista_nas.methods import METHODS

    methods = {cls.__module__.rsplit(".", 1)[-1] for cls in METHODS.values()}
    assert len(methods) == len(METHODS)  # one module per method
    for name in methods:
        path = SRC / "methods" / f"{name}.py"
        imported = {target.split(".")[-1] for target in runtime_imports(path, ("methods",))}
        assert not imported & methods, f"methods/{name}.py imports {sorted(imported & methods)}"


def test_only_the_run_record_reads_what_a_run_is_from_the_keys_it_holds():
    """Readers of a finished run ask ``methods.run_record``; no other module infers the command, the method or the
    space from which keys a config holds, or falls back to a literal method or space."""
    infers = re.compile(r"""["'](method|genotype|space)["']\s+(not\s+)?in\s+\w*config|"""
                        r"""get\(\s*["'](space|method)["']\s*,\s*["']""")
    found = sorted(name for name, text in _sources().items() if infers.search(text) and name != "methods/__init__.py")
    assert found == []
