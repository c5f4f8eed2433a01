"""The fingerprint of the code a command runs: the SHA-256 of a module's source and of every poselift module it
imports, transitively. The workflow makes it a param of each rule (a change to the code a rule runs reruns
it, and changes its between-workflow cache key), and `poselift train --keep-state` stamps the resume state
with it (a kept state of other code is stale). Its own module, so that the workflow's wiring
(:mod:`poselift.workflow`, which no command imports) can change without retraining anything."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _package_imports(path: Path, package: str, root: str) -> set[str]:
    """Names of the modules of top-level package `root` that module file `path` (of `package`) imports,
    anywhere in it (also inside functions), or names in a string (a module loaded with importlib)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(f"{root}.")
              and all(part.isidentifier() for part in node.value.split("."))):
            names.add(node.value)  # a module named in a string (importlib.import_module, RegistryKeys)
    return {n for n in names if n == root or n.startswith(f"{root}.")}


def source_files(*modules: str, root: str = "poselift") -> list[Path]:
    """The source files of `modules` and of every `root` module they import (transitively), plus the data
    files beside them (e.g. the Bandai manifest), sorted."""
    seen, todo, files = set(), list(modules), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        files[path] = True
        for data in path.parent.iterdir():
            if data.is_file() and data.suffix not in (".py", ".pyc"):
                files[data] = True
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_package_imports(path, package, root) - seen)
    return sorted(files)


def code_digest(*modules: str, root: str = "poselift") -> str:
    """SHA-256 of :func:`source_files` of `modules` (their paths below `root`'s folder and their bytes)."""
    top = _module_file(root).parent
    digest = hashlib.sha256()
    for path in source_files(*modules, root=root):
        digest.update(str(path.relative_to(top.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
