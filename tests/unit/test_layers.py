"""The house: no import cycles among the package's modules, and modules stay small.

Every import counts, at module level, inside functions and under TYPE_CHECKING: a cycle that
only a function-level import hides is still two modules that need each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import supervisor

ROOT = Path(supervisor.__file__).parent
# Modules allowed past MAX_LINES, each with the reason (the README's architecture table repeats it).
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {
    "supervisor.cli": "argparse for every command and the renderings only the CLI prints",
    "supervisor.daemon.main": "one Daemon: start-up, the signal loop, reload and shutdown in order",
    "supervisor.control.client": "every command's request, its errors and discovery of daemons",
    "supervisor.sidecar.attempt": "one attempt's run: spawn, its phases in order, each way it ends",
    "supervisor.sidecar.loop": "the restart loop and each wait it can be in (port, dependency)",
    "supervisor.config.parse": "every key's validation, in the order of the file's tables",
    "supervisor.control.server": "the socket server: peer credentials, bounded clients, budget",
    "supervisor.system.procs": "every process fact psutil or /proc gives, behind one face",
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.startswith("supervisor"):
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    # Importing supervisor.config.schema runs supervisor/config/__init__.py first: a package's
    # __init__ is imported with every module under it.
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:n]) for n in range(2, len(parts)))
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(path, known) for name, path in mods.items()}
    # A module's own packages are already being imported when it runs: not an edge.
    return {
        name: {d for d in deps if d != name and not name.startswith(d + ".")}
        for name, deps in graph.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


# The layers, lowest first: each module imports only its own layer and the layers below it
# (README "Architecture"). Top-level modules other than these are the command side (cli, entry
# and the commands' helpers), above everything.
LAYERS = (
    {"errors"},
    {"config", "core"},  # the pure layer: validation, states, plans, renderings
    {"system"},
    {"evidence"},
    {"reconcile"},
    {"sidecar"},
    {"control"},
    {"service"},
    {"daemon"},
)
STANDALONE = {"supervisor.demo"}  # run as a sidecar; imports nothing of ours


def layer_of(module: str) -> int:
    parts = module.split(".")
    for index, names in enumerate(LAYERS):
        if len(parts) > 1 and parts[1] in names:
            return index
    return len(LAYERS)


def test_each_layer_imports_only_the_layers_below() -> None:
    upward = [
        f"{module} -> {dep}"
        for module, deps in sorted(import_graph().items())
        for dep in sorted(deps)
        if layer_of(dep) > layer_of(module)
    ]
    assert not upward, upward


def test_the_demo_sidecar_imports_nothing_of_ours() -> None:
    assert all(not import_graph()[name] for name in STANDALONE)


def test_modules_stay_small_unless_the_reason_is_written() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    unexplained = {name: n for name, n in long.items() if name not in LONG_MODULES}
    assert not unexplained, unexplained


def architecture_table() -> dict[str, set[str]]:
    """Folder -> module names, from the table under "## Architecture" (README or docs)."""
    repo = ROOT.parent
    for doc in (repo / "README.md", repo / "docs" / "architecture.md"):
        if not doc.exists():
            continue
        text = doc.read_text()
        start = text.find("| folder | modules |")
        if start < 0:
            continue
        rows: dict[str, set[str]] = {}
        for line in text[start:].splitlines()[2:]:
            if not line.startswith("|"):
                break
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            folders = re.findall(r"`([\w/.]+)`", cells[0])
            names = set(re.findall(r"`(\w+)/?`", cells[1]))
            if cells[0] == "top level":
                rows.setdefault("", set()).update(names)
            for folder in folders:
                if folder.endswith(".py"):
                    rows.setdefault("", set()).add(folder.removesuffix(".py"))
                else:
                    rows.setdefault(folder.rstrip("/"), set())
            if len(folders) == 1 and not folders[0].endswith(".py"):
                rows[folders[0].rstrip("/")] |= names
            elif len(folders) > 1:  # "`config/`, `core/`": the names split by "; "
                for folder, part in zip(folders, cells[1].split(";"), strict=False):
                    rows[folder.rstrip("/")] |= set(re.findall(r"`(\w+)/?`", part))
        return rows
    raise AssertionError("no architecture table found")


def test_the_architecture_table_lists_exactly_the_modules() -> None:
    actual: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.name in {"__init__.py", "__main__.py"}:
            continue
        folder = rel.parts[0] if len(rel.parts) > 1 else ""
        # a package inside a layer (system/net/) is listed as one name, `net/`
        name = rel.parts[1] if len(rel.parts) > 2 else rel.stem
        actual.setdefault(folder, set()).add(name)
    assert architecture_table() == actual


def test_the_daemon_hands_blocking_work_to_workers_only() -> None:
    """system/workers.run_sync is the one guard for a thread that cannot start (issue 25): the
    daemon's code never calls anyio.to_thread itself. (The clients run in apps, not here.)"""
    direct = [
        name
        for name, path in modules().items()
        if name.split(".")[1:2] not in (["client"], ["mcp"])
        and name != "supervisor.system.workers"
        and "anyio.to_thread" in path.read_text()
    ]
    assert not direct, direct
