"""museforge's one-way layering, read from the source with `ast` (nothing is imported, so no import order can
hide an edge). Every import counts, at module level or inside a function: a lazy import is still a dependency,
and still closes a loop the day both ends run.

The layers, top down:

- ``web``, ``cli``, ``__main__``: the shells people use;
- ``lab``: workflows over the families and the library (shipping models, evaluating them as their papers do);
- ``families``: one home per model family, with its registry;
- storage: ``store`` and the store's own ``analytics``;
- the shared library: everything else (data, tokenizers, models, training, generation, metrics, audio, score,
  io, ...), in floors of its own (`LIBRARY_FLOORS`), knowing nothing of the layers above it, nor of web
  frameworks, the command line or DB drivers.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "museforge"

TOP = frozenset({"web", "cli", "cli_entry", "cli_show", "__main__"})
LAB = "lab"
FAMILIES = "families"
# The store's analytics measures the store's own activity (events, ratings, jobs) and reads it through the
# Repository, so it sits on `store`, beside it and above the library; only the shells use it.
STORAGE = frozenset({"store", "analytics"})
ABOVE_LIBRARY = TOP | STORAGE | {LAB, FAMILIES}

# The library's own floors, bottom up: a unit imports only units of its floor or below. Generation and training
# share a floor and stay apart: sampling needs no training loop, and a training loop no sampler.
LIBRARY_FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"museforge", "_lazy", "defaults", "io", "machine", "score"}),
    frozenset({"tokenizers", "audio", "visual"}),
    frozenset({"data", "models"}),
    frozenset({"metrics"}),
    frozenset({"generation", "training"}),
)
APART = frozenset({frozenset({"generation", "training"})})

# Third-party packages of the shells (web framework and pages, command line and terminal, DB driver, sessions,
# the distributed queue).
SHELL_PACKAGES = frozenset(
    {
        "argon2",
        "bson",
        "celery",
        "fastapi",
        "fastapi_offline",
        "itsdangerous",
        "jinja2",
        "kombu",
        "markdown_it",
        "multipart",
        "pydantic_settings",
        "pymongo",
        "redis",
        "rich",
        "starlette",
        "typer",
        "uvicorn",
    }
)
# What storage may use of them: `store` is the DB driver's one home (store/mongo.py), and `analytics` renders
# its report with Jinja templates of its own (analytics/templates), for the CLI's HTML file and the web pages.
STORAGE_PACKAGES = {"store": frozenset({"pymongo", "bson"}), "analytics": frozenset({"jinja2"})}

# Imports that break the rules today and wait for the family redesign (#21), which is rewriting the files that
# must change with them: (importing module, imported unit or third-party package) -> why it is still here.
# Remove an entry with its import; `test_every_known_debt_is_still_owed` fails on one that nothing needs.
KNOWN_DEBTS: dict[tuple[str, str], str] = {
    (
        "museforge.data.build",
        "rich",
    ): "draws its own progress bar; cli.py's `data build` should pass a callback",
    (
        "museforge.data.dataset",
        "rich",
    ): "draws its own progress bar; cli.py's `data tokenize` should pass one",
    ("museforge.training.trainer", "rich"): "draws its own progress bar; cli.py's `train` should pass one",
}


@dataclass(frozen=True)
class Import:
    """One import in one module: ``target`` is a module of the walked package (dotted), or the top-level name
    of a third-party package."""

    source: str
    file: str
    line: int
    target: str
    statement: str

    def where(self) -> str:
        return f"{self.file}:{self.line}: {self.statement}"


class ImportGraph:
    """Every import of every module under one package folder, each resolved to the module it loads: ``from pkg
    import name`` to the submodule ``pkg.name`` when there is one, else to the submodule a lazy package (one
    whose ``__init__`` calls `museforge._lazy.lazy_exports`) loads ``name`` from, else to ``pkg`` itself."""

    def __init__(self, package_dir: Path) -> None:
        self.package = package_dir.name
        self.shown_from = package_dir.parents[1]
        self.files = {self._name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
        self.exports = {m: lazy_export_map(p) for m, p in self.files.items() if p.name == "__init__.py"}
        self.imports = tuple(dict.fromkeys(i for m in self.files for i in self._imports_of(m)))

    @staticmethod
    def _name(path: Path, package_dir: Path) -> str:
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def is_internal(self, target: str) -> bool:
        return target.split(".")[0] == self.package

    def file(self, module: str) -> str:
        return str(self.files[module].relative_to(self.shown_from))

    def unit(self, module: str) -> str:
        """The layering's unit: a top-level subpackage, or a single module (cli, score, ...); the package's own
        ``__init__`` is a unit named after the package."""
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    def internal_edges(self) -> list[Import]:
        return [i for i in self.imports if self.is_internal(i.target) and i.target != i.source]

    def _imports_of(self, source: str) -> Iterator[Import]:
        path = self.files[source]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for target in self._targets(source, node):
                yield Import(source, self.file(source), node.lineno, target, ast.unparse(node))

    def _targets(self, source: str, node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [self._outside(a.name) for a in node.names]
        if isinstance(node, ast.ImportFrom):
            base = self._from_base(source, node)
            if base == "__future__":
                return []
            if not self.is_internal(base):
                return [self._outside(base)]
            return [self._from_target(base, a.name) for a in node.names]
        if is_literal_import_module(node):
            return [self._outside(node.args[0].value)]
        return []

    def _outside(self, module: str) -> str:
        return module if self.is_internal(module) else module.split(".")[0]

    def _from_base(self, source: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        here = source.split(".") if self.files[source].name == "__init__.py" else source.split(".")[:-1]
        here = here[: len(here) - node.level + 1]
        return ".".join([*here, node.module] if node.module else here)

    def _from_target(self, base: str, name: str) -> str:
        if f"{base}.{name}" in self.files:
            return f"{base}.{name}"
        if name in self.exports.get(base, {}):
            return f"{base}.{self.exports[base][name]}"
        return base


def lazy_export_map(init: Path) -> dict[str, str]:
    """The map ``name -> submodule`` a package's ``__init__`` hands to ``lazy_exports``, or {} for none."""
    tree = ast.parse(init.read_text(encoding="utf-8"))
    dicts = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "lazy_exports"
            and len(node.args) == 2
        ):
            arg = node.args[1]
            return ast.literal_eval(dicts[arg.id] if isinstance(arg, ast.Name) else arg)
    return {}


