"""Shared GPU-test helpers: vLLM detection, the tiny model built once per machine, a test engine."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
_VLLM_DIRS = ("VLLM_CACHE_ROOT", "VLLM_RPC_BASE_PATH", "TORCHINDUCTOR_CACHE_DIR", "TMPDIR")
#: Small enough to start fast, big enough that 16-32 requests share one continuous batch.
ENGINE_KW: dict[str, Any] = {"max_num_seqs": 32, "max_model_len": 2048,
                             "kv_cache_memory_bytes": 256 * 1024 * 1024}


def require_vllm() -> None:
    """Skip when vLLM cannot be imported; under CI=true that is a failure, not a skip."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken install (e.g. torchvision) counts too
        why = (f"vLLM is not importable ({type(exc).__name__}: {exc}); install it with "
               "pip install -e '.[gpu]' and remove torchvision torchaudio torchcodec")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)


def tiny_model_dir(root: Path | None = None) -> Path:
    """Where the tiny model for the builder's current parameters lives (keyed by their hash)."""
    from ops.gpu.tiny_model import default_model_dir

    return default_model_dir(root or os.environ.get("SLUICE_TEST_MODELS",
                                                    REPO / ".sluice" / "models"))


def ensure_tiny_model(root: Path | None = None) -> Path:
    """Build the tiny model unless a build with the same parameters is already cached."""
    from ops.gpu.tiny_model import build_tiny_model

    return build_tiny_model(tiny_model_dir(root))


def run_dir(tag: str) -> Path:
    """A per-process folder for vLLM's sockets, caches and temp files."""
    path = REPO / ".sluice" / "gpu-test" / f"{tag}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def quiet_vllm() -> None:
    """vLLM logs every step at INFO; tests only want its warnings."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@contextmanager
def running_engine(**overrides: Any) -> Iterator[Any]:
    """A started :class:`EngineHost` on the tiny model (12-60 s to start), shut down after.

    vLLM's folders (and TMPDIR) point into a per-process run folder while the engine lives;
    the previous environment is restored and the folder removed afterwards.
    """
    from workers.gpu.engine_host import EngineHost

    require_vllm()
    quiet_vllm()
    model = ensure_tiny_model()
    folder = run_dir("engine")
    saved = {k: os.environ.get(k) for k in _VLLM_DIRS}
    host = EngineHost(model, **{**ENGINE_KW, "served_model_name": "sluice-tiny-llama",
                                "run_dir": folder, **overrides})
    try:
        yield host.start()
    finally:
        host.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tempfile.tempdir = None
        shutil.rmtree(folder, ignore_errors=True)


def engine_processes() -> list[Any]:
    """This process's vLLM engine-core children (what dies when "the engine dies")."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found
