"""Load the OptScale authors' functions as a test oracle.

The authors' code (MIT) lives in ``../shared/data/reference/official/code``. It is a
reference, like scipy: tests call it and compare; no line of it goes into the package.
Their files are scripts (argument parsing and I/O at module level, heavy imports such as
torch or vllm), so instead of importing a file we parse it and execute only the
definitions we ask for, plus the imports that succeed here.

    import official  # tests/ is on sys.path under pytest
    oracle = official.load("SC/maj_vote.py", "majority_vote")
    oracle.majority_vote(...)
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest
from conftest import _shared_data


def code_dir() -> Path:
    """The authors' code directory; skips the calling test when it is absent."""
    data = _shared_data()
    path = data / "reference" / "official" / "code" if data is not None else None
    if path is None or not path.is_dir():
        pytest.skip("the authors' code is not here: put shared/ beside the repo or set OPTSCALE_DATA")
    return path


def source(relpath: str) -> str:
    """Text of one of the authors' files (relative to the code directory)."""
    return (code_dir() / relpath).read_text(encoding="utf-8")


def load(relpath: str, *names: str, extra: dict | None = None) -> types.SimpleNamespace:
    """Execute the named top-level definitions of one of the authors' files.

    Module-level imports are executed first; an import that fails here (vllm, a GPU-only
    package) is skipped, and so is any other statement. Top-level assignments are
    kept where they run (constants, compiled patterns), since definitions read them.

    Args:
        relpath: file relative to the code directory, e.g. ``"BoN_OptScale/utils.py"``.
        names: functions or classes to return; all top-level definitions are executed
            (they may call each other), but only these are checked for presence.
        extra: globals to provide before execution (stand-ins for skipped imports).

    Returns:
        A namespace whose attributes are the requested definitions.
    """
    path = code_dir() / relpath
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    ns: dict = {"__name__": f"official_{path.stem}", "__file__": str(path)}
    ns.update(extra or {})
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.module == "utils":
                # sibling module: load its definitions into the same namespace
                sib = load(str(Path(relpath).parent / "utils.py"), extra=extra)
                ns.update({k: v for k, v in vars(sib).items() if not k.startswith("__")})
                continue
            try:
                exec(compile(ast.Module([node], []), str(path), "exec"), ns)
            except Exception:  # noqa: BLE001 - an import this machine lacks
                continue
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            exec(compile(ast.Module([node], []), str(path), "exec"), ns)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            try:  # constants and compiled patterns; script-only assignments may fail here
                exec(compile(ast.Module([node], []), str(path), "exec"), ns)
            except Exception:  # noqa: BLE001
                continue
    missing = [n for n in names if n not in ns]
    if missing:
        raise AttributeError(f"{relpath} defines no {missing}")
    return types.SimpleNamespace(**{k: v for k, v in ns.items() if not k.startswith("__")})
