"""models/ and experiments/ use only jax_hypereca's public API (DESIGN.md section 5).

The files are parsed, not imported.  Every import of jax_hypereca must come
from a public module and name one of its public names, and every attribute
read off an imported jax_hypereca module must be a public name of it.
Public modules: ``jax_hypereca``, ``jax_hypereca.data``,
``jax_hypereca.planner``, ``jax_hypereca.checkpoint`` and
``jax_hypereca.flax`` with its submodules.  A module's public names are its
``__all__``, or, without one, what it defines at top level without a leading
underscore.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = ("jax_hypereca", "jax_hypereca.data", "jax_hypereca.planner", "jax_hypereca.checkpoint")
PUBLIC_PACKAGES = ("jax_hypereca.flax",)
CALLERS = ("models", "experiments")


def is_public_module(name: str) -> bool:
    return name in PUBLIC_MODULES or any(name == p or name.startswith(p + ".") for p in PUBLIC_PACKAGES)


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=None)
def public_names(module: str) -> frozenset[str]:
    """``__all__`` of the module, else its top-level definitions without a leading underscore."""
    tree = ast.parse(module_file(module).read_text())
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if "__all__" in names:
                return frozenset(ast.literal_eval(node.value))
            defined.update(names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
    return frozenset(n for n in defined if not n.startswith("_"))


def _bind_imports(tree: ast.AST, where) -> tuple[dict[str, str], list[str]]:
    """Local name -> jax_hypereca module it is bound to, and the bad imports."""
    modules: dict[str, str] = {}
    bad: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] != "jax_hypereca":
                    continue
                if not is_public_module(a.name):
                    bad.append(f"{where(node)}: import {a.name}: not a public module")
                modules[a.asname or "jax_hypereca"] = a.name if a.asname else "jax_hypereca"
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] != "jax_hypereca":
                continue
            if not is_public_module(node.module):
                bad.append(f"{where(node)}: from {node.module} import ...: not a public module; "
                           f"import the names from jax_hypereca or jax_hypereca.data / .planner")
                continue
            for a in node.names:
                if a.name not in public_names(node.module):
                    bad.append(f"{where(node)}: from {node.module} import {a.name}: not a public "
                               f"name of {node.module} (its __all__)")
                elif module_file(f"{node.module}.{a.name}") is not None:
                    modules[a.asname or a.name] = f"{node.module}.{a.name}"
    return modules, bad


def _attribute_reads(tree: ast.AST, modules: dict[str, str], where) -> list[str]:
    """Attributes read off bound jax_hypereca modules that are not public names."""
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        module = modules.get(node.value.id)
        if module is None:
            continue
        sub = f"{module}.{node.attr}"
        if module_file(sub) is not None and is_public_module(sub):
            continue
        if node.attr not in public_names(module):
            bad.append(f"{where(node)}: {node.value.id}.{node.attr}: not a public name of {module}")
    return bad


def violations(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename=filename)

    def where(node: ast.AST) -> str:
        return f"{filename}:{node.lineno}"

    modules, bad = _bind_imports(tree, where)
    return bad + _attribute_reads(tree, modules, where)


def caller_files() -> list[Path]:
    return sorted(p for top in CALLERS for p in (ROOT / top).rglob("*.py"))


def test_models_and_experiments_use_only_the_public_api():
    found = []
    for path in caller_files():
        found += violations(path.read_text(), str(path.relative_to(ROOT)))
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("source", [
    "from jax_hypereca.hashing import mix64",
    "from jax_hypereca import _native",
    "from jax_hypereca.data import criteo",
    "import jax_hypereca.table",
    "import jax_hypereca as h\nh.errors.insert_status_dict(s)",
    "from jax_hypereca import replication as rep\nrep._empty_rows(spec)",
    "from jax_hypereca.planner import cost_model",
    "from jax_hypereca.host_tier import HostStore",
    "import jax_hypereca as h\nh.host_tier.HostStore",
])
def test_the_check_catches_internal_use(source):
    assert violations(source, "snippet.py")


def test_the_check_accepts_public_use():
    ok = ("import jax_hypereca as h\nfrom jax_hypereca import mix64, replication as rep\n"
          "from jax_hypereca.data import DataFormatError\nfrom jax_hypereca.flax.linen import HypeRecaEmbed\n"
          "from jax_hypereca.planner import plan_replication\nh.TableSpec\nrep.peek\n"
          "from jax_hypereca import HostStore, HostTierFullError\nh.HOST_COUNTER_NAMES\n")
    assert violations(ok, "snippet.py") == []


def test_no_module_imports_a_higher_layer_and_nothing_cycles():
    """DESIGN.md section 5 over the whole tree: tools/import_graph.py finds no
    upward arrow, no cycle and no module it cannot place."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "tools" / "import_graph.py"), "--root",
                        str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_functions_under_80_lines_and_files_under_600():
    """The size rules of the contributing notes, over the Python tree."""
    root = Path(__file__).resolve().parents[1]
    too_long = []
    for top in ("jax_hypereca", "models", "experiments", "tools"):
        for path in sorted((root / top).rglob("*.py")):
            src = path.read_text()
            if src.count("\n") > 600:
                too_long.append(f"{path.relative_to(root)}: {src.count(chr(10))} lines")
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 80:
                        too_long.append(f"{path.relative_to(root)}:{node.lineno} "
                                        f"{node.name}: {n} lines")
    assert too_long == [], too_long
