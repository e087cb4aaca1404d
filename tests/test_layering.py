"""The import direction between tinysr's roles: the library never imports the command line
(``tinysr.cli``), and the network (``tinysr.nn``) never imports ``tinysr.distributed``.

Checked twice: statically, every import statement of every module (a ``python -m`` alias's
``if __name__ == "__main__":`` block, which runs only as a program, excepted), and for real, by
importing every library module in a fresh interpreter and looking at ``sys.modules``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import tinysr

PACKAGE = Path(tinysr.__file__).parent
PROGRAMS = {"__main__"}  # tinysr/__main__.py: the ``tinysr`` command as ``python -m tinysr``


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if "cli" not in p.relative_to(PACKAGE).parts[:1] and p.stem not in PROGRAMS)


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _imports(path: Path, package: str | None = None) -> list[str]:
    """Every module ``path`` imports (absolute or relative to ``package``, by default its own),
    outside ``if __name__ == "__main__":``."""
    found: list[str] = []
    if package is None:
        package = _module(path).rsplit(".", 1)[0] if path.stem != "__init__" else _module(path)

    def visit(node: ast.AST) -> None:
        if _is_main_block(node):
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append(base)
            found.extend(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _crossing(modules: list[Path], forbidden: str, package: str | None = None) -> list[str]:
    return [f"{p.name} imports {name}" for p in modules for name in _imports(p, package)
            if name == forbidden or name.startswith(forbidden + ".")]


def test_the_library_never_imports_the_command_line():
    modules = _library_modules()
    assert len(modules) > 30 and any(p.name == "api.py" for p in modules)  # the check sees the library
    assert _crossing(modules, "tinysr.cli") == []


def test_nn_never_imports_distributed():
    modules = sorted((PACKAGE / "nn").glob("*.py"))
    assert any(p.name == "training.py" for p in modules)
    assert _crossing(modules, "tinysr.distributed") == []


def test_the_static_check_sees_a_crossing(tmp_path):
    """The checker itself: an import of the command line, absolute or relative, is found; one in a
    ``__main__`` block is not."""
    fake = tmp_path / "probe.py"  # read as a module of tinysr.nn
    fake.write_text("from tinysr.cli.common import OneLineParser\nfrom ..cli import entry\n"
                    "def f():\n    import tinysr.distributed.mpi\n"
                    "if __name__ == '__main__':\n    import tinysr.cli.train\n")
    found = _crossing([fake], "tinysr.cli", "tinysr.nn")
    assert found == [f"probe.py imports {m}" for m in
                     ("tinysr.cli.common", "tinysr.cli.common.OneLineParser", "tinysr.cli", "tinysr.cli.entry")]
    assert _crossing([fake], "tinysr.distributed", "tinysr.nn") == ["probe.py imports tinysr.distributed.mpi"]


def test_importing_the_whole_library_loads_no_command_line_module():
    """For real: every library module imported (optional extras that are missing skipped), and
    still no ``tinysr.cli`` module is loaded; ``tinysr.nn`` alone loads no ``tinysr.distributed``."""
    names = [_module(p) for p in _library_modules()]
    code = ("import importlib, json, sys\n"
            "import tinysr.nn.training, tinysr.nn.serialization\n"
            "nn_only = sorted(m for m in sys.modules if m.startswith('tinysr.distributed'))\n"
            f"for name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except ImportError:\n        pass\n"
            "print(json.dumps({'cli': sorted(m for m in sys.modules if m.startswith('tinysr.cli')),\n"
            "                  'nn': nn_only, 'loaded': len([m for m in sys.modules if m.startswith('tinysr')])}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["loaded"] > 20
    assert seen["cli"] == []
    assert seen["nn"] == []
