"""The shape docs/architecture.md promises, checked on the source of every module in embedrec/.

Imports run one way and without cycles: import-linter checks the contracts in pyproject.toml
(`lint-imports`; every import counts, inside functions and under `if TYPE_CHECKING:` too),
and the test here runs it. What import-linter cannot see, an import by string (a registry
table such as `REGISTRY` in stores/__init__.py or `COMMANDS` in cli.py, `import_module` of a
literal), is resolved here and held to the same layers. Besides: no function over 60 lines,
no file over 500 lines, no folder with more than 15 modules side by side, and each import
inside a function says in a comment why it is not at the top. Each test prints every
offender, not only the first.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "embedrec"

MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 500
MAX_MODULES_PER_FOLDER = 15


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


def test_folders_hold_at_most_15_modules() -> None:
    """Modules side by side: a folder's .py files besides __init__.py, and its packages."""
    crowded = []
    for folder in [PACKAGE, *(p.parent for p in PACKAGE.rglob("*/__init__.py"))]:
        files = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        packages = [p for p in folder.iterdir() if (p / "__init__.py").is_file()]
        if len(files) + len(packages) > MAX_MODULES_PER_FOLDER:
            crowded.append(f"{folder.relative_to(ROOT)}: {len(files) + len(packages)} modules")
    assert not crowded, f"folders over {MAX_MODULES_PER_FOLDER} modules:\n" + "\n".join(crowded)


# ---------------------------------------------------------------------- import contracts


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on pyproject.toml's contracts, over the package found on `pythonpath`
    (default: this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath or ROOT)}
    run = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"
    command = [sys.executable, "-c", run, "--no-cache", "--config", str(ROOT / "pyproject.toml")]
    return subprocess.run(
        command, cwd=pythonpath or ROOT, env=env, capture_output=True, text=True, check=False
    )


def test_import_contracts_are_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("where", "line", "contract"),
    [
        # a store importing an embedder: stores and embedders are independent layers
        ("stores/results.py", "from embedrec.embedders import text", "Rooms import only"),
        # a lazy upward import from ingestion into evaluation
        ("ingestion/summary.py", "def f():\n    import embedrec.eval.bench.compare", "Rooms"),
        # one evaluation room reaching into another
        ("eval/bench/plots.py", "from embedrec.eval.models import params", "do not import"),
        # a cycle inside one room (faiss/store imports hits)
        ("stores/faiss/hits.py", "from embedrec.stores.faiss import store", "No import cycles"),
    ],
)
def test_the_contracts_catch(tmp_path: Path, where: str, line: str, contract: str) -> None:
    """The contracts themselves: each planted import breaks the contract named."""
    copy = tmp_path / "embedrec"
    subprocess.run(["cp", "-r", str(PACKAGE), str(copy)], check=True)
    with (copy / where).open("a", encoding="utf-8") as f:
        f.write("\n" + line + "\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout


def _layers() -> list[list[str]]:
    """The "rooms" layers contract of pyproject.toml, top first: each layer's modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    rooms = next(c for c in contracts if c["id"] == "rooms")
    (container,) = rooms["containers"]
    return [
        [f"{container}.{name.strip()}" for name in re.split(r"[|:]", layer)]
        for layer in rooms["layers"]
    ]


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    for level, names in enumerate(layers):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    return None


DOTTED = re.compile(r"^embedrec(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_]\w*)?$")


def _string_imports(module: Module) -> Iterator[tuple[int, str]]:
    """Every string literal that names an embedrec module ("embedrec.x.y" or
    "embedrec.x.y:attr"): registry tables, `import_module` arguments, COMMANDS."""
    for node in ast.walk(module.tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and DOTTED.match(node.value)
        ):
            yield node.lineno, node.value.split(":")[0]


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _string_import_problems(module: Module, layers: list[list[str]]) -> Iterator[str]:
    here = _layer_of(module.name, layers)
    for line, target in _string_imports(module):
        where = f"{module.where}:{line}: {module.name} names {target!r}"
        if not _is_module(target):
            if _is_module(".".join(target.split(".")[:2])):  # else a name such as a logger's
                yield f"{where}, which is no module"
            continue
        there = _layer_of(target, layers)
        if here is not None and there is not None and there < here:
            yield f"{where}, a higher layer ({layers[there]} over {layers[here]})"
        rooms = [m.split(".")[:3] for m in (module.name, target)]
        in_eval = all(r[:2] == ["embedrec", "eval"] and len(r) == 3 for r in rooms)
        if in_eval and rooms[0] != rooms[1]:
            yield f"{where}, another evaluation room"


def test_imports_by_string_follow_the_layers() -> None:
    layers = _layers()
    problems = [p for m in MODULES for p in _string_import_problems(m, layers)]
    assert not problems, "imports by string against the layers:\n" + "\n".join(problems)


def test_the_registries_name_modules_the_string_check_sees() -> None:
    """The registry tables hold literal module names (which the check above resolves), and
    each names a module that exists; an embedder kind is a module inside embedrec.embedders
    by construction (`embedrec.embedders.<kind>`)."""
    from embedrec.cli import COMMANDS
    from embedrec.data.registry import DATASETS
    from embedrec.stores import REGISTRY
    from embedrec.stores.lifecycle.aliases import BOOKS

    named = [
        *COMMANDS,
        *(d.loader.split(":")[0] for d in DATASETS.values()),
        *(module for module, _, _ in REGISTRY.values()),
        *(module for module, _ in BOOKS.values()),
    ]
    found = {target for m in MODULES for _, target in _string_imports(m)}
    assert set(named) <= found
    assert all(_is_module(n) for n in named), [n for n in named if not _is_module(n)]
    assert _is_module("embedrec.embedders.two_tower")


def test_the_string_check_catches(tmp_path: Path) -> None:
    """An `import_module("embedrec.retrieval.client")` planted in stores/results.py, and a
    registry entry in one evaluation room naming another."""
    layers = _layers()
    planted = {
        "embedrec.stores.results": 'importlib.import_module("embedrec.retrieval.client")',
        "embedrec.eval.bench.compare": 'KINDS = {"x": "embedrec.eval.drift.gauges:drift"}',
    }
    for name, source in planted.items():
        path = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
        fake = Module(path, name, ast.parse(source), source)
        assert list(_string_import_problems(fake, layers)), name
