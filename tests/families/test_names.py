"""Each model family is named only in its own home and the registry: a string literal that names a family (its
name, an alias, its checkpoint name) anywhere else in the package is knowledge of that family living outside
it. Read from the source with `ast`; docstrings and the module names of lazy export maps are not names of a
family.
"""

from __future__ import annotations

import ast
from pathlib import Path

from museforge.families import FAMILIES, get_family

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "museforge"
HOME = PACKAGE / "families"


def _names() -> set[str]:
    spellings = set()
    for family in FAMILIES:
        for name in (family.name, family.checkpoint_model, *family.aliases):
            spellings |= {name, name.replace("_", "-"), name.replace("-", "_")}
    return spellings


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _export_maps(tree: ast.AST) -> set[int]:
    """The values of ``_EXPORTS = {...}`` maps: module names, which may share a family's name."""
    ids = set()
    for node in ast.walk(tree):
        exports = isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "_EXPORTS" for t in node.targets
        )
        if exports and isinstance(node.value, ast.Dict):
            ids |= {id(v) for v in node.value.values}
    return ids


def family_literals(path: Path) -> list[str]:
    """The string literals of ``path`` that name a family, as 'line: text'."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _export_maps(tree)
    names = _names()
    return [
        f"{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
        if id(node) not in skip
    ]


def outside_homes() -> dict[str, list[str]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if HOME in path.parents:
            continue
        hits = family_literals(path)
        if hits:
            found[str(path.relative_to(PACKAGE))] = hits
    return found


def test_no_family_is_named_outside_its_home():
    found = outside_homes()
    assert not found, (
        f"family names outside src/museforge/families/ (move the knowledge into the family): {found}"
    )


def test_the_scan_finds_a_family_name(tmp_path):
    """The scan is not blind: a literal is found, a docstring and an export map's module name are not."""
    code = '"""remi"""\n_EXPORTS = {"MuseGAN": "musegan"}\nFAMILY = "performance-rnn"\n'
    (tmp_path / "x.py").write_text(code)
    assert family_literals(tmp_path / "x.py") == ["3: 'performance-rnn'"]


def test_every_spelling_names_one_family():
    for family in FAMILIES:
        for name in (family.name, family.checkpoint_model, *family.aliases):
            assert get_family(name) is family
            assert get_family(name.upper().replace("_", "-")) is family