def is_literal_import_module(node: ast.AST) -> bool:
    """``importlib.import_module("pkg.x")`` with a literal name: an import by another spelling."""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def find_cycle(graph: dict[str, dict[str, Import]]) -> list[Import]:
    """One loop of edges in ``graph`` (node -> {neighbour: an import that ties them}), or []: a depth-first walk
    that meets a node still on its path has gone round."""
    on_path: dict[str, int] = {}
    done: set[str] = set()
    path: list[Import] = []

    def visit(node: str) -> list[Import]:
        on_path[node] = len(path)
        for neighbour, edge in sorted(graph.get(node, {}).items()):
            path.append(edge)
            if neighbour in on_path:
                return path[on_path[neighbour] :]
            if neighbour not in done and (found := visit(neighbour)):
                return found
            path.pop()
        del on_path[node]
        done.add(node)
        return []

    for node in sorted(graph):
        if node not in done and (found := visit(node)):
            return found
    return []


def module_cycle(g: ImportGraph) -> list[Import]:
    graph: dict[str, dict[str, Import]] = {}
    for edge in g.internal_edges():
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    return find_cycle(graph)


def unit_cycle(g: ImportGraph) -> list[Import]:
    graph: dict[str, dict[str, Import]] = {}
    for edge in g.internal_edges():
        if g.unit(edge.source) != g.unit(edge.target):
            graph.setdefault(g.unit(edge.source), {}).setdefault(g.unit(edge.target), edge)
    return find_cycle(graph)


def describe(g: ImportGraph, cycle: list[Import]) -> str:
    return "\n".join(f"  {e.where()}\n      -> {g.file(e.target)}" for e in cycle)


@cache
def museforge() -> ImportGraph:
    return ImportGraph(PACKAGE)


def refuse(found: list[str], title: str) -> None:
    if found:
        pytest.fail(f"{title}:\n" + "\n".join(f"  {f}" for f in found), pytrace=False)


def crossing(forbidden: Callable[[str, str], bool]) -> list[str]:
    """Every museforge import from one unit to another that ``forbidden(from_unit, to_unit)`` refuses."""
    g = museforge()
    return [
        f"{e.where()}  ({g.unit(e.source)} -> {g.unit(e.target)})"
        for e in g.internal_edges()
        if g.unit(e.source) != g.unit(e.target)
        and (e.source, g.unit(e.target)) not in KNOWN_DEBTS
        and forbidden(g.unit(e.source), g.unit(e.target))
    ]


def library_floor(name: str) -> int:
    return next(k for k, floor in enumerate(LIBRARY_FLOORS) if name in floor)


def test_every_museforge_import_names_a_module_that_exists() -> None:
    g = museforge()
    missing = [i.where() for i in g.imports if g.is_internal(i.target) and i.target not in g.files]
    refuse(missing, "imports of museforge modules that do not exist")


