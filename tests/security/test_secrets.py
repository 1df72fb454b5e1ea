"""Known fake provider and client keys never show in logs, payloads, ledger, errors or CLI."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from typer.testing import CliRunner

from models.db.engine import make_engine
from models.domain.errors import SluiceError
from tests.e2e.frontdoor_support import mint, serve_frontdoor
from tests.security.conftest import FAKE_ANTHROPIC, FAKE_OPENAI, MARKERS, TEXT_FEATURE

pytestmark = pytest.mark.integration


def _req(model: str, content: str, feature: str = "title-rephrase") -> dict[str, Any]:
    return {"team": "catalog", "feature": feature, "user": "u1", "lane": "interactive",
            "request_id": f"sec-{uuid.uuid4().hex}", "model": model, "max_tokens": 20,
            "cache": {"mode": "bypass"},
            "messages": [{"role": "user", "content": content}]}


def _redis_dump(url: str, prefix: str) -> str:
    """Every value stored under ``prefix``, whatever its type, as one text."""
    r = redis.Redis.from_url(url)
    out: list[str] = []
    for key in r.scan_iter(match=f"{prefix}*", count=1000):
        kind = r.type(key).decode()
        if kind == "string":
            out.append(repr(r.get(key)))
        elif kind == "list":
            out += [repr(v) for v in r.lrange(key, 0, -1)]
        elif kind == "hash":
            out.append(repr(r.hgetall(key)))
        elif kind == "zset":
            out += [repr(v) for v in r.zrange(key, 0, -1)]
        elif kind == "set":
            out += [repr(v) for v in r.smembers(key)]
        out.append(repr(key))
    r.close()
    return "\n".join(out)


def _db_dump(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return "\n".join(repr(tuple(row)) for table in
                             ("ledger", "api_keys", "audit_log", "stored_text", "budgets")
                             for row in conn.execute(text(f"SELECT * FROM {table}")))
    finally:
        engine.dispose()


def _leaks(haystack: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in haystack]


def test_no_key_in_any_output(secret_gateway: Any, secret_settings: Any, secret_env: dict[str, str],
                              secret_worker: Path, standin: Any, pg_url: str,
                              caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                              ) -> None:
    caplog.set_level(logging.DEBUG)
    client_key = mint(pg_url, "catalog")
    secrets = [FAKE_OPENAI, FAKE_ANTHROPIC, *MARKERS, client_key, client_key.rsplit("-", 1)[1]]
    seen: list[str] = []
    payloads: list[str] = []
    answers: list[str] = []
    send = secret_gateway.app.send_task

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        # Exactly what goes on the wire as the task's body (arguments and options).
        payloads.append(json.dumps({"name": name, "args": args, **kwargs}, default=str))
        return send(name, *args, **kwargs)

    monkeypatch.setattr(secret_gateway.app, "send_task", spy)
    # Both providers answer with the fake keys (the stand-in accepts any key).
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):
        res = secret_gateway.complete(_req(model, f"Rephrase: lamp {model}"), timeout=30)
        assert res.model == model and res.text
        answers.append(res.text)
    opted = secret_gateway.complete(_req("gpt-4o-mini", "Where is my order?", TEXT_FEATURE),
                                    timeout=30)
    seen.append(opted.model_dump_json())
    # A provider refusing the key: the error crosses the queue and reaches the caller.
    standin.script_faults(["401"], model="gpt-4o")
    with pytest.raises(SluiceError) as failed:
        secret_gateway.complete(_req("gpt-4o", "Rephrase: chair"), timeout=30)
    seen += [str(failed.value), repr(failed.value), json.dumps(failed.value.to_dict())]
    # The HTTP front door: a good client key, a wrong one, and a request with the provider key.
    with serve_frontdoor(secret_settings) as door:
        ok = httpx.post(door + "/v1/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {client_key}"},
                        json={"model": "gpt-4o-mini", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "Rephrase: rug"}]})
        assert ok.status_code == 200, ok.text
        bad = httpx.post(door + "/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {client_key}x"},
                         json={"model": "gpt-4o-mini", "messages": []})
        assert bad.status_code == 401
        seen += [ok.text, bad.text]
    # The CLI with the keys in its environment.
    for name, value in secret_env.items():
        monkeypatch.setenv(name, value)
    from ops.cli import main as cli

    cli._mount_subcommands()
    runner = CliRunner()
    for args in (["spend", "--by", "team,feature", "--json"], ["keys", "list"],
                 ["audit", "--json"], ["budget", "list"], ["queues", "status", "--timeout", "0.2"]):
        out = runner.invoke(cli.app, args)
        seen.append(out.output + repr(out.exception or ""))
    prefix = secret_env["SLUICE_BROKER__KEY_PREFIX"]
    redis_text = _redis_dump(secret_env["SLUICE_BROKER__URL"], prefix)
    # Positive controls: the places searched really hold the payloads and results.
    assert "celery-task-meta" in redis_text and answers[0] in redis_text
    assert any("Rephrase: lamp" in p for p in payloads)
    worker_log = secret_worker.read_text(errors="replace")
    assert "Rephrase: lamp" in worker_log  # DEBUG logs the task arguments
    places = {"worker log": worker_log, "redis (payloads, results, cache)": redis_text,
              "database": _db_dump(pg_url), "in-process logs": caplog.text,
              "task payloads": "\n".join(payloads),
              "replies, errors and CLI output": "\n".join(seen)}
    found = {where: _leaks(hay, secrets) for where, hay in places.items()}
    assert not any(found.values()), f"secrets leaked: {found}"


def test_settings_never_print_keys(secret_settings: Any) -> None:
    dumped = repr(secret_settings) + secret_settings.model_dump_json() + str(secret_settings)
    assert not _leaks(dumped, [FAKE_OPENAI, FAKE_ANTHROPIC])
