#!/usr/bin/env bash
# PostgreSQL from Debian's packages (installed with apt when missing), started on 127.0.0.1.
# Usage: postgres.sh install|start|stop|status
source "$(dirname "$0")/lib.sh"

DATA="$STATE/postgres/data"
SOCKDIR="$STATE/postgres/run"
PGLOG="$STATE/logs/postgres.log"
FSYNC="${REKISTERI_PG_FSYNC:-on}"

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }; done
  command -v initdb >/dev/null && { dirname "$(readlink -f "$(command -v initdb)")"; return 0; }
  return 1
}

install() {
  if pg_bindir >/dev/null; then return 0; fi
  log "installing PostgreSQL from Debian's packages"
  if [[ $EUID -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_bindir >/dev/null || die "PostgreSQL install failed"
}

# As root the server must run as the unprivileged postgres user.
as_pg() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

init() {
  [[ -f "$DATA/PG_VERSION" ]] && return 0
  # shellcheck disable=SC1091
  source "$STATE/secrets.env"
  local bin pwfile; bin="$(pg_bindir)"
  mkdir -p "$DATA" "$SOCKDIR" "$STATE/logs"
  pwfile="$STATE/postgres/pwfile"
  printf '%s\n' "$PG_ADMIN_PASSWORD" >"$pwfile"
  if [[ $EUID -eq 0 ]]; then chown -R postgres:postgres "$STATE/postgres"; fi
  log "initialising a database cluster"
  as_pg "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 --pwfile="$pwfile" >>"$PGLOG.init" 2>&1
  rm -f "$pwfile"
}

start() {
  install
  init
  local bin; bin="$(pg_bindir)"
  if as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then log "PostgreSQL already running"; return 0; fi
  if [[ $EUID -eq 0 ]]; then chown -R postgres:postgres "$STATE/postgres"; touch "$PGLOG"; chown postgres "$PGLOG"; fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT (fsync=$FSYNC)"
  as_pg "$bin/pg_ctl" -D "$DATA" -l "$PGLOG" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $SOCKDIR -c fsync=$FSYNC -c max_connections=300 -c shared_buffers=256MB" \
    start >/dev/null
  wait_until 60 PostgreSQL "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
  log "PostgreSQL ready"
}

stop() {
  local bin; bin="$(pg_bindir)" || return 0
  [[ -f "$DATA/postmaster.pid" ]] || return 0
  log "stopping PostgreSQL"
  as_pg "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
}

status() {
  local bin; bin="$(pg_bindir)" || { echo "postgres: not installed"; return 0; }
  if [[ -f "$DATA/postmaster.pid" ]] && as_pg "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    echo "postgres: running, 127.0.0.1:$PG_PORT database rekisteri"
  else echo "postgres: stopped"; fi
}

"${1:-status}"
