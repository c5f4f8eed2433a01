"""CLI subcommands: each module has ``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import importlib


class RegistryKeys:
    """The keys of a registry dict, imported on first use: argparse ``choices`` (with a ``metavar``) that do
    not load torch when the CLI starts. The command's ``run`` imports the same registry statically."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def _keys(self) -> list[str]:
        return sorted(getattr(importlib.import_module(self.module), self.name))

    def __contains__(self, key) -> bool:
        return key in self._keys()

    def __iter__(self):
        return iter(self._keys())
