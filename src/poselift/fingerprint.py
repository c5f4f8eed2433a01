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


def _package_dir(root: str) -> Path | None:
    """The folder of top-level package `root` (finding it imports nothing but `root` itself)."""
    try:
        spec = importlib.util.find_spec(root)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _module_file(name: str, root: str, top: Path) -> Path | None:
    """The source file of module `name` of package `root` (folder `top`), found on disk: importlib's
    find_spec would import every parent package of `name` (torch with it), which made each Snakemake
    start, and so each workflow job, seconds slower. None for a name that is no module (a class, a
    function: `from poselift.models import MODELS` names both)."""
    parts = name.split(".")
    if parts[0] != root or not all(part.isidentifier() for part in parts):
        return None
    base = top.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py") if len(parts) > 1 else None):
        if path is not None and path.is_file():
            return path
    return None


_PARSED: dict[tuple[str, str, str, str], frozenset[str]] = {}  # (path, package, root, source) -> names


def _package_imports(path: Path, package: str, root: str) -> frozenset[str]:
    """Names of the modules of top-level package `root` that module file `path` (of `package`) imports,
    anywhere in it (also inside functions), or names in a string (a module loaded with importlib). Kept by
    source text: the workflow digests nine commands that share most of their modules."""
    source = path.read_text()
    key = (str(path), package, root, source)
    if key not in _PARSED:
        _PARSED[key] = frozenset(_parse_imports(source, path, package, root))
    return _PARSED[key]


def _parse_imports(source: str, path: Path, package: str, root: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source, str(path))):
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
    top = _package_dir(root)
    if top is None:
        return []
    seen, todo, files = set(), list(modules), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name, root, top)
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
    top = _package_dir(root)
    digest = hashlib.sha256()
    for path in source_files(*modules, root=root):
        digest.update(str(path.relative_to(top.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
