"""Where ladders come from: the settings, and a ladders file reloaded when it changes.

``SLUICE_ROUTING__LADDERS`` (JSON) gives ladders at deploy time; ``SLUICE_ROUTING__LADDERS_PATH``
names a JSON file ``{"<feature>": {...ladder...}}`` that wins over them and is re-read when its
modification time changes (looked at most every ``reload_s``), so an operator's
``sluice ladders set`` takes effect in running producers without a deploy.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.domain.errors import ConfigError
from models.domain.request import ChatRequest
from scheduler.router.ladder import FeatureLadder, ladder_from_dict

log = logging.getLogger(__name__)


class LadderBook:
    """Every feature's ladder, as the settings and the ladders file say right now."""

    def __init__(self, static: Mapping[str, dict[str, Any]] | None = None,
                 path: str | Path | None = None, *, reload_s: float = 1.0) -> None:
        self._static = {f: ladder_from_dict(f, d) for f, d in (static or {}).items()}
        self.path = Path(path) if path else None
        self.reload_s = reload_s
        self._lock = threading.Lock()
        self._file: dict[str, FeatureLadder] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._classifiers: dict[str, Any] = {}
        if self.path is not None:
            self._reload(force=True)

    @classmethod
    def from_settings(cls, routing: Any) -> LadderBook:
        """The book ``RoutingSettings`` describe."""
        return cls(getattr(routing, "ladders", None) or {},
                   getattr(routing, "ladders_path", None))

    def for_feature(self, feature: str) -> FeatureLadder | None:
        """The feature's ladder, else the ``*`` ladder, else None (the global tiers)."""
        self._reload()
        book = {**self._static, **self._file}
        return book.get(feature) or book.get("*")

    def all(self) -> dict[str, FeatureLadder]:
        """Every configured ladder by feature (the file's over the settings')."""
        self._reload()
        return {**self._static, **self._file}

    def fingerprint(self, feature: str, request: ChatRequest | None = None) -> str:
        """What decides ``feature``'s ``auto`` route besides the prompt: the ladder's config
        and the caller's task-type hint ("" when the feature has no ladder)."""
        ladder = self.for_feature(feature)
        if ladder is None:
            return ""
        hint = request.tags.get("task_type", "") if request is not None else ""
        return f"ladder:{ladder.fingerprint}:{hint}"

    def classifier(self, ladder: FeatureLadder) -> Any:
        """The ladder's task-type classifier, loaded once (None when it has none)."""
        if not ladder.classifier:
            return None
        with self._lock:
            if ladder.classifier not in self._classifiers:
                from scheduler.router.task_classifier import load_classifier

                self._classifiers[ladder.classifier] = load_classifier(ladder.classifier)
            return self._classifiers[ladder.classifier]

    def _reload(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < self.reload_s:
            return
        with self._lock:
            self._checked = now
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._file, self._stamp = {}, None
                return
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            try:
                self._file = read_ladders(self.path)
            except ConfigError as err:
                # A bad edit must not stop routing: keep the ladders read last, say why.
                log.error("ladders file %s not reloaded: %s", self.path, err.message)
                if force:
                    raise
            self._stamp = stamp


def read_ladders(path: str | Path) -> dict[str, FeatureLadder]:
    """Ladders from a JSON file ``{"<feature>": {...}}``; a ConfigError says what is wrong."""
    src = Path(path)
    try:
        data = json.loads(src.read_text("utf-8") or "{}")
    except OSError as exc:
        raise ConfigError(f"cannot read ladders file {src}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"ladders file {src} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"ladders file {src} must map feature names to ladders")
    return {str(f): ladder_from_dict(str(f), d) for f, d in data.items()}


def write_ladders(path: str | Path, ladders: Mapping[str, FeatureLadder]) -> None:
    """Replace the ladders file atomically (a reader sees the old file or the new one)."""
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({f: lad.to_dict() for f, lad in sorted(ladders.items())},
                              indent=2, sort_keys=True) + "\n", "utf-8")
    os.replace(tmp, dst)


_SHARED: dict[str, LadderBook] = {}
_SHARED_LOCK = threading.Lock()


def shared_book(routing: Any) -> LadderBook | None:
    """One book per ladder configuration in this process (the worker's quality guard and the
    floor read it); None when the settings configure no ladders."""
    if not (getattr(routing, "ladders", None) or getattr(routing, "ladders_path", None)):
        return None
    key = json.dumps([routing.ladders or {}, str(routing.ladders_path or "")],
                     sort_keys=True, default=str)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = LadderBook.from_settings(routing)
        return _SHARED[key]
