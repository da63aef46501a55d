#!/usr/bin/env python3
"""Import graph of jax_hypereca, models/ and experiments/: upward arrows and cycles.

    python tools/import_graph.py [--root REPO] [--edges]

Parses every ``.py`` file under ``jax_hypereca/``, ``models/`` and
``experiments/`` with :mod:`ast` (nothing is imported or run) and collects
each ``import`` / ``from ... import`` anywhere in the file: at module level,
inside functions, under ``if TYPE_CHECKING``.  ``from pkg import name``
counts as an arrow to ``pkg.name`` when that is a module of the tree, else to
``pkg``.  Imports of anything outside the tree (numpy, jax, ...) are ignored,
and so are strings handed to ``importlib``.

Prints, and exits 1 if any list is non-empty:

* upward arrows: a module importing a module of a higher layer
  (``LAYER_ORDER`` below, lowest first; DESIGN.md section 5);
* cycles: every strongly connected component of the module graph (modules
  that reach each other through imports), as one cycle through it plus the
  other members;
* unknown modules: files that ``LAYER_OF`` does not place (they are checked
  as if in ``DEFAULT_LAYER``); add them to the table.

To place a new module, add one line to ``LAYER_OF``.  A key ending in
``.*`` places a package and everything below it; other keys place exactly
one module.  The most specific key wins.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

LAYER_ORDER = [
    "base",        # no package imports: errors, the native extension, hashing
    "ops",         # ffi_call wrappers
    "core",        # one shard's table, optimizers, initializers, features, data readers
    "planner",     # numpy-only replication planner
    "capacity",    # exchange-buffer capacities
    "placement",   # how tables, rows and counters sit on a mesh; Layout; TrainState
    "exchange",    # the exchange strategies (all-to-all, ring)
    "replication", # the hot fold: planning, replicated rows, their update
    "lookup",      # the shard_map bodies and the compiled train / eval loops
    "collection",
    "flax",        # thin layers above the collection
    "checkpoint",
    "package",     # jax_hypereca/__init__.py: the public facade
    "apps",        # models/ and experiments/: public API only
]

LAYER_OF = {
    "jax_hypereca.errors": "base",
    "jax_hypereca._native": "base",
    "jax_hypereca.hashing": "base",
    "jax_hypereca.ids": "base",
    "jax_hypereca.constants": "base",
    "jax_hypereca._ops": "ops",
    "jax_hypereca.table": "core",
    "jax_hypereca.optim": "core",
    "jax_hypereca.initializers": "core",
    "jax_hypereca.features": "core",
    "jax_hypereca.host_tier": "core",       # the host tier's native store (issue 14)
    "jax_hypereca.data.*": "core",
    "jax_hypereca.planner.*": "planner",
    "jax_hypereca.capacity": "capacity",
    "jax_hypereca.placement": "placement",
    "jax_hypereca.layout": "exchange",     # a Layout names its Exchange
    "jax_hypereca.state": "placement",
    "jax_hypereca.lookup_scope": "placement",
    "jax_hypereca.tiers": "placement",      # rows between the device and host tiers
    "jax_hypereca.admission": "placement",  # which ids get a row (issue 14)
    "jax_hypereca.exchange": "exchange",
    "jax_hypereca.hot_exchange": "replication",
    "jax_hypereca.erasure": "replication",
    "jax_hypereca.replication": "replication",
    "jax_hypereca.lookup": "lookup",
    "jax_hypereca.steps": "lookup",
    "jax_hypereca.collection": "collection",
    "jax_hypereca.flax.*": "flax",
    "jax_hypereca.pipeline": "flax",        # DESIGN.md section 5: above the collection
    "jax_hypereca.checkpoint": "checkpoint",
    "jax_hypereca": "package",
    "models.*": "apps",
    "experiments.*": "apps",
}

DEFAULT_LAYER = "lookup"
"""Layer an unknown module is checked in (the brief's "anything else")."""

TOP_PACKAGES = ("jax_hypereca", "models", "experiments")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the tree."""
    mods: dict[str, Path] = {}
    for top in TOP_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def layer_of(module: str) -> str | None:
    """The layer ``LAYER_OF`` gives ``module`` (most specific key), or None."""
    best, best_len = None, -1
    for key, layer in LAYER_OF.items():
        if key.endswith(".*"):
            pkg = key[:-2]
            hit = module == pkg or module.startswith(pkg + ".")
            length = len(pkg)
        else:
            hit, length = module == key, len(key) + 1  # an exact key beats a package key
        if hit and length > best_len:
            best, best_len = layer, length
    return best


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    parts = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def _target(name: str, mods: dict[str, Path]) -> str | None:
    """The tree module ``name`` refers to (itself or its nearest ancestor)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def imports_of(module: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported tree module, line)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module or "")
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                     for a in node.names]
        else:
            continue
        for name in names:
            tgt = _target(name, mods)
            if tgt is not None and tgt != module:
                out.append((tgt, node.lineno))
    return out


