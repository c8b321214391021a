#!/usr/bin/env bash
# `make test`: bring up what is missing, run the whole suite against the real servers, then stop
# what this run started (infrastructure a developer already had running is left running).
source "$(dirname "$0")/lib.sh"
HERE="$(dirname "$0")"
cd "$REPO_ROOT"

was_running=0
if pid_alive "$STATE/run/kafka.pid" && pid_alive "$STATE/run/seaweedfs.pid"; then was_running=1; fi
cleanup() { if ((was_running == 0)); then bash "$HERE/infra.sh" down; fi; }
trap cleanup EXIT

# Small compaction windows so tests can watch tombstones take effect; fsync stays on.
export REKISTERI_COMPACTION_MS="${REKISTERI_COMPACTION_MS:-5000}"
bash "$HERE/infra.sh" up
# The tests read .rekisteri/env themselves (tests/support/infra.py); nothing is exported here,
# so no deployment variable can leak into the unit tier.

log "lint"
.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy
log "tests"
.venv/bin/python -m pytest tests "$@"
