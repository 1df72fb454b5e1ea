"""``POST /v1/feedback`` through the front door: an outcome for the key's own request only."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from models.db.tables import FeedbackRow
from tests.e2e.frontdoor_support import mint, user

pytestmark = pytest.mark.integration


def test_feedback_joins_the_callers_request_and_refuses_anyone_elses(
        client: openai.OpenAI, door: str, pg_url: str, sessions: Any) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="cheap", max_tokens=10, messages=[user("Label this review: great mug")],
        extra_headers={"x-sluice-feature": "review-labels"})
    rid = raw.http_response.headers["x-sluice-request-id"]
    key = client.api_key
    ok = httpx.post(f"{door}/v1/feedback", json={"request_id": rid, "thumb": -1},
                    headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200 and ok.json()["recorded"] is True
    with sessions() as s:
        rows = s.scalars(select(FeedbackRow).where(FeedbackRow.request_id == rid)).all()
    assert [(r.feature, r.tier, r.thumb) for r in rows] == [("review-labels", "cheap", -1)]
    stranger = httpx.post(f"{door}/v1/feedback", json={"request_id": rid, "thumb": 1},
                          headers={"authorization": f"Bearer {mint(pg_url, 'other-team')}"})
    assert stranger.status_code == 400
    assert stranger.json()["error"]["param"] == "request_id"
    bad = httpx.post(f"{door}/v1/feedback", json={"request_id": rid, "thumb": 5},
                     headers={"authorization": f"Bearer {key}"})
    assert bad.status_code == 400 and "thumb" in bad.json()["error"]["message"]
