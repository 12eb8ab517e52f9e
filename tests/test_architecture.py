"""The shape docs/architecture.md promises, checked on the source of every module in embedrec/.

Imports run one way: a module may import from its own room or a lower one, never from a
higher one. Every import counts, including those inside functions (a lazy import is still a
dependency) and those under `if TYPE_CHECKING:`. Besides: no function over 60 lines, no file
over 500 lines, and each import inside a function says in a comment why it is not at the top.
Each test prints every offender, not only the first.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "embedrec"

ROOMS: list[set[str]] = [
    # bottom: settings and helpers, the stores and the embedders, ranking metrics and splits
    {"__init__", "settings", "files", "vectors", "config", "progress", "output", "ranking"}
    | {"stores"}
    | {"embedders"},
    # the packaged datasets and the [data] tables
    {"data"},
    # what builds on them: ingestion, evaluation, and the test doubles that bench starts
    {"ingestion", "eval", "testing"},
    # the retrieval client and the HTTP service
    {"retrieval"},
    # entry points: the command line, the demo, the web app
    {"cli", "demo", "ui"},
]
ROOM_OF = {name: level for level, names in enumerate(ROOMS) for name in names}
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 500


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # dotted, e.g. embedrec.stores.base
    tree: ast.Module
    source: str

    @property
    def where(self) -> str:
        return str(self.path.relative_to(PACKAGE.parent))


def _parse_package() -> tuple[list[Module], list[str]]:
    """Every module of embedrec/, and the ones that do not parse (reported by a test of
    their own, so that one broken file does not hide the other checks)."""
    modules, broken = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        source = path.read_text(encoding="utf-8")
        try:
            tree = ast.parse(source, str(path))
        except SyntaxError as exc:
            broken.append(f"{rel}.py:{exc.lineno}: {exc.msg}")
            continue
        modules.append(Module(path, ".".join(parts), tree, source))
    return modules, broken


MODULES, BROKEN = _parse_package()


def test_every_module_parses() -> None:
    assert not BROKEN, "modules that do not parse:\n" + "\n".join(BROKEN)


def _room_name(module: str) -> str:
    """`embedrec.stores.base` -> "stores"; the package itself -> "__init__"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_submodule(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _targets(module: Module, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The embedrec modules an import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name.split(".")[0] == "embedrec")
        return
    base = node.module or ""
    if node.level:
        package = module.name.split(".")
        if module.path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    if base.split(".")[0] != "embedrec":
        return
    for alias in node.names:  # `from embedrec import settings` loads embedrec.settings
        sub = f"{base}.{alias.name}"
        yield sub if _is_submodule(sub) else base


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def test_every_module_has_a_room() -> None:
    homeless = sorted({_room_name(m.name) for m in MODULES} - ROOM_OF.keys())
    assert not homeless, (
        f"embedrec/{', embedrec/'.join(homeless)}: give each a room in ROOMS here and in "
        "docs/architecture.md"
    )


def test_imports_run_downwards() -> None:
    upward = []
    for module in MODULES:
        here = ROOM_OF.get(_room_name(module.name))
        for node in _imports(module.tree):
            for target in _targets(module, node):
                there = ROOM_OF.get(_room_name(target))
                if here is not None and there is not None and there > here:
                    upward.append(
                        f"{module.where}:{node.lineno}: {module.name} (room {here}) imports "
                        f"{target} (room {there})"
                    )
    assert not upward, "imports from a lower room into a higher one:\n" + "\n".join(upward)


def test_functions_are_short() -> None:
    long = []
    for module in MODULES:
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{module.where}:{node.lineno}: {node.name} is {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_files_are_short() -> None:
    long = [
        f"{m.where}: {n} lines"
        for m in MODULES
        if (n := len(m.source.splitlines())) > MAX_FILE_LINES
    ]
    assert not long, f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(long)


def _comment_lines(source: str) -> set[int]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0] for tok in tokens if tok.type == tokenize.COMMENT}


def _function_import_groups(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    """Runs of consecutive import statements directly inside a function body (or a block
    nested in one): each run needs one comment that says why it is imported late."""
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            for body in (getattr(node, f, None) for f in ("body", "orelse", "finalbody")):
                if not isinstance(body, list):
                    continue
                run: list[ast.stmt] = []
                for stmt in [*body, None]:
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        run.append(stmt)
                    elif run:
                        yield run
                        run = []


def test_function_level_imports_say_why() -> None:
    """A late import keeps `embedrec --help` fast or an optional extra optional; a comment
    on the import or the line above says which, so the next reader can tell it from habit."""
    silent = set()
    for module in MODULES:
        comments = _comment_lines(module.source)
        for run in _function_import_groups(module.tree):
            first, last = run[0].lineno, run[-1].end_lineno or run[-1].lineno
            if not comments & set(range(first - 1, last + 1)):
                names = ", ".join(ast.unparse(s).split(" import ")[0] for s in run)
                silent.add(f"{module.where}:{first}: {names}")
    assert not silent, "function-level imports without a reason comment:\n" + "\n".join(
        sorted(silent)
    )


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("embedrec.stores.base", "from embedrec.retrieval import client", ["room 0", "room 3"]),
        ("embedrec.embedders.cache", "from ..ingestion.datasets import load", ["room 2"]),
        ("embedrec.eval.bench.compare", "def f():\n    import embedrec.cli\n", ["room 4"]),
    ],
)
def test_the_import_check_catches_upward_imports(
    module: str, source: str, expected: list[str]
) -> None:
    """The checker itself: an upward import at module level, relative, or inside a function."""
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    fake = Module(path, module, ast.parse(source), source)
    here = ROOM_OF[_room_name(module)]
    found = [
        f"room {here} -> room {ROOM_OF[_room_name(t)]}"
        for node in _imports(fake.tree)
        for t in _targets(fake, node)
        if ROOM_OF[_room_name(t)] > here
    ]
    assert len(found) == 1 and all(e in found[0] for e in expected), found
