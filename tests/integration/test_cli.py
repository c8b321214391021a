"""The `rekisteri` CLI against the real stack: submit, customer show (audited), status.

Intake and records run as processes with this run's consumer groups (`tests.support.system`).
The CLI runs in-process through typer's `CliRunner` (in a thread, since it runs its own event
loop), reading the real `.rekisteri/env`. The example files are submitted with their customer
numbers rewritten to ones unique to the run, so runs never see each other's customers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner, Result

from cli.main import app
from contracts.audit import AUDIT_TOPIC, AuditEvent
from services.common import crypto
from tests.support.infra import ENV_FILE, REPO_ROOT, Infra
from tests.support.kafka import start_group_at_end
from tests.support.system import System

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(420)]

EXAMPLES = REPO_ROOT / "docs" / "examples"
AINO_HETU = "120785-912R"
runner = CliRunner()


class Run:
    """This module's running services and its unique names."""

    def __init__(self, infra: Infra, system: System, tmp: Path) -> None:
        self.infra = infra
        self.system = system
        self.tmp = tmp
        self.tag = system.run[:10]

    def customer(self, example_id: str) -> str:
        """The run's customer number for an example's (`EX-1001` -> `T<tag>-1001`)."""
        return f"T{self.tag}-{example_id.removeprefix('EX-')}"

    def example(self, name: str) -> Path:
        """A copy of an example file with the run's customer numbers."""
        out = []
        for line in (EXAMPLES / name).read_bytes().splitlines():
            doc = json.loads(line)
            if "customer_id" in doc:
                doc["customer_id"] = self.customer(doc["customer_id"])
            out.append(json.dumps(doc, ensure_ascii=False))
        path = self.tmp / name
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
        return path

    async def cli(self, *args: str) -> Result:
        env = {"REKISTERI_ENV_FILE": str(ENV_FILE), "COLUMNS": "200"}
        return await asyncio.to_thread(
            runner.invoke, app, list(args), env=env, catch_exceptions=False
        )


