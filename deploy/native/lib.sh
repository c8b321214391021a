# shellcheck shell=bash
# Shared helpers for the native (no-Docker) infrastructure scripts.
#
# Two places, kept apart:
#   CACHE  - downloads and builds, outside the checkout, keyed by version (reused by fresh clones)
#   STATE  - runtime state of this checkout (data dirs, logs, pid files, generated secrets)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${REKISTERI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rekisteri}"
STATE="${REKISTERI_STATE:-$REPO_ROOT/.rekisteri}"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"

KAFKA_PORT="${REKISTERI_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${REKISTERI_KAFKA_CONTROLLER_PORT:-19093}"
PG_PORT="${REKISTERI_PG_PORT:-15432}"
S3_PORT="${REKISTERI_S3_PORT:-18333}"
SEAWEED_MASTER_PORT="${REKISTERI_SEAWEED_MASTER_PORT:-19333}"
SEAWEED_VOLUME_PORT="${REKISTERI_SEAWEED_VOLUME_PORT:-18080}"
SEAWEED_FILER_PORT="${REKISTERI_SEAWEED_FILER_PORT:-18888}"

mkdir -p "$CACHE" "$STATE"

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_alive FILE: true when FILE names a running process.
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid FILE NAME: TERM the process in FILE, wait up to 30 s, then KILL it.
stop_pid() {
  local file="$1" name="$2" pid i
  if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
  pid="$(cat "$file")"
  log "stopping $name (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 "${STOP_TIMEOUT_TENTHS:-300}"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in time; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$file"
}

# wait_until SECONDS DESCRIPTION CMD...: run CMD until it succeeds or the deadline passes.
wait_until() {
  local deadline=$((SECONDS + $1)) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "$what not ready in time"; fi
    sleep 0.2
  done
}

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# random_secret: 32 url-safe characters.
random_secret() { head -c 24 /dev/urandom | base64 | tr '+/' '-_'; }
