#!/usr/bin/env bash
# `make bench`: bring up the infrastructure if needed, run every benchmark, stop what it started.
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"
cd "$REPO_ROOT"
was_running=0
if pid_alive "$STATE/run/kafka.pid" && pid_alive "$STATE/run/seaweedfs.pid"; then was_running=1; fi
cleanup() { if ((was_running == 0)); then bash "$HERE/infra.sh" down; fi; }
trap cleanup EXIT
bash "$HERE/infra.sh" up
set -a; source "$STATE/env"; set +a
# The fan-out benchmark loads intake at 50% of the rate the intake benchmark just measured.
.venv/bin/python -m bench.intake "$@"
.venv/bin/python -m bench.fanout
