"""The cache key: every request field declared, each keyed field changes it, scopes never mix."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from models.domain.cache_key import (DECLARED, Role, _ns, cache_key, model_fingerprint,
                                     scope_of, undeclared_fields)
from models.domain.cache_policy import FeatureCachePolicy, PolicyBook
from models.domain.request import ChatRequest, parse_request
from models.domain.result import ChatResult, Route
from models.domain.settings import RoutingSettings, load_settings
from queues.memory_cache import MemoryResponseCache

ROUTING = RoutingSettings()


def req(**kw: Any) -> ChatRequest:
    data: dict[str, Any] = {"team": "support", "feature": "faq",
                            "messages": [{"role": "user", "content": "How do I reset it?"}]}
    data.update(kw)
    return parse_request(data)


def key_of(request: ChatRequest, **policy: Any) -> str:
    book = PolicyBook({request.feature: FeatureCachePolicy(**policy)}, 3600)
    k = cache_key(request, book.get(request.feature), model_fingerprint(request.model, ROUTING))
    return k.id


def test_every_request_field_is_declared_keyed_scope_or_excluded() -> None:
    # Adding a field to ChatRequest (or a model inside it) fails here until it is declared in
    # models/domain/cache_key.py: a new field that changes the answer must reach the key.
    assert undeclared_fields() == {}
    for fields in DECLARED.values():
        for name, (role, why) in fields.items():
            assert isinstance(role, Role), name
            assert role is not Role.EXCLUDED or why, f"say why {name} is excluded"


def test_a_new_undeclared_field_is_caught() -> None:
    class Wider(ChatRequest):
        wider_knob: int = 0

    DECLARED[Wider] = dict(DECLARED[ChatRequest])
    try:
        assert undeclared_fields() == {"Wider": {"wider_knob"}}
    finally:
        del DECLARED[Wider]


# One changed value per KEYED field of ChatRequest (and inside its static part).
KEYED_CHANGES: dict[str, dict[str, Any]] = {
    "static": {"static": {"system": "You are terse."}},
    "messages": {"messages": [{"role": "user", "content": "How do I reset it now?"}]},
    "max_tokens": {"max_tokens": 100},
    "temperature": {"temperature": 0.0001},
    "stop": {"stop": ["\n"]},
    "response_format": {"response_format": "json"},
    "model": {"model": "cheap"},
    "response_schema": {"response_format": "json_schema",
                        "response_schema": {"name": "item", "schema": {"type": "object"}}},
    "top_p": {"top_p": 0.5},
    "top_k": {"top_k": 5},
    "seed": {"seed": 7},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": -0.5},
    "logit_bias": {"logit_bias": {"1234": -100}},
    "logprobs": {"logprobs": True},
    "top_logprobs": {"logprobs": True, "top_logprobs": 2},
    "tool_choice": {"static": {"tools": [{"name": "find"}]},
                    "tool_choice": {"mode": "function", "name": "find"}},
    "parallel_tool_calls": {"parallel_tool_calls": False},
    "reasoning_effort": {"reasoning_effort": "high"},
    "thinking_budget": {"thinking_budget": 2048},
    "verbosity": {"verbosity": "low"},
    "prediction": {"prediction": {"content": "Dear customer,"}},
    "openai_responses": {"openai_responses": {"include": ["reasoning.encrypted_content"]}},
    "allowed_models": {"allowed_models": ["cheap"]},
}
STATIC_CHANGES = [
    {"system": "Be kind."},
    {"few_shot": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {"tools": [{"name": "lookup"}]},
    {"tools": [{"name": "lookup", "description": "find an order"}]},
    {"tools": [{"name": "lookup", "parameters": {"type": "object", "required": ["id"]}}]},
]
EXCLUDED_CHANGES: dict[str, dict[str, Any]] = {
    "request_id": {"request_id": "other-id"},
    "lane": {"lane": "async"},
    "cache": {"cache": {"mode": "refresh", "allow_nondeterministic": True}},
    "tags": {"tags": {"campaign": "x"}},
    "timeout_s": {"timeout_s": 3.5},
    "service_tier": {"service_tier": "default"},
    "metadata": {"metadata": {"order": "42"}},
    "store": {"store": True},
    "safety_identifier": {"safety_identifier": "hash-of-u42"},
    "prompt_cache_key": {"prompt_cache_key": "callers-own"},
    "drop_params": {"drop_params": True},
    "cache_marks": {"cache_marks": [{"at": "messages", "index": 0, "ttl": "1h"}]},
    "provider_headers": {"provider_headers": {"anthropic-beta": "context-1m-2025-08-07"}},
    "api_key": {"api_key": "0123456789ab"},
}


def test_the_change_tables_cover_every_declared_field() -> None:
    roles = {n: r for n, (r, _w) in DECLARED[ChatRequest].items()}
    assert set(KEYED_CHANGES) == {n for n, r in roles.items() if r is Role.KEYED}
    assert set(EXCLUDED_CHANGES) == {n for n, r in roles.items() if r is Role.EXCLUDED}


#: What a change needs around it to be valid, so the key differs by the field alone.
KEYED_BASES: dict[str, dict[str, Any]] = {
    "tool_choice": {"static": {"tools": [{"name": "find"}]}},
    "top_logprobs": {"logprobs": True},
}


@pytest.mark.parametrize("field", sorted(KEYED_CHANGES))
def test_each_keyed_field_changes_the_key(field: str) -> None:
    base = KEYED_BASES.get(field, {})
    assert key_of(req(**{**base, **KEYED_CHANGES[field]})) != key_of(req(**base))


def test_the_response_schema_itself_is_keyed() -> None:
    def shaped(schema: dict[str, Any]) -> str:
        return key_of(req(response_format="json_schema",
                          response_schema={"name": "item", "schema": schema, "strict": True}))

    assert shaped({"type": "object"}) != shaped({"type": "object", "required": ["sku"]})


PNG_A = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Er"
         "kJggg==")


def _with_image(detail: str = "auto", data: str = PNG_A, text: str = "What is this?") -> Any:
    return req(messages=[{"role": "user", "parts": [
        {"type": "text", "text": text}, {"type": "image", "data": data, "detail": detail}]}])


def test_images_are_keyed_by_their_bytes_and_detail() -> None:
    import base64

    raw = bytearray(base64.b64decode(PNG_A))
    raw[-5] ^= 1  # another image (same header, other bytes)
    other = base64.b64encode(bytes(raw)).decode()
    assert key_of(_with_image()) == key_of(_with_image())
    assert key_of(_with_image()) != key_of(_with_image(data=other))
    assert key_of(_with_image()) != key_of(_with_image(detail="low"))
    assert key_of(_with_image()) != key_of(req(messages=[{"role": "user",
                                                          "content": "What is this?"}]))


def test_text_parts_alone_key_as_plain_content() -> None:
    parts = req(messages=[{"role": "user", "parts": [{"type": "text", "text": "a"},
                                                     {"type": "text", "text": "b"}]}])
    assert key_of(parts) == key_of(req(messages=[{"role": "user", "content": "a\nb"}]))


def test_a_turn_with_images_is_never_matched_semantically() -> None:
    book = PolicyBook({"f": FeatureCachePolicy(semantic=True)}, 3600)
    key = cache_key(_with_image(), book.get("f"), "m", semantic=True)
    assert key.context == ""  # exact key only


def test_each_static_part_changes_the_key() -> None:
    keys = {key_of(req(static=static)) for static in STATIC_CHANGES}
    assert len(keys | {key_of(req())}) == len(STATIC_CHANGES) + 1


@pytest.mark.parametrize("field", sorted(EXCLUDED_CHANGES))
def test_excluded_fields_do_not_change_the_key(field: str) -> None:
    assert key_of(req(**EXCLUDED_CHANGES[field])) == key_of(req())


def test_message_roles_and_turn_boundaries_are_keyed() -> None:
    one = req(messages=[{"role": "user", "content": "a b"}])
    split = req(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"},
                          {"role": "user", "content": "b"}])
    shot = req(static={"few_shot": [{"role": "assistant", "content": "a b"}]})
    shot2 = req(static={"few_shot": [{"role": "user", "content": "a b"}]})
    assert len({key_of(one), key_of(split), key_of(shot), key_of(shot2)}) == 4


def test_stop_order_and_duplicates_do_not_matter() -> None:
    assert key_of(req(stop=["a", "b"])) == key_of(req(stop=["b", "a", "a"]))


def test_model_policy_is_keyed_with_what_routing_resolves_it_to() -> None:
    other = RoutingSettings(cheap_model="claude-haiku-4-5")
    assert model_fingerprint("cheap", ROUTING) != model_fingerprint("cheap", other)
    assert model_fingerprint("auto", ROUTING) != model_fingerprint("auto", other)
    assert model_fingerprint("gpt-4o", ROUTING) == model_fingerprint("gpt-4o", other)


def test_normalization_makes_equivalent_requests_share_a_key() -> None:
    spec = {"lowercase": True, "patterns": ("iso_timestamp",)}
    a = req(messages=[{"role": "user", "content": "How do I  reset it? 2026-01-05T10:00:00Z"}])
    b = req(messages=[{"role": "user", "content": "how do i reset it?\u00a02026-02-01T09:30:00Z"}])
    assert key_of(a, **spec) == key_of(b, **spec)
    assert key_of(a) != key_of(b)  # the default declares neither lowercasing nor patterns


def test_the_declaration_itself_is_keyed() -> None:
    # Two features sharing a team scope but normalizing differently never share entries.
    assert key_of(req(), scope="team") != key_of(req(), scope="team", lowercase=True)


def test_netstrings_are_prefix_free() -> None:
    # "ab" + "c" and "a" + "bc" concatenate alike; their encodings must not.
    assert _ns("ab") + _ns("c") != _ns("a") + _ns("bc")
    assert key_of(req(static={"system": "ab"}, messages=[{"role": "user", "content": "c"}])) != \
        key_of(req(static={"system": "a"}, messages=[{"role": "user", "content": "bc"}]))


@pytest.mark.parametrize("scope, expected", [
    ("org", "acme|~|~|~"), ("team", "acme|support|~|~"), ("feature", "acme|support|faq|~"),
    ("user", "acme|support|faq|u1")])
def test_scope_segments(scope: str, expected: str) -> None:
    assert scope_of(req(org="acme", user="u1"), scope) == expected


_names = st.sampled_from(["a", "b", "a:b", "a/b"])
_request = st.builds(
    lambda org, team, feature, user, text: req(org=org, team=team, feature=feature, user=user,
                                               messages=[{"role": "user", "content": text}]),
    _names, _names, st.sampled_from(["faq", "code", "shared1", "shared2"]),
    st.one_of(st.none(), _names), st.sampled_from(["hi", "hi ", "HI", "bye"]))
# faq: feature scope; code: user scope; shared1/2: team scope (the same declaration).
_FEATURES = {"faq": FeatureCachePolicy(lowercase=True),
             "code": FeatureCachePolicy(scope="user"),
             "shared1": FeatureCachePolicy(scope="team"),
             "shared2": FeatureCachePolicy(scope="team")}


def _result(text: str) -> ChatResult:
    route = Route(tier="cheap", model="gpt-4o-mini", provider="openai", backend="api",
                  lane="interactive")
    return ChatResult(request_id="w", text=text, provider="openai", model="gpt-4o-mini",
                      route=route)


# Which attribution fields must be equal for a read, per scope: written out here, not taken
# from the code under test.
_MUST_MATCH = {"org": ("org",), "team": ("org", "team"), "feature": ("org", "team", "feature"),
               "user": ("org", "team", "feature", "user")}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_request, min_size=1, max_size=6), _request)
def test_no_request_ever_reads_an_entry_written_under_another_scope(
        writes: list[ChatRequest], reader: ChatRequest) -> None:
    cache = MemoryResponseCache(load_settings({}, cache={"features": _FEATURES,
                                                        "single_flight_wait_s": 0}))
    for w in writes:
        cache.store(w, _result(json.dumps([w.org, w.team, w.feature, w.user])))
    hit = cache.lookup(reader)
    if hit is not None:
        org, team, feature, user = json.loads(hit.text)
        writer = {"org": org, "team": team, "feature": feature, "user": user}
        for name in _MUST_MATCH[_FEATURES[reader.feature].scope]:
            assert writer[name] == getattr(reader, name), (name, writer, reader)


def test_explain_shows_normalized_form_fired_patterns_and_key(tmp_path: Any,
                                                              monkeypatch: Any) -> None:
    from ops.cli.cache import cache_app

    monkeypatch.setenv("SLUICE_CACHE__FEATURES", json.dumps(
        {"faq": {"lowercase": True, "patterns": ["iso_timestamp", "order_id"]}}))
    monkeypatch.delenv("SLUICE_CACHE__REDIS_URL", raising=False)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"team": "support", "feature": "faq", "messages": [
        {"role": "user", "content": "Where is  Order #A12345? (2026-01-05T10:22:31Z)"}]}))
    out = CliRunner().invoke(cache_app, ["explain", str(path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["normalized"]["messages"][0]["content"] == "where is <order_id>? (<iso_timestamp>)"
    assert data["patterns"] == {"iso_timestamp": 1, "order_id": 1}
    assert set(data["steps"]) == {"lowercase", "whitespace"}
    assert data["cacheable"] and data["key"].endswith(data["digest"])
    assert data["key"].startswith("sluice:rc:e:default|support|faq|~:")
    bad = CliRunner().invoke(cache_app, ["explain", str(tmp_path / "missing.json")])
    assert bad.exit_code == 2


def test_feature_policies_come_from_the_environment() -> None:
    s = load_settings({"SLUICE_CACHE__FEATURES": json.dumps({
        "faq": {"ttl_s": 60, "lowercase": True, "patterns": ["uuid"], "scope": "team",
                "custom_patterns": {"ticket": r"TKT-\d+"}},
        "*": {"enabled": False}})})
    book = PolicyBook(s.cache.features, s.cache.default_ttl_s)
    faq = book.get("faq")
    assert faq.ttl_s == 60 and faq.policy.scope == "team"
    assert faq.normalizer("Ticket TKT-12 for 123e4567-e89b-12d3-a456-426614174000") == \
        "ticket <ticket> for <uuid>"
    assert book.get("anything-else").cacheable(req())[0] is False  # the "*" entry applies


@pytest.mark.parametrize("bad, where", [
    ({"faq": {"patterns": ["nope"]}}, "patterns"),
    ({"faq": {"custom_patterns": {"t": "(unclosed"}}}, "not a valid regex"),
    ({"faq": {"semantic_threshold": 1.5}}, "semantic_threshold"),
    ({"faq": {"scope": "galaxy"}}, "scope"),
    ({"faq": {"colour": "blue"}}, "colour"),
])
def test_bad_feature_policies_are_refused_naming_the_field(bad: dict[str, Any],
                                                           where: str) -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError, match=where):
        load_settings({"SLUICE_CACHE__FEATURES": json.dumps(bad)})


def _loop(call_id: str, arguments: str = '{"sku":"42"}', result: str = "12.50") -> ChatRequest:
    return req(messages=[
        {"role": "user", "content": "Please use tool find_sku for SKU 42"},
        {"role": "assistant", "tool_calls": [{"id": call_id, "name": "find_sku",
                                              "arguments": arguments}]},
        {"role": "tool", "tool_call_id": call_id, "content": result}])


def test_a_tool_loop_is_keyed_by_calls_and_results_not_by_their_ids() -> None:
    # Call ids are fresh on every call: keyed, no tool loop would ever hit the cache.
    assert key_of(_loop("call_a")) == key_of(_loop("call_b"))
    assert key_of(_loop("call_a", arguments='{"sku":"43"}')) != key_of(_loop("call_a"))
    assert key_of(_loop("call_a", result="13.00")) != key_of(_loop("call_a"))
    # The calls are keyed with the turn: other calls, another key.
    other = req(messages=[{"role": "user", "content": "Please use tool find_sku for SKU 42"},
                          {"role": "assistant", "tool_calls": [
                              {"id": "x", "name": "find_stock", "arguments": '{"sku":"42"}'}]},
                          {"role": "tool", "tool_call_id": "x", "content": "12.50"}])
    assert key_of(other) != key_of(_loop("x"))


def test_which_result_answers_which_call_is_keyed_and_tool_output_is_not_normalized() -> None:
    def two(first: tuple[str, str], second: tuple[str, str]) -> ChatRequest:
        return req(messages=[
            {"role": "user", "content": "Weather in Berlin and Hamburg?"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "name": "weather", "arguments": '{"city":"Berlin"}'},
                {"id": "b", "name": "weather", "arguments": '{"city":"Hamburg"}'}]},
            {"role": "tool", "tool_call_id": first[0], "content": first[1]},
            {"role": "tool", "tool_call_id": second[0], "content": second[1]}])

    # The same contents in the same order, answering swapped calls: different questions.
    assert key_of(two(("a", "sunny"), ("b", "rain"))) != key_of(two(("b", "sunny"),
                                                                     ("a", "rain")))


def test_tool_output_skips_the_features_normalizer() -> None:
    policy = {"patterns": ("order_id", "date")}
    # In what a person types, an order id and a date are noise the feature strips...
    asked = [req(messages=[{"role": "user", "content": f"Status of order {o} on {d}?"}])
             for o, d in (("A1234", "2026-11-27"), ("B9876", "2026-11-28"))]
    assert key_of(asked[0], **policy) == key_of(asked[1], **policy)
    # ...in a tool's output they are the answer: other results, other keys.
    told = [_loop("c1", result=f"order {o} shipped on {d}")
            for o, d in (("A1234", "2026-11-27"), ("B9876", "2026-11-28"))]
    assert key_of(told[0], **policy) != key_of(told[1], **policy)


def test_auto_is_keyed_with_the_features_routing_policy_and_the_default_router(
        tmp_path: Any) -> None:
    # A config change that can move "auto" to another tier must change the key: else the
    # cache serves the old tier's answers (issue 16, must-have 8).
    base = model_fingerprint("auto", ROUTING, "faq")
    forced = RoutingSettings(policies=[{"feature": "faq", "forced_tier": "flagship"}])
    assert model_fingerprint("auto", forced, "faq") != base
    assert model_fingerprint("auto", forced, "other") == base  # another feature's policy
    assert model_fingerprint("auto", RoutingSettings(default_router="random"), "faq") != base
    assert model_fingerprint("auto", RoutingSettings(cheap_threshold=0.9), "faq") != base
    assert model_fingerprint("auto", RoutingSettings(self_hosted_model="x"), "faq") != base


def test_auto_is_keyed_with_the_router_artifacts_contents(tmp_path: Any) -> None:
    from queues.response_cache import artifact_version

    path = tmp_path / "router.npz"
    routing = RoutingSettings(default_router="learned", router_artifact=str(path))
    path.write_bytes(b"weights v1")
    v1 = model_fingerprint("auto", routing, "faq", artifact_version)
    path.write_bytes(b"weights v2")  # retrained in place: same path, another router
    v2 = model_fingerprint("auto", routing, "faq", artifact_version)
    assert v1 != v2 and "sha256:" in v1


def test_an_answer_belongs_under_the_model_that_gave_it() -> None:
    from models.domain.cache_key import answering_policy

    assert answering_policy("cheap", ROUTING, "cheap", "gpt-4o-mini") == "cheap"
    assert answering_policy("cheap", ROUTING, "cheap", "claude-haiku-4-5") == "claude-haiku-4-5"
    assert answering_policy("auto", ROUTING, "flagship", "gpt-4o") == "auto"
    assert answering_policy("auto", ROUTING, "cheap", "gpt-4o") == "gpt-4o"
    assert answering_policy("gpt-4o-mini", ROUTING, "cheap", "gpt-4o") == "gpt-4o"
    assert answering_policy("gpt-4o", ROUTING, "flagship", "gpt-4o") == "gpt-4o"
