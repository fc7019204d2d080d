"""The module map in docs/design-notes.md section 8 matches the code.

Every module of ``telethon_guard`` and ``telethon_guard_cli`` is in exactly one row of the map's
tables, and every import it makes of another of our modules (read with ``ast``; imports inside
functions count, ``TYPE_CHECKING`` ones only where the row says ``(types)``) is in that row's
"may import" list. So the map cannot drift from the code: a new module without a row, or an
import the map does not allow, fails here.
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import re
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("telethon_guard", "telethon_guard_cli")
MAP = ROOT / "docs" / "design-notes.md"
HEADER = "| module | owns | may import |"


def _dotted(path: pathlib.Path) -> str:
    """``telethon_guard/storage/memory.py`` -> ``storage.memory``; the package itself ->
    ``telethon_guard``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] == "telethon_guard" and len(parts) > 1:
        parts.pop(0)
    return ".".join(parts)


def our_modules() -> dict[str, pathlib.Path]:
    return {_dotted(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _full(dotted: str) -> str:
    return dotted if dotted.split(".")[0] in PACKAGES else f"telethon_guard.{dotted}"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    ids.update(id(n) for n in ast.walk(stmt))
    return ids


def imports_of(
    dotted: str, path: pathlib.Path, mods: dict[str, pathlib.Path]
) -> tuple[set[str], set[str]]:
    """(runtime imports, TYPE_CHECKING-only imports) of one module, as dotted names of ours."""
    by_full = {_full(m): m for m in mods}

    def ours(name: str) -> str | None:
        while name and name not in by_full:
            name = name.rpartition(".")[0]
        return by_full.get(name)

    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = _type_checking_nodes(tree)
    runtime: set[str] = set()
    types: set[str] = set()
    here = _full(dotted).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [ours(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                sub = f"{prefix}.{alias.name}"
                targets.append(by_full[sub] if sub in by_full else ours(prefix))
        for target in targets:
            if target is not None and target != dotted:
                (types if id(node) in typing_only else runtime).add(target)
    return runtime, types - runtime


@dataclass
class Row:
    modules: list[str]
    allowed: list[str] = field(default_factory=list)
    allowed_types: list[str] = field(default_factory=list)
    below: bool = False
    line: int = 0


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _module_of_cell(path: str) -> str:
    p = pathlib.Path(path)
    if p.parts[0] not in PACKAGES:
        p = pathlib.Path("telethon_guard") / p
    return _dotted(ROOT / p)


def parse_map(text: str) -> list[list[Row]]:
    """The tables of section 8, each a list of rows (in order)."""
    section = text[text.index("## 8. Module map"):]
    offset = text[: text.index("## 8. Module map")].count("\n")
    tables: list[list[Row]] = []
    current: list[Row] | None = None
    for n, line in enumerate(section.splitlines(), start=offset + 1):
        if line.strip() == HEADER:
            current = []
            tables.append(current)
            continue
        if current is None or not line.startswith("|"):
            current = None if not line.startswith("|") else current
            continue
        cells = _cells(line)
        if set(cells[0]) <= {"-", " "}:
            continue
        assert len(cells) == 3, f"design-notes.md:{n}: a row needs 3 cells: {line}"
        names = re.findall(r"`([^`]+)`", cells[0])
        assert names, f"design-notes.md:{n}: no `module` in the first cell"
        row = Row([_module_of_cell(name) for name in names], line=n)
        spec = cells[2].replace("`", "").strip()
        if spec == "every module below":
            row.below = True
        elif spec != "nothing":
            for item in (i.strip() for i in spec.split(",")):
                m = re.fullmatch(r"([A-Za-z_][\w.*]*)( \(types\))?", item)
                assert m, f"design-notes.md:{n}: cannot read {item!r} in the may-import list"
                (row.allowed_types if m.group(2) else row.allowed).append(m.group(1))
        current.append(row)
    return tables


def _allows(patterns: list[str], module: str) -> bool:
    return any(fnmatch.fnmatchcase(module, p) for p in patterns)


def test_the_map_lists_every_module_once_and_its_imports() -> None:
    mods = our_modules()
    tables = parse_map(MAP.read_text(encoding="utf-8"))
    rows_of: dict[str, list[Row]] = {}
    problems: list[str] = []
    for table in tables:
        for i, row in enumerate(table):
            if row.below:
                row.allowed = [m for later in table[i + 1:] for m in later.modules]
            for module in row.modules:
                if module not in mods:
                    problems.append(f"design-notes.md:{row.line}: {module} is not a module")
                rows_of.setdefault(module, []).append(row)
            for pattern in row.allowed + row.allowed_types:
                if not any(fnmatch.fnmatchcase(m, pattern) for m in mods):
                    problems.append(
                        f"design-notes.md:{row.line}: may import {pattern}: no such module"
                    )
    for module, path in mods.items():
        rows = rows_of.get(module, [])
        if len(rows) != 1:
            problems.append(f"{module}: in {len(rows)} rows of the module map (must be 1)")
            continue
        row = rows[0]
        runtime, types = imports_of(module, path, mods)
        for target in sorted(runtime):
            if not _allows(row.allowed, target):
                problems.append(f"{module} imports {target}: not in its may-import list")
        for target in sorted(types):
            if not _allows(row.allowed + row.allowed_types, target):
                problems.append(f"{module} imports {target} (types): not in its may-import list")
    drift = "\n".join(problems)
    assert not problems, (
        f"module map (docs/design-notes.md section 8) drifted:\n{drift}\n"
        "Give a new module its row, or add the import to its row's may-import list (or drop "
        "the import if it breaks the layering the section describes).")


def test_the_checker_sees_a_drift() -> None:
    """The check can fail: a module missing from the map and an import the map does not allow."""
    mods = our_modules()
    text = MAP.read_text(encoding="utf-8")
    rows = {m: r for table in parse_map(text) for r in table for m in r.modules}
    assert "keys" in rows and rows["keys"].allowed == ["_tl"]
    runtime, _ = imports_of("keys", mods["keys"], mods)
    assert runtime <= {"_tl"}
    # the test server imports nothing of the guard but _tl
    for module, path in mods.items():
        if module.startswith("testing"):
            runtime, types = imports_of(module, path, mods)
            assert {t for t in runtime | types if not t.startswith("testing")} <= {"_tl"}, module
    # a row removed is noticed
    without = text.replace("| `keys.py` |", "| `keys_gone.py` |")
    assert "keys" not in {m for table in parse_map(without) for r in table for m in r.modules}


def test_the_method_lists_have_one_source() -> None:
    """Which methods are sends / file transfers is written once, in ``_tl`` (the one module the
    test server shares with the guard); every other module only refers to it."""
    from telethon_guard import _tl, keys
    from telethon_guard.testing import faults

    assert keys.SEND_METHODS is _tl.SEND_METHODS and keys.TRANSFER_METHODS is _tl.TRANSFER_METHODS
    assert faults.TRANSFER_METHODS is _tl.TRANSFER_METHODS
    assert faults.SEND_METHODS is _tl.POST_METHODS and _tl.POST_METHODS <= _tl.SEND_METHODS
    names = {"SEND_METHODS", "TRANSFER_METHODS", "POST_METHODS"}
    defined_in: dict[str, list[str]] = {}
    for module, path in our_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = (node.target if isinstance(node, ast.AnnAssign)
                      else node.targets[0] if isinstance(node, ast.Assign) else None)
            value = getattr(node, "value", None)
            if (isinstance(target, ast.Name) and target.id in names
                    and isinstance(value, (ast.Call, ast.BinOp, ast.Set))):
                defined_in.setdefault(target.id, []).append(module)
    assert defined_in == {name: ["_tl"] for name in names}
