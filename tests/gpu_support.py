"""Shared GPU-test helpers: vLLM detection, the tiny model built once per machine, a test engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
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


def start_test_engine(**overrides: Any) -> Any:
    """Start an :class:`EngineHost` on the tiny model (12-60 s); the caller shuts it down."""
    from workers.gpu.engine_host import EngineHost

    require_vllm()
    quiet_vllm()
    model = ensure_tiny_model()
    kw = {**ENGINE_KW, "served_model_name": "sluice-tiny-llama", "run_dir": run_dir("engine"),
          **overrides}
    return EngineHost(model, **kw).start()


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
