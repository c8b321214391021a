#!/usr/bin/env bash
# `make run`: the infrastructure, then every service as its own process; logs streamed; Ctrl-C
# (or `make stop` from another shell) stops the services and the infrastructure cleanly.
# Usage: run.sh run|stop|status
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"
PY="$REPO_ROOT/.venv/bin/python"
RUN="$STATE/run"

services() {
  local d
  for d in "$REPO_ROOT"/services/*/; do
    [[ -f "$d/__main__.py" ]] && basename "$d"
  done
}

stop_services() {
  local s
  for s in $(services); do stop_pid "$RUN/svc-$s.pid" "$s"; done
}

run() {
  bash "$HERE/infra.sh" up
  set -a; source "$STATE/env"; set +a
  mkdir -p "$RUN" "$STATE/logs"
  local s port logs=()
  for s in $(services); do
    if pid_alive "$RUN/svc-$s.pid"; then log "$s already running"; continue; fi
    # Only the service's own variables: no other service's credentials, no admin secrets.
    # The shell writes its own pid and then execs the service, so the pid file names the service
    # itself (setsid may fork, so `$!` would not).
    (cd "$REPO_ROOT" && setsid env -i PATH="$PATH" HOME="$HOME" LANG="${LANG:-C.UTF-8}" \
      bash -c "echo \$\$ >'$RUN/svc-$s.pid'; set -a; source '$STATE/services/$s.env'; exec '$PY' -m services.$s" \
      >>"$STATE/logs/$s.log" 2>&1 </dev/null &)
    for _ in $(seq 1 50); do [[ -s "$RUN/svc-$s.pid" ]] && break; sleep 0.1; done
    logs+=("$STATE/logs/$s.log")
  done
  trap 'echo; [[ -n "${tail_pid:-}" ]] && kill "$tail_pid" 2>/dev/null; stop_services; bash "$HERE/infra.sh" down; exit 0' INT TERM
  echo
  echo "Rekisteri is running:"
  echo "  Kafka       127.0.0.1:$KAFKA_PORT (SASL_PLAINTEXT, SCRAM-SHA-512; users per service)"
  echo "  PostgreSQL  127.0.0.1:$PG_PORT database rekisteri (one role and schema per service)"
  echo "  S3          http://127.0.0.1:$S3_PORT (SeaweedFS; one identity per service)"
  for s in $(services); do
    port_var="${s^^}_HEALTH_PORT"; port="${!port_var:-0}"
    echo "  $s: pid $(cat "$RUN/svc-$s.pid"), health http://127.0.0.1:$port/health, log $STATE/logs/$s.log"
  done
  echo "  settings and local credentials: $STATE/env (generated; never commit)"
  echo "Streaming logs; Ctrl-C or 'make stop' stops everything."
  echo
  local tail_pid=""
  if ((${#logs[@]})); then
    tail -n 0 -F "${logs[@]}" &
    tail_pid=$!
  fi
  # Wait until stopped from another shell (the pid files vanish) or interrupted.
  # `|| true`: a sleep killed by Ctrl-C must reach the trap, not errexit.
  while pid_alive "$STATE/run/kafka.pid"; do sleep 1 || true; done
  [[ -n "$tail_pid" ]] && kill "$tail_pid" 2>/dev/null
  stop_services
  log "stopped"
}

stop() {
  stop_services
  bash "$HERE/infra.sh" down
}

status() {
  local s
  for s in $(services); do
    if pid_alive "$RUN/svc-$s.pid"; then echo "$s: running (pid $(cat "$RUN/svc-$s.pid"))"; else echo "$s: stopped"; fi
  done
}

"${1:-status}"
