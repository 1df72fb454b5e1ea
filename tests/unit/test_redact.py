"""Secrets never reach a log line or an error message."""

from __future__ import annotations

import logging

from models.domain.redact import MASK, RedactingFilter, Redactor, install
from workers.providers.errors import map_sdk_error


def test_known_secrets_and_key_shapes_are_masked() -> None:
    r = Redactor(["my-very-secret-value"])
    assert r("key=my-very-secret-value!") == f"key={MASK}!"
    assert r("Incorrect API key provided: sk-proj-abcdefghijklmnop1234") == \
        f"Incorrect API key provided: {MASK}"
    assert r("nothing secret here") == "nothing secret here"


def test_log_records_are_redacted(caplog: object) -> None:
    logger = logging.getLogger("sluice.test.redact")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    install(Redactor(["topsecret-token-123"]), [logger])
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1,
                               "calling with %s", ("topsecret-token-123",), None)
    for f in handler.filters:
        assert isinstance(f, RedactingFilter)
        f.filter(record)
    assert "topsecret" not in record.getMessage() and MASK in record.getMessage()
    logger.removeHandler(handler)


def test_provider_errors_do_not_echo_keys() -> None:
    class Fake(Exception):
        status_code = 401
        body = {"error": {"message": "Incorrect API key provided: sk-abcdefghijklmnopqrstu."}}

    err = map_sdk_error("openai", Fake())
    assert "sk-abcdefghijklmnopqrstu" not in err.message and MASK in err.message
