"""The dependency graph of sidecars (pure): its cycles, start and stop order, what a sidecar
needs. Imports nothing of ours: config validation (config/parse.py) uses it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

Graph = Mapping[str, Iterable[str]]  # name -> the names it depends on


def find_cycle(graph: Graph) -> tuple[str, ...] | None:
    """A dependency cycle as a path that ends where it starts (`a, b, a`), or None.

    Names the graph does not define are ignored here (they are reported as unknown)."""
    edges = {name: [d for d in deps if d in graph] for name, deps in graph.items()}
    done: set[str] = set()
    for root, first in edges.items():
        if root in done:
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(first)]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path.pop())
            elif child in path:
                return (*path[path.index(child) :], child)
            elif child not in done:
                path.append(child)
                stack.append(iter(edges[child]))
    return None


def start_order(graph: Graph, names: Sequence[str]) -> list[str]:
    """`names` ordered so that every sidecar comes after what it depends on (stable: config
    order otherwise). The graph must be acyclic (config validation sees to it)."""
    placed: list[str] = []
    seen: set[str] = set()
    wanted = set(names)

    def place(name: str, trail: frozenset[str]) -> None:
        if name in seen or name in trail:
            return
        for dep in graph.get(name, ()):  # through the ones not asked for too (transitively)
            place(dep, trail | {name})
        seen.add(name)
        if name in wanted:
            placed.append(name)

    for name in names:
        place(name, frozenset())
    return placed


def stop_order(graph: Graph, names: Sequence[str]) -> list[str]:
    """Dependents first: the reverse of `start_order`."""
    return list(reversed(start_order(graph, names)))


def needs(graph: Graph, name: str) -> list[str]:
    """Everything `name` depends on, directly or not, in start order (without `name`)."""
    found: list[str] = []

    def visit(node: str) -> None:
        for dep in graph.get(node, ()):
            if dep not in found and dep != name:
                visit(dep)
                found.append(dep)

    visit(name)
    return found


def dependents(graph: Graph, name: str) -> list[str]:
    """The sidecars that depend on `name` directly."""
    return [other for other, deps in graph.items() if name in deps]
