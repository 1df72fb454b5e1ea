"""Imports point one way (models <- scheduler <- queues <- workers; ops on top)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.lower().replace("0 broken", "")


def test_importing_every_module_does_no_work() -> None:
    # Nothing at import time: importing every package module must not open sockets,
    # read settings or build clients. A subprocess with no network-capable env proves it
    # quickly by importing everything and checking no thread or socket was started.
    code = (
        "import pkgutil, importlib, threading, socket\n"
        "opened = []\n"
        "orig = socket.socket.connect\n"
        "socket.socket.connect = lambda self, *a: opened.append(a) or orig(self, *a)\n"
        "before = threading.active_count()\n"
        "for pkg in ('models', 'scheduler', 'queues', 'workers', 'ops'):\n"
        "    mod = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(mod.__path__, pkg + '.'):\n"
        "        if '__main__' in info.name: continue\n"
        "        importlib.import_module(info.name)\n"
        "assert not opened, opened\n"
        "assert threading.active_count() == before, threading.enumerate()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
