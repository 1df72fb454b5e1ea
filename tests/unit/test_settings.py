"""Settings: SLUICE_* nested groups, secrets hidden, embedded defaults that need no service."""

from __future__ import annotations

from models.domain.settings import Settings, load_settings


def test_defaults_need_no_service() -> None:
    s = load_settings({})
    assert s.broker.url == "memory://" and s.database.url.startswith("sqlite")
    assert s.cache.redis_url is None and s.providers.openai_api_key is None


def test_nested_groups_from_env() -> None:
    s = load_settings({"SLUICE_BROKER__URL": "redis://h:6379/0",
                       "SLUICE_LANES__ASYNC__BATCH_TIMEOUT_MS": "400",
                       "SLUICE_LANES__INTERACTIVE__PRIORITY": "8",
                       "SLUICE_ROUTING__CHEAP_MODEL": "claude-haiku-4-5",
                       "SLUICE_PROVIDERS__FALLBACKS": '{"gpt-4o": ["claude-sonnet-4-6"]}',
                       "SLUICE_PROVIDERS__CACHE_TTL_BY_FEATURE": '{"docs": "1h"}'})
    assert s.broker.url == "redis://h:6379/0"
    assert s.lanes.get("async").batch_timeout_ms == 400
    assert s.lanes.get("interactive").priority == 8
    assert s.routing.model_for("cheap") == "claude-haiku-4-5"
    assert s.providers.fallbacks == {"gpt-4o": ["claude-sonnet-4-6"]}
    assert s.providers.ttl_for("docs") == "1h" and s.providers.ttl_for("other") == "5m"


def test_one_lane_setting_keeps_that_lanes_other_defaults() -> None:
    """Setting one field of a lane once reset the rest to LaneSettings' generic defaults
    (the interactive lane lost its priority 9 and its 75 s time limit)."""
    default = Settings().lanes
    s = load_settings({"SLUICE_LANES__INTERACTIVE__QUEUE_TIMEOUT_S": "5",
                       "SLUICE_LANES__ASYNC__PRIORITY": "2"})
    assert s.lanes.interactive.queue_timeout_s == 5
    assert s.lanes.interactive.model_copy(update={"queue_timeout_s": 30.0}) == \
        default.interactive
    assert (s.lanes.async_.priority, s.lanes.async_.time_limit_s,
            s.lanes.async_.batch_timeout_ms) == (2, default.async_.time_limit_s,
                                                 default.async_.batch_timeout_ms)


def test_lane_timeouts_are_distinct_by_default() -> None:
    s = Settings()
    assert s.lanes.get("interactive").batch_timeout_ms < s.lanes.get("async").batch_timeout_ms
    assert s.lanes.get("interactive").priority > s.lanes.get("async").priority


def test_provider_keys_are_secret_and_taken_from_provider_variables() -> None:
    s = load_settings({"OPENAI_API_KEY": "sk-live-123", "ANTHROPIC_API_KEY": "ak-456"})
    assert s.providers.openai_api_key is not None
    assert s.providers.openai_api_key.get_secret_value() == "sk-live-123"
    dumped = repr(s) + s.model_dump_json()
    assert "sk-live-123" not in dumped and "ak-456" not in dumped


def test_sluice_key_wins_over_provider_variable() -> None:
    s = load_settings({"OPENAI_API_KEY": "a", "SLUICE_PROVIDERS__OPENAI_API_KEY": "b"})
    assert s.providers.openai_api_key.get_secret_value() == "b"  # type: ignore[union-attr]


def test_a_dead_workers_messages_come_back_soon_after_the_visibility_timeout() -> None:
    from queues.app import celery_config

    s = load_settings({"SLUICE_BROKER__URL": "redis://h:6379/0",
                       "SLUICE_BROKER__VISIBILITY_TIMEOUT_S": "8"})
    opts = celery_config(s)["broker_transport_options"]
    assert opts["visibility_timeout"] == 8
    # kombu scans every interval x throttle seconds: at most a quarter of the timeout here
    assert opts["unacked_restore_interval"] * opts["unacked_restore_throttle"] <= 2
    longest = celery_config(Settings())["broker_transport_options"]
    assert longest["unacked_restore_interval"] * longest["unacked_restore_throttle"] <= 10
    assert longest["visibility_timeout"] > Settings().lanes.get("async").time_limit_s


def test_side_state_lives_on_a_redis_beside_any_broker() -> None:
    """Cancel marks, token streams and tallies need a Redis: the broker's, else the result
    store's (RabbitMQ), else none; an explicit one wins."""
    redis = load_settings({"SLUICE_BROKER__URL": "redis://b:6379/0"}).broker
    assert redis.is_redis() and redis.state_url() == "redis://b:6379/0"
    rabbit = load_settings({"SLUICE_BROKER__URL": "amqp://u:p@r:5672/v",
                            "SLUICE_BROKER__RESULT_BACKEND": "redis://res:6379/0"}).broker
    assert rabbit.is_amqp() and not rabbit.is_redis()
    assert rabbit.state_url() == "redis://res:6379/0"
    assert load_settings({}).broker.state_url() is None
    pinned = load_settings({"SLUICE_BROKER__URL": "amqp://r//",
                            "SLUICE_BROKER__STATE_REDIS_URL": "redis://state:6379/2"}).broker
    assert pinned.state_url() == "redis://state:6379/2"


def test_rabbitmq_queues_are_quorum_with_confirms_and_a_topic_exchange() -> None:
    from queues.app import celery_config

    conf = celery_config(load_settings({"SLUICE_BROKER__URL": "amqp://r//"}))
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert {q.queue_arguments["x-queue-type"] for q in conf["task_queues"]} == {"quorum"}
    assert {q.exchange.type for q in conf["task_queues"]} == {"topic"}
    lanes = [q for q in conf["task_queues"] if q.name != "sluice.dead"]
    assert {q.queue_arguments["x-dead-letter-routing-key"] for q in lanes} == {"sluice.dead"}
    classic = celery_config(load_settings({"SLUICE_BROKER__URL": "amqp://r//",
                                           "SLUICE_BROKER__QUEUE_TYPE": "classic"}))
    assert {q.queue_arguments["x-max-priority"] for q in classic["task_queues"]} == {10}
    redis = celery_config(load_settings({"SLUICE_BROKER__URL": "redis://b:6379/0"}))
    assert {q.exchange.type for q in redis["task_queues"]} == {"direct"}
    assert "visibility_timeout" in redis["broker_transport_options"]