def test_no_circle_between_modules() -> None:
    if cycle := module_cycle(museforge()):
        pytest.fail(
            "modules that import each other in a circle (lazy imports count):\n"
            + describe(museforge(), cycle),
            pytrace=False,
        )


def test_no_circle_between_subpackages() -> None:
    if cycle := unit_cycle(museforge()):
        pytest.fail(
            "subpackages that import each other in a circle, one import per step:\n"
            + describe(museforge(), cycle),
            pytrace=False,
        )


def test_nothing_below_the_shells_imports_them() -> None:
    refuse(
        crossing(lambda src, dst: dst in TOP and src not in TOP), "imports of web, cli or __main__ from below"
    )


def test_only_the_shells_import_the_lab() -> None:
    refuse(
        crossing(lambda src, dst: dst == LAB and src not in TOP), "only web, cli and __main__ may import lab"
    )


def test_only_the_shells_and_the_lab_import_the_families() -> None:
    refuse(
        crossing(lambda src, dst: dst == FAMILIES and src not in TOP | {LAB}),
        "only web, cli, __main__ and lab may import families",
    )


def test_the_library_never_reaches_storage() -> None:
    """Storage sits over the library, and the store under its own analytics."""
    below = crossing(lambda src, dst: dst in STORAGE and src not in ABOVE_LIBRARY)
    refuse(
        below + crossing(lambda src, dst: (src, dst) == ("store", "analytics")),
        "imports of storage from below",
    )


def test_every_library_unit_has_a_floor() -> None:
    g = museforge()
    units = {g.unit(m) for m in g.files} - ABOVE_LIBRARY
    placed = frozenset().union(*LIBRARY_FLOORS)
    assert units <= placed, f"library units without a floor in LIBRARY_FLOORS: {sorted(units - placed)}"


def test_the_library_imports_only_its_own_floor_or_below() -> None:
    def wrong_way(src: str, dst: str) -> bool:
        if src in ABOVE_LIBRARY or dst in ABOVE_LIBRARY:
            return False
        return library_floor(dst) > library_floor(src) or frozenset({src, dst}) in APART

    refuse(crossing(wrong_way), "library imports that run back up a floor, or between units kept apart")


def test_the_library_uses_no_shell_packages() -> None:
    g = museforge()

    def refused(i: Import) -> bool:
        home = g.unit(i.source)
        return (
            i.target in SHELL_PACKAGES
            and home not in TOP | {LAB, FAMILIES}
            and i.target not in STORAGE_PACKAGES.get(home, frozenset())
            and (i.source, i.target) not in KNOWN_DEBTS
        )

    refuse(
        [f"{i.where()}  ({g.unit(i.source)} -> {i.target})" for i in g.imports if refused(i)],
        "web, command-line or DB packages imported below the shells",
    )


def test_every_known_debt_is_still_owed() -> None:
    g = museforge()
    owed = {(i.source, g.unit(i.target) if g.is_internal(i.target) else i.target) for i in g.imports}
    refuse(sorted(f"{s} -> {t}" for s, t in KNOWN_DEBTS if (s, t) not in owed), "KNOWN_DEBTS no import owes")


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "src" / "pkg"


def test_the_walk_follows_function_level_relative_and_lazy_imports(tmp_path: Path) -> None:
    """The walker itself, on a package of four modules: an import inside a function, relative imports of
    two levels, a name a lazy package re-exports and a third-party import all become edges, and the loop they
    close is reported file by file."""
    package = write_package(
        tmp_path,
        {
            "pkg/__init__.py": (
                '_EXPORTS = {"Thing": "things"}\n__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)\n'
            ),
            "pkg/things.py": "def make():\n    from . import other\n    return other\n",
            "pkg/other.py": "import fastapi.responses\nfrom pkg import Thing\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/deep.py": "from ..other import x\nfrom . import deep2\n",
            "pkg/sub/deep2.py": "import importlib\nM = importlib.import_module('pkg.things')\n",
        },
    )
    g = ImportGraph(package)
    assert {(i.source, i.target) for i in g.imports} == {
        ("pkg.things", "pkg.other"),
        ("pkg.other", "fastapi"),
        ("pkg.other", "pkg.things"),
        ("pkg.sub.deep", "pkg.other"),
        ("pkg.sub.deep", "pkg.sub.deep2"),
        ("pkg.sub.deep2", "importlib"),
        ("pkg.sub.deep2", "pkg.things"),
    }
    cycle = describe(g, module_cycle(g))
    assert "src/pkg/other.py:2: from pkg import Thing\n      -> src/pkg/things.py" in cycle
    assert "src/pkg/things.py:2: from . import other\n      -> src/pkg/other.py" in cycle
    assert unit_cycle(g) and {g.unit(i.source) for i in unit_cycle(g)} == {"other", "things"}
