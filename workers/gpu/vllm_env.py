"""Point vLLM's sockets and caches at one folder per run, before vLLM is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: vLLM writes ZMQ sockets, compile caches and temp files here unless told otherwise; two runs
#: on one machine (tests next to a worker, CI next to a developer) must not share them.
_DIRS = {
    "VLLM_CACHE_ROOT": "vllm-cache",
    "VLLM_RPC_BASE_PATH": "rpc",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TMPDIR": "tmp",
}


def isolate_vllm_env(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Create ``run_dir`` and point vLLM's folders (and TMPDIR) inside it; return what was set.

    This changes the process environment on purpose: vLLM's engine process is spawned and
    inherits it. Call it before the first ``import vllm``.
    """
    root = Path(run_dir).resolve()
    values = {}
    for var, sub in _DIRS.items():
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        values[var] = str(path)
    os.environ.update(values)
    # tempfile caches its answer; forget it so this process's temp files follow TMPDIR too.
    tempfile.tempdir = None
    # No phoning home: the machines that run this have no network but the package registries.
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    return values
