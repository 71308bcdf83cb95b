"""Fault injection for the tests, in no production module: Python imports this file when a process starts, in every
process that has this folder on PYTHONPATH (tests/test_poison.py puts it there for a job; the job's Ray workers
inherit its environment).

With VITMAE_FAULT_EXIT_ON=TEXT, a model actor that meets an image whose path holds TEXT exits at once, as the kernel's
out-of-memory killer would end it. With VITMAE_FAULT_HANG_AFTER=N, a model actor runs N batches and then hangs on every
later one, as a stuck device would. `Embedder._embed`, which sees the paths of the images it runs, is wrapped as soon
as `pipeline.embed.embedder` is imported. Without the variables nothing is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time
from types import ModuleType

EXIT_ON = os.environ.get("VITMAE_FAULT_EXIT_ON", "")
HANG_AFTER = int(os.environ.get("VITMAE_FAULT_HANG_AFTER", "0"))
MODULE = "pipeline.embed.embedder"


def _inject(embedder: ModuleType) -> None:
    """Wraps `Embedder._embed` so that the process exits on a path that holds EXIT_ON, and hangs after HANG_AFTER
    batches."""
    embed = embedder.Embedder._embed
    calls = []

    def _embed(self, rows, paths):
        if EXIT_ON and any(EXIT_ON in path for path in paths):
            os._exit(1)
        calls.append(len(paths))
        if HANG_AFTER and len(calls) > HANG_AFTER:
            time.sleep(3600)
        return embed(self, rows, paths)

    embedder.Embedder._embed = _embed


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds `MODULE` as Python's own finders do, and wraps it once it has run."""

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)  # a module is imported once a process
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            _inject(module)

        spec.loader.exec_module = exec_module
        return spec


if EXIT_ON or HANG_AFTER:
    sys.meta_path.insert(0, _WrapOnImport())
