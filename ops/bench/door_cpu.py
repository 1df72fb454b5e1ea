"""CPU per request of each door, per process (front door, API worker, stand-in), A/B by tree.

    python -m ops.bench.door_cpu [--trees DIR[,DIR...]] [--modes msg,msg_agent,chat_claude,...]
                                 [--n 200] [--rounds 2] [--concurrency 4] [--spy]

One stack per tree (``git archive`` of another commit unpacked somewhere: the "before"; this
checkout: the "after"), all up at once, on door_bench's stack (scratch ledger, zero-latency
stand-in, one uvicorn worker, one Celery worker process by default). Load comes from the
official ``anthropic`` / ``openai`` SDKs (async, closed loop of ``--concurrency``), unique per
request so the response cache never answers; modes and trees are interleaved round by round,
so a machine that drifts weighs on both trees alike. CPU is user + system time of each
process tree over the run, per answered request. ``--spy`` records the front door and the
worker with py-spy (``--gil``, raw folded stacks, first round) into ``--spy-dir`` and prints
each one's CPU per request by pipeline stage (ops/bench/cpu_stages.py).

Modes: ``msg`` (``/v1/messages``, the messages_bench body), ``msg_agent`` (the same with a
12,000-token system prompt under the client's ``cache_control`` and 15 tools, a coding agent's
turn), ``msg_stream`` (``messages.stream``), ``chat_claude`` / ``chat_gpt``
(``/v1/chat/completions`` to Claude / gpt-4o-mini on the stand-in), ``resp`` (``/v1/responses``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ops.bench.door_bench as door_bench
import ops.bench.harness as harness
from ops.bench import cpu_stages

_WORDS = ("alpha function return value the system prompt agent tool file edit read write "
          "search grep").split()
_rng = random.Random(7)
SYSTEM = "You are a coding agent. " + " ".join(_rng.choice(_WORDS) for _ in range(12000))
TOOLS = [{"name": f"tool_{k}",
          "description": f"Tool {k}: " + " ".join(_rng.choice(_WORDS) for _ in range(120)),
          "input_schema": {"type": "object", "required": ["path"], "properties": {
              "path": {"type": "string", "description": "a file path"},
              "text": {"type": "string"}}}} for k in range(15)]
CLAUDE, GPT = "claude-haiku-4-5", "gpt-4o-mini"


def _stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            out[int(entry)] = int(fields[1])
    return out


def _tree(root: int, parents: dict[int, int]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += [c for c, p in parents.items() if p == pid]
    return out


def _cpu(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    return sum((int(f[11]) + int(f[12])) / tick for p in pids if (f := _stat(p)) is not None)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def _call(client: Any, mode: str, text: str) -> None:
    user = [{"role": "user", "content": text}]
    if mode == "msg":
        await client.messages.create(model=CLAUDE, max_tokens=16, messages=user)
    elif mode == "msg_agent":
        await client.messages.create(
            model=CLAUDE, max_tokens=16, tools=TOOLS, messages=user,
            system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}])
    elif mode == "msg_stream":
        async with client.messages.stream(model=CLAUDE, max_tokens=16, messages=user) as s:
            await s.get_final_message()
    elif mode in ("chat_claude", "chat_gpt"):
        await client.chat.completions.create(model=CLAUDE if mode == "chat_claude" else GPT,
                                             max_tokens=16, messages=user)
    elif mode == "resp":
        await client.responses.create(model=GPT, max_output_tokens=16, input=text)
    else:
        raise SystemExit(f"unknown mode {mode}")


async def load(mode: str, url: str, key: str, n: int, concurrency: int) -> tuple[int, dict]:
    """``n`` unique requests of ``mode``, ``concurrency`` at a time; (answered, errors)."""
    import anthropic
    import openai

    headers = {"x-sluice-feature": "bench"}
    client: Any = (anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0,
                                            default_headers=headers)
                   if mode.startswith("msg") else
                   openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0,
                                      default_headers=headers))
    gate, nonce = asyncio.Semaphore(concurrency), uuid.uuid4().hex[:8]
    ok, errors = 0, {}

    async def one(i: int) -> None:
        nonlocal ok
        async with gate:
            try:
                await _call(client, mode, f"Rephrase product title {i} {nonce}")
                ok += 1
            except Exception as exc:  # noqa: BLE001 - counted, shown
                name = f"{type(exc).__name__}: {str(exc)[:80]}"
                errors[name] = errors.get(name, 0) + 1

    await asyncio.gather(*(one(i) for i in range(n)))
    await client.close()
    return ok, errors


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or os.environ.get("PY_SPY")
    if not exe:
        print("  py-spy not found (PATH or $PY_SPY): not profiled", flush=True)
        return None
    return subprocess.Popen([exe, "record", "-p", str(pid), "-r", "200", "-f", "raw", "--gil",
                             "--subprocesses", "-o", str(out), "-d", "3600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    """Parse arguments, start one stack per tree, run the interleaved rounds, print means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=str(harness.ROOT),
                        help="comma-separated source trees, one stack each (default: this one)")
    parser.add_argument("--modes", default="msg,msg_agent,chat_claude,chat_gpt,resp,msg_stream")
    parser.add_argument("--n", type=int, default=200, help="requests per mode, tree and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--celery-workers", type=int, default=1)
    parser.add_argument("--spy", action="store_true")
    parser.add_argument("--spy-dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    with ExitStack() as stack:
        stacks = []
        for tree in args.trees.split(","):
            harness.ROOT = door_bench.ROOT = Path(tree)  # the processes start in that tree
            setup = door_bench.door_stack(stack, server_workers=args.server_workers,
                                          celery_workers=args.celery_workers)
            parents = _parents()
            port = setup.standin.rsplit(":", 1)[1]
            standin = next(p for p in parents if "workers.providers.standin" in _cmdline(p)
                           and f"--port {port}" in _cmdline(p))
            roots = {"door": setup.door_proc.pid, "worker": [w.pid for w in setup.workers],
                     "standin": standin}
            stacks.append((Path(tree).name, setup, roots))
        for name, setup, _ in stacks:
            for mode in modes:
                ok, errors = asyncio.run(load(mode, setup.door, setup.key, 6, 2))
                if errors:
                    print(f"  warm-up {name} {mode}: {errors}", flush=True)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for rnd in range(args.rounds):
            for mode in modes:
                for name, setup, roots in stacks:
                    parents = _parents()
                    groups = {k: [p for r in (v if isinstance(v, list) else [v])
                                  for p in _tree(r, parents)] for k, v in roots.items()}
                    spies = [s for s in (_spy(roots[k] if k == "door" else roots[k][0],
                                              args.spy_dir / f"spy_{name}_{mode}_{k}.txt")
                                         for k in ("door", "worker"))
                             if s is not None] if args.spy and rnd == 0 else []
                    if spies:
                        time.sleep(1.0)
                    before = {k: _cpu(v) for k, v in groups.items()}
                    t0 = time.time()
                    ok, errors = asyncio.run(load(mode, setup.door, setup.key, args.n,
                                                  args.concurrency))
                    took = time.time() - t0
                    time.sleep(0.5)  # the last replies' bookkeeping
                    per = {k: (_cpu(v) - before[k]) * 1000 / max(ok, 1)
                           for k, v in groups.items()}
                    for spy in spies:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(timeout=60)
                    for k in ("door", "worker") if spies else ():
                        # Where each process's CPU per request goes, stage by stage.
                        print(f"  {name} {mode} {k}: CPU per request by stage (py-spy --gil)")
                        print("\n".join(cpu_stages.table(
                            args.spy_dir / f"spy_{name}_{mode}_{k}.txt", per[k],
                            cpu_stages.DOOR_RULES if k == "door" else cpu_stages.WORKER_RULES)))
                    results.setdefault((name, mode), []).append(per)
                    print(f"  [{rnd + 1}/{args.rounds}] {name:>10} {mode:<11} {ok}/{args.n} ok "
                          f"in {took:.1f} s: " + " ".join(f"{k} {v:.2f}" for k, v in per.items())
                          + f", door+worker {per['door'] + per['worker']:.2f} ms/req "
                          f"(load {os.getloadavg()[0]:.1f}) {errors or ''}", flush=True)
        print(f"CPU ms per answered request, mean of {args.rounds} round(s); "
              f"{door_bench.load_note()}")
        for (name, mode), runs in results.items():
            mean = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
            print(f"  {name:>10} {mode:<11} " + " ".join(f"{k} {v:6.2f}" for k, v in mean.items())
                  + f"  door+worker {mean['door'] + mean['worker']:6.2f}")


if __name__ == "__main__":
    main()
