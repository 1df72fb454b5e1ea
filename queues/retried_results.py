"""A caller's retry of an errored request: its old stored error is set aside for the new run.

Celery stores a task's reply under its task id (the tenant-scoped request id, change 9) and
never overwrites a stored SUCCESS, and an error reply is a SUCCESS. A caller retrying an
errored request under the same id therefore read the old error at once, while the retry ran,
was billed, and could not even store its answer. Before the retry is published, the producer
replaces a stored *error* (never an answer: a retry of a finished request is answered from it)
with a pending mark, atomically in Redis; the worker that takes the retry over the errored row
does the same (a retry sent while the failed run was still going). A copy of the failed run's
own message (change 33: ``ended``) that finds the mark stores nothing, so the retry's answer is
the one its caller reads.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: The key the mark carries in the stored meta (its status is PENDING: not ready).
MARK = "sluice_retried"

# KEYS[1]: the task's result key; ARGV[1]: the encoded mark. Replaces an error reply (a
# SUCCESS whose result has ok=false) or a Celery FAILURE, keeping its TTL; 1 when replaced.
_SET_ASIDE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, meta = pcall(cjson.decode, raw)
if not ok or type(meta) ~= 'table' then return 0 end
local r = meta['result']
local errored = meta['status'] == 'FAILURE'
  or (meta['status'] == 'SUCCESS' and type(r) == 'table' and r['ok'] == false)
if not errored then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def set_aside_error(backend: Any, task_id: str) -> bool:
    """Replace the stored error reply of ``task_id`` by a pending mark (True), so a retry's
    handle waits for the retry's run; an answer, or nothing stored, is left alone (False).
    Only Redis result stores (JSON results); raises the client's errors."""
    from celery.backends.redis import RedisBackend

    if not isinstance(backend, RedisBackend):
        return False
    mark = backend.encode({"status": "PENDING", "result": None, "traceback": None,
                           "children": [], "date_done": None, "task_id": task_id, MARK: True})
    script = backend.__dict__.get("_sluice_set_aside")
    if script is None:
        script = backend.__dict__["_sluice_set_aside"] = backend.client.register_script(
            _SET_ASIDE)
    return bool(script(keys=[backend.get_key_for_task(task_id)], args=[mark]))


def is_set_aside(meta: Any) -> bool:
    """Is this stored meta the mark of a retry waiting for its run?"""
    return isinstance(meta, dict) and bool(meta.get(MARK))
