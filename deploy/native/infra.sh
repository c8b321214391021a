#!/usr/bin/env bash
# The whole infrastructure: install what is missing, start, provision; or stop; or report.
# Usage: infra.sh install|up|down|status
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"
PY="${PYTHON:-$REPO_ROOT/.venv/bin/python}"

install() {
  # The three installs are independent: run them side by side and wait for all.
  local pids=() rc=0
  bash "$HERE/kafka.sh" install & pids+=($!)
  bash "$HERE/seaweedfs.sh" install & pids+=($!)
  bash "$HERE/postgres.sh" install & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  ((rc == 0)) || die "install failed"
}

up() {
  local started=$SECONDS
  install
  chmod o+x "$STATE" 2>/dev/null || true   # the postgres user must reach its data dir
  (cd "$REPO_ROOT" && "$PY" -m deploy.provision secrets s3-config)
  local pids=() rc=0
  bash "$HERE/postgres.sh" start & pids+=($!)
  bash "$HERE/kafka.sh" start & pids+=($!)
  bash "$HERE/seaweedfs.sh" start & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  ((rc == 0)) || die "a server failed to start; see $STATE/logs/"
  (cd "$REPO_ROOT" && "$PY" -m deploy.provision kafka postgres s3 env)
  log "infrastructure up in $((SECONDS - started)) s; settings in $STATE/env"
}

down() {
  bash "$HERE/seaweedfs.sh" stop || true
  bash "$HERE/kafka.sh" stop || true
  bash "$HERE/postgres.sh" stop || true
}

status() {
  bash "$HERE/kafka.sh" status
  bash "$HERE/postgres.sh" status
  bash "$HERE/seaweedfs.sh" status
}

"${1:-status}"
