"""The locked dependency set matches the venv, and pip-audit finds nothing that is not excused."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "ops" / "requirements.lock"
EXCEPTIONS = ROOT / "ops" / "audit-exceptions.txt"


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def _excused() -> dict[str, str]:
    out = {}
    for line in EXCEPTIONS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            vid, pkg, *reason = line.split(None, 2)
            assert reason, f"audit exception {vid} ({pkg}) gives no reason"
            out[vid] = pkg
    return out


def test_lock_pins_every_installed_runtime_dependency() -> None:
    pins = _lock()
    assert all(v for v in pins.values()), "every line of the lock pins one version with =="
    for dist in ("celery", "kombu", "sqlalchemy", "pydantic", "openai", "anthropic", "redis"):
        assert pins.get(dist) == metadata.version(dist), (
            f"{dist} {metadata.version(dist)} is installed but the lock says {pins.get(dist)}; "
            "regenerate: .venv/bin/pip freeze --exclude-editable > ops/requirements.lock")


def test_pip_audit_over_the_lock() -> None:
    exe = shutil.which("pip-audit", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("pip-audit is not installed (pip install pip-audit)")
    proc = subprocess.run([exe, "-r", str(LOCK), "--no-deps", "--disable-pip", "-f", "json",
                           "--progress-spinner", "off"], capture_output=True, text=True,
                          timeout=600)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.skip(f"pip-audit could not reach vulnerability data: {proc.stderr[-300:]}")
    deps = report["dependencies"]
    audited = [d for d in deps if "skip_reason" not in d]
    if not audited:
        # PyPI answered but holds no record of these exact versions: nothing to check against.
        pytest.skip(f"PyPI had vulnerability data for none of {len(deps)} locked packages")
    found = {v["id"]: d["name"] for d in audited for v in d.get("vulns", [])}
    excused = _excused()
    new = {k: v for k, v in found.items() if k not in excused}
    assert not new, f"fix these or list them with a reason in {EXCEPTIONS.name}: {new}"
    stale = set(excused) - set(found)
    assert not stale, f"no longer reported, remove from {EXCEPTIONS.name}: {sorted(stale)}"
