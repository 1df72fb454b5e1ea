#!/usr/bin/env bash
# Use the PostgreSQL and Redis already running on this machine, or start throwaway ones.
# Sourced by ops/test.sh; exports SLUICE_TEST_PG_URL and SLUICE_TEST_REDIS_URL.

_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
_listening() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),timeout=1)" 2>/dev/null; }

SLUICE_SVC_DIR=""
_svc_dir() {
  if [ -z "$SLUICE_SVC_DIR" ]; then
    SLUICE_SVC_DIR=$(mktemp -d /tmp/sluice-svc.XXXXXX)
    chmod 755 "$SLUICE_SVC_DIR"
  fi
}

ensure_postgres() {
  if [ -n "${SLUICE_TEST_PG_URL:-}" ]; then return 0; fi
  if _listening 5432; then
    export SLUICE_TEST_PG_URL="postgresql://postgres@127.0.0.1:5432/postgres"
    return 0
  fi
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ]; then
    echo "services: installing PostgreSQL (none running, none installed)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  _svc_dir
  local port; port=$(_free_port)
  local data="$SLUICE_SVC_DIR/pg"
  mkdir -p "$data"; chown postgres:postgres "$data"
  # PostgreSQL refuses to run as root: run it as the postgres user, from a folder it can read.
  (cd / && runuser -u postgres -- "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null)
  (cd / && runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/log" -w start \
     -o "-h 127.0.0.1 -p $port -k $data -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null)
  export SLUICE_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  SLUICE_PG_STARTED="$bin/pg_ctl -D $data"
  echo "services: started throwaway PostgreSQL on port $port" >&2
}

ensure_redis() {
  if [ -n "${SLUICE_TEST_REDIS_URL:-}" ]; then return 0; fi
  if _listening 6379; then
    export SLUICE_TEST_REDIS_URL="redis://127.0.0.1:6379"
    return 0
  fi
  if ! command -v redis-server >/dev/null; then
    echo "services: installing redis-server" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  _svc_dir
  local port; port=$(_free_port)
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
    --dir "$SLUICE_SVC_DIR" --logfile "$SLUICE_SVC_DIR/redis.log" --pidfile "$SLUICE_SVC_DIR/redis.pid"
  for _ in $(seq 50); do _listening "$port" && break; sleep 0.1; done
  export SLUICE_TEST_REDIS_URL="redis://127.0.0.1:$port"
  SLUICE_REDIS_STARTED="$SLUICE_SVC_DIR/redis.pid"
  echo "services: started throwaway Redis on port $port" >&2
}

stop_services() {
  if [ -n "${SLUICE_PG_STARTED:-}" ]; then (cd / && runuser -u postgres -- $SLUICE_PG_STARTED -m fast stop >/dev/null 2>&1 || true); fi
  if [ -n "${SLUICE_REDIS_STARTED:-}" ] && [ -f "$SLUICE_REDIS_STARTED" ]; then kill "$(cat "$SLUICE_REDIS_STARTED")" 2>/dev/null || true; fi
  if [ -n "$SLUICE_SVC_DIR" ]; then rm -rf "$SLUICE_SVC_DIR"; fi
}

ensure_compose_validator() {
  # `docker-compose config -q` validates docker-compose.yml offline; no engine needed.
  if command -v docker-compose >/dev/null; then return 0; fi
  echo "services: installing docker-compose (to validate docker-compose.yml)" >&2
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 ||
   (apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1)) || \
    echo "services: could not install docker-compose; the compose test will say so" >&2
}
