"""A finished Gemini embedding batch read into vectors, or into an error that bills it right."""

from __future__ import annotations

import pytest
from google.genai import types as t

from models.domain.errors import ProviderRetryable
from workers.embeddings.gemini_batch import GeminiEmbeddingBatch


def _answer(values: list[float] | None, tokens: int = 3) -> t.InlinedEmbedContentResponse:
    if values is None:
        return t.InlinedEmbedContentResponse(error=t.JobError(code=500, message="internal"))
    return t.InlinedEmbedContentResponse(response=t.SingleEmbedContentResponse(
        embedding=t.ContentEmbedding(values=values), token_count=tokens))


def _job(state: str, answers: list[t.InlinedEmbedContentResponse]) -> t.BatchJob:
    return t.BatchJob(name="batches/b1", state=t.JobState(state),
                      dest=t.BatchJobDestination(inlined_embed_content_responses=answers))


def _reply(job: t.BatchJob, n: int):  # type: ignore[no-untyped-def]
    # _reply reads only the job: no client is needed (the constructor would build one).
    return GeminiEmbeddingBatch._reply(object.__new__(GeminiEmbeddingBatch), "batches/b1",
                                       job, n)


def test_a_failed_batch_with_some_answers_is_charged_as_possibly_billed() -> None:
    # The provider bills what it embedded: two of three vectors came back before it failed.
    job = _job("JOB_STATE_FAILED", [_answer([0.1, 0.2]), _answer([0.3, 0.4])])
    with pytest.raises(ProviderRetryable) as err:
        _reply(job, 3)
    assert err.value.details["billed"] == "unknown"


def test_a_failed_batch_with_no_answer_billed_nothing() -> None:
    with pytest.raises(ProviderRetryable) as err:
        _reply(_job("JOB_STATE_FAILED", []), 2)
    assert err.value.details.get("billed") is None


def test_a_successful_batch_with_an_input_error_is_possibly_billed() -> None:
    job = _job("JOB_STATE_SUCCEEDED", [_answer([0.1]), _answer(None)])
    with pytest.raises(ProviderRetryable) as err:
        _reply(job, 2)
    assert err.value.details["billed"] == "unknown"


def test_a_batch_cancelled_after_every_input_was_embedded_is_collected() -> None:
    # A cancel that came too late: every vector is there and billed, so it is used, not re-sent.
    job = _job("JOB_STATE_CANCELLED", [_answer([0.1, 0.2], 4), _answer([0.3, 0.4], 5)])
    reply = _reply(job, 2)
    assert len(reply.vectors) == 2 and reply.prompt_tokens == 9 and reply.exact
