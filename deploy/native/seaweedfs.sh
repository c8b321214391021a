#!/usr/bin/env bash
# SeaweedFS (S3 gateway) built from source with Go at a pinned version, started on 127.0.0.1.
# Usage: seaweedfs.sh install|start|stop|status
source "$(dirname "$0")/lib.sh"

BIN_DIR="$CACHE/seaweedfs-$SEAWEEDFS_VERSION"
WEED="$BIN_DIR/weed"
DATA="$STATE/seaweedfs"
PIDFILE="$STATE/run/seaweedfs.pid"
LOGFILE="$STATE/logs/seaweedfs.log"

install() {
  if [[ -f "$BIN_DIR/.complete" && -x "$WEED" ]]; then return 0; fi
  command -v go >/dev/null || die "Go is needed to build SeaweedFS (https://go.dev/doc/install)"
  log "building SeaweedFS $SEAWEEDFS_VERSION from source (first time only; takes a few minutes)"
  local src work
  src="$(go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  work="$(mktemp -d)"
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  mkdir -p "$BIN_DIR"
  (cd "$work" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -o "$BIN_DIR/weed.tmp" ./weed)
  mv "$BIN_DIR/weed.tmp" "$WEED"
  rm -rf "$work"
  touch "$BIN_DIR/.complete"
  log "SeaweedFS built: $WEED"
}

s3_ready() {
  # Unauthenticated list-buckets must be *refused* (403) once identities are loaded.
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/")" || return 1
  [[ "$code" == "403" || "$code" == "200" ]]
}

start() {
  install
  [[ -f "$STATE/s3/identities.json" ]] || die "no S3 identities; run provisioning (deploy/native/infra.sh up)"
  if pid_alive "$PIDFILE"; then log "SeaweedFS already running"; return 0; fi
  mkdir -p "$DATA" "$STATE/run" "$STATE/logs"
  log "starting SeaweedFS S3 on 127.0.0.1:$S3_PORT"
  setsid "$WEED" server -dir="$DATA" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$SEAWEED_MASTER_PORT" -volume.port="$SEAWEED_VOLUME_PORT" \
    -filer -filer.port="$SEAWEED_FILER_PORT" \
    -s3 -s3.port="$S3_PORT" -s3.config="$STATE/s3/identities.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -volume.max=0 -master.volumeSizeLimitMB=64 \
    >>"$LOGFILE" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_until 120 "SeaweedFS S3" s3_ready
  log "SeaweedFS ready"
}

# SeaweedFS finishes its own flushes quickly but then waits on gRPC streams for ever: 5 s grace.
stop() { STOP_TIMEOUT_TENTHS=50 stop_pid "$PIDFILE" SeaweedFS; }
status() { if pid_alive "$PIDFILE"; then echo "seaweedfs: running (pid $(cat "$PIDFILE")), s3 http://127.0.0.1:$S3_PORT"; else echo "seaweedfs: stopped"; fi; }

"${1:-status}"