@pytest.fixture(scope="module")
async def run(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    tmp = tmp_path_factory.mktemp("cli")
    system = System(infra, uuid.uuid4().hex, tmp)
    system.add("intake")
    system.add("records")
    await start_group_at_end(infra, "intake", f"intake.{system.run}", "intake.submissions.v1")
    await start_group_at_end(infra, "records", f"records.{system.run}", "records.commands.v1")
    await system.start_all()
    try:
        yield Run(infra, system, tmp)
    finally:
        system.stop_all()
    for svc in system.services.values():
        assert "CRITICAL" not in svc.log_path.read_text("utf-8", "replace")


async def test_submit_reports_each_mistake_by_line(run: Run) -> None:
    path = run.example("with-errors.jsonl")
    result = await run.cli("submit", str(path), "--fresh-ids", "--json", "--wait", "15")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["sent"] == 6
    assert report["refused_locally"] == [{"line": 6, "reason": "missing_customer_id"}]
    assert {r["line"]: r["reasons"] for r in report["rejected"]} == {
        2: ["hetu_checksum@demographics.hetu"],
        3: ["hetu_format@demographics.hetu"],
        4: ["email_invalid@contact.emails[0]"],
        5: ["unknown_type@type"],
        7: ["not_supported_yet"],
    }
    fixed = {json.loads(line).get("event_id") for line in path.read_text().splitlines()}
    assert not fixed & {r["event_id"] for r in report["rejected"]}, "--fresh-ids was ignored"


async def _versions(infra: Infra, ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(infra.pg_dsn("records"))
    try:
        rows = await conn.fetch(
            "SELECT customer_id, version FROM customers WHERE customer_id = ANY($1::text[])", ids
        )
    finally:
        await conn.close()
    return {r["customer_id"]: r["version"] for r in rows}


async def _wait_for(check: Callable[[], Any], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def _audit_events(
    infra: Infra, group: str, done: Callable[[list[AuditEvent]], bool], within: float
) -> tuple[list[AuditEvent], list[bytes]]:
    """Audit events read as compliance from where `group` was started, until `done`."""
    consumer = AIOKafkaConsumer(
        AUDIT_TOPIC, **infra.kafka_client_args("compliance"), group_id=group
    )
    await consumer.start()
    events: list[AuditEvent] = []
    raw: list[bytes] = []
    seen: set[uuid.UUID] = set()
    deadline = time.monotonic() + within
    try:
        while not done(events) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    event = AuditEvent.model_validate_json(r.value)
                    if event.event_id not in seen:  # the outbox delivers at least once
                        seen.add(event.event_id)
                        raw.append(r.value)
                        events.append(event)
    finally:
        await consumer.stop()
    return events, raw


async def test_customer_show_masks_reveals_and_audits_every_read(run: Run) -> None:
    infra = run.infra
    aino, bertil, onni = (run.customer(f"EX-100{i}") for i in (1, 2, 3))
    group = f"compliance.test-{run.system.run}"
    await start_group_at_end(infra, "compliance", group, AUDIT_TOPIC)

    result = await run.cli(
        "submit", str(run.example("registrations.jsonl")), "--fresh-ids", "--json", "--wait", "3"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"sent": 8, "refused_locally": [], "rejected": []}
    expected = {aino: 4, bertil: 2, onni: 2}

    async def applied() -> bool:
        return await _versions(infra, list(expected)) == expected

    await _wait_for(applied, 90, "the register to apply the examples")

    staff = ("--as", "t1", "--role", "reception")
    shown = await run.cli("customer", "show", aino, *staff, "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["items"]["hetu"]["value"] == "120785-****"
    assert doc["items"]["emails"]["value"] == ["aino.uusi@example.fi"]
    assert doc["items"]["phones"]["value"] == ["+358501112233"]
    assert doc["items"]["preferred_language"]["value"] == "en"
    assert doc["history"]["emails"] == 2
    assert len(doc["visits"]) == 1
    assert isinstance(doc["age"], int)
    assert doc["age"] >= 41
    assert AINO_HETU not in shown.stdout

    table = await run.cli("customer", "show", aino, *staff)
    assert table.exit_code == 0, table.output
    assert "120785-****" in table.stdout
    assert "aino.uusi@example.fi" in table.stdout
    assert AINO_HETU not in table.stdout

    revealed = await run.cli("customer", "show", aino, *staff, "--reveal", "--json")
    assert revealed.exit_code == 0, revealed.output
    assert json.loads(revealed.stdout)["items"]["hetu"]["value"] == AINO_HETU

    prober = f"t2-{run.tag}"
    missing = await run.cli(
        "customer", "show", run.customer("EX-9999"), "--as", prober, "--role", "reception"
    )
    assert missing.exit_code == 1
    assert "no such customer" in missing.output

    await _shred(infra, bertil)
    shredded = await run.cli("customer", "show", bertil, *staff, "--json")
    assert shredded.exit_code == 0, shredded.output
    gone = json.loads(shredded.stdout)
    assert gone["shredded"] is True
    assert gone["items"]["hetu"]["value"] == crypto.SHREDDED
    assert gone["items"]["name"]["value"] == crypto.SHREDDED

    await _assert_reads_audited(infra, group, aino=aino, bertil=bertil, prober=prober)


async def _assert_reads_audited(
    infra: Infra, group: str, *, aino: str, bertil: str, prober: str
) -> None:
    """Every read landed on the audit topic once, as the records service's, without PII."""

    def reads(events: list[AuditEvent]) -> list[AuditEvent]:
        return [
            e
            for e in events
            if e.action.value == "read"
            and (e.actor == prober or (e.actor == "t1" and e.customer_id in {aino, bertil}))
        ]

    def complete(events: list[AuditEvent]) -> bool:
        return len(reads(events)) >= 9 + 1 + 2  # aino 3x3, the prober, bertil 2

    events, raw = await _audit_events(infra, group, complete, within=90)
    mine = reads(events)
    aino_reads = sorted((e.resource, e.reason_code or "") for e in mine if e.customer_id == aino)
    assert aino_reads == sorted(
        [("records.customer", ""), ("records.customer", ""), ("records.customer", "hetu_revealed")]
        + [("records.visit", "")] * 3
        + [("records.feedback", "")] * 3
    )
    for e in mine:
        assert e.producer == "records"
        assert e.purpose == "customer_care"
        assert e.actor_role == "reception"
    [probe] = [e for e in mine if e.actor == prober]
    assert (probe.customer_id, probe.outcome.value, probe.reason_code) == (
        None,
        "failed",
        "customer_not_found",
    )
    assert sorted(e.resource for e in mine if e.customer_id == bertil) == [
        "records.customer",
        "records.feedback",
    ]
    assert all(b"Esimerkki" not in r and AINO_HETU.encode() not in r for r in raw)


async def _shred(infra: Infra, customer_id: str) -> None:
    kek = base64.b64decode(infra.service_env("records")["RECORDS_KEK"])
    conn = await asyncpg.connect(infra.pg_dsn("records"))
    try:
        async with conn.transaction():
            assert await crypto.KeyStore(conn, kek).shred(None, customer_id)
    finally:
        await conn.close()


async def test_status_reports_lag_per_group_and_dead_letters(run: Run) -> None:
    result = await run.cli("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    groups = {(g["group"], g["topic"]) for g in report["lag"]}
    assert ("intake", "intake.submissions.v1") in groups
    assert ("records", "records.commands.v1") in groups
    assert all(isinstance(g["lag"], int) and g["lag"] >= 0 for g in report["lag"])
    dlq = {d["topic"]: d["count"] for d in report["dlq"]}
    assert {"intake.submissions.v1.dlq", "records.commands.v1.dlq"} <= set(dlq)
    assert all(isinstance(n, int) and n >= 0 for n in dlq.values())