def build_graph(root: Path) -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """Modules and ``graph[src][dst] = first line importing dst``."""
    mods = module_files(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for mod, path in mods.items():
        for tgt, line in imports_of(mod, path, mods):
            graph[mod].setdefault(tgt, line)
    return mods, graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def cycle_through(comp: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """One cycle inside a strongly connected component, starting at its first module."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def upward_edges(graph: dict[str, dict[str, int]]) -> list[tuple[str, str, int]]:
    """``(src, dst, line)`` where dst sits in a higher layer than src."""
    rank = {name: i for i, name in enumerate(LAYER_ORDER)}
    out = []
    for src, dsts in sorted(graph.items()):
        for dst, line in sorted(dsts.items()):
            if rank[layer_of(src) or DEFAULT_LAYER] < rank[layer_of(dst) or DEFAULT_LAYER]:
                out.append((src, dst, line))
    return out


def check_table() -> None:
    bad = sorted({v for v in LAYER_OF.values()} - set(LAYER_ORDER))
    if bad or DEFAULT_LAYER not in LAYER_ORDER:
        raise SystemExit(f"import_graph: layers {bad or [DEFAULT_LAYER]} are not in LAYER_ORDER; "
                         "add them to LAYER_ORDER or fix LAYER_OF")


def report(root: Path, show_edges: bool = False) -> int:
    """Print the findings; return the exit status (1 if anything was found)."""
    check_table()
    mods, graph = build_graph(root)

    def where(m: str) -> str:
        return f"{m} ({layer_of(m) or '?' + DEFAULT_LAYER})"

    if show_edges:
        print("edges:")
        for src, dsts in sorted(graph.items()):
            for dst in sorted(dsts):
                print(f"  {where(src)} -> {where(dst)}")
    up = upward_edges(graph)
    print(f"upward arrows ({len(up)}):")
    for src, dst, line in up:
        print(f"  {where(src)} -> {where(dst)}   [{mods[src].relative_to(root)}:{line}]")
    comps = strongly_connected(graph)
    print(f"cycles ({len(comps)}; each a group of modules that import each other):")
    for comp in comps:
        cyc = cycle_through(comp, graph)
        rest = sorted(set(comp) - set(cyc))
        print("  " + " -> ".join(cyc) + (f"   (same group: {', '.join(rest)})" if rest else ""))
    unknown = sorted(m for m in mods if layer_of(m) is None)
    print(f"unknown modules ({len(unknown)}), checked as layer {DEFAULT_LAYER!r}; "
          "place them in LAYER_OF:")
    for m in unknown:
        print(f"  {m}   [{mods[m].relative_to(root)}]")
    return 1 if (up or comps or unknown) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                    help="repository root (default: this script's parent's parent)")
    ap.add_argument("--edges", action="store_true", help="also print every arrow")
    args = ap.parse_args(argv)
    return report(args.root.resolve(), args.edges)


if __name__ == "__main__":
    sys.exit(main())
