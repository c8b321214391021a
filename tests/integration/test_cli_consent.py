"""`rekisteri consent` and `rekisteri marketing audience` against the real stack.

Intake, consent and marketing run as processes with this run's consumer groups, each started
at the end of the topics it reads (`tests.support.system`, `tests.support.kafka`). The CLI runs
in-process through typer's `CliRunner` (in a thread, since it runs its own event loop), reading
the real `.rekisteri/env`: it publishes as `clinic-app` through intake, and reads consent's and
marketing's schemas with their roles. Customer numbers and staff ids are unique to the run, and
the audit readers keep only this run's actors, since topics and schemas are shared.

Analytics and photos do not run here: a directive that expects them stays pending, unless
another run's processors (reading the same directives) happen to answer it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner, Result

from cli.main import app
from contracts.audit import AUDIT_TOPIC, AuditEvent
from tests.support.infra import ENV_FILE, Infra
from tests.support.kafka import start_group_at_end
from tests.support.system import System

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(420)]

runner = CliRunner()
WAIT = "60"
"""The CLI's --wait: generous, since the first message also waits for group joins."""


class Run:
    """This module's running services and its unique names."""

    def __init__(self, infra: Infra, system: System) -> None:
        self.infra = infra
        self.system = system
        self.tag = system.run[:10]
        self.reception = ["--as", f"r-{self.tag}", "--role", "reception"]
        self.marketer = ["--as", f"m-{self.tag}", "--role", "marketing"]

    def customer(self, n: int) -> str:
        return f"C{self.tag}-{n}"

    async def cli(self, *args: str) -> Result:
        env = {"REKISTERI_ENV_FILE": str(ENV_FILE), "COLUMNS": "200"}
        return await asyncio.to_thread(
            runner.invoke, app, list(args), env=env, catch_exceptions=False
        )

    async def cli_json(self, *args: str, code: int = 0) -> Any:
        result = await self.cli(*args, "--json")
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)

    async def audience(self, channel: str = "marketing_email") -> list[str]:
        doc = await self.cli_json(
            "marketing",
            "audience",
            "--campaign",
            f"t-{self.tag}",
            "--channel",
            channel,
            *self.marketer,
        )
        assert doc["count"] == len(doc["customers"])
        customers: list[str] = doc["customers"]
        return customers


@pytest.fixture(scope="module")
async def run(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    tmp = tmp_path_factory.mktemp("cli-consent")
    system = System(infra, uuid.uuid4().hex, tmp)
    for name in ("intake", "consent", "marketing"):
        system.add(name)
    suffix = system.run
    await start_group_at_end(infra, "intake", f"intake.{suffix}", "intake.submissions.v1")
    await start_group_at_end(
        infra, "consent", f"consent.{suffix}", "consent.commands.v1", "privacy.acks.v1"
    )
    await start_group_at_end(
        infra, "marketing", f"marketing.{suffix}", "consent.state.v1", "privacy.directives.v1"
    )
    await system.start_all()
    try:
        yield Run(infra, system)
    finally:
        system.stop_all()
    for svc in system.services.values():
        assert "CRITICAL" not in svc.log_path.read_text("utf-8", "replace")


async def _wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def _marketing_version(infra: Infra, customer_id: str) -> int:
    conn = await asyncpg.connect(
        infra.pg_dsn("marketing"), server_settings={"search_path": "marketing"}
    )
    try:
        version = await conn.fetchval(
            "SELECT version FROM consent_view WHERE customer_id = $1", customer_id
        )
    finally:
        await conn.close()
    return int(version or 0)


async def _audit_events(
    infra: Infra, group: str, actors: set[str], done: Callable[[list[AuditEvent]], bool]
) -> list[AuditEvent]:
    """This run's audit events (by actor), read as compliance from where `group` started."""
    consumer = AIOKafkaConsumer(
        AUDIT_TOPIC, **infra.kafka_client_args("compliance"), group_id=group
    )
    await consumer.start()
    events: dict[uuid.UUID, AuditEvent] = {}  # the outbox delivers at least once
    deadline = time.monotonic() + 90
    try:
        while not done(list(events.values())) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    event = AuditEvent.model_validate_json(r.value)
                    if event.actor in actors:
                        events[event.event_id] = event
    finally:
        await consumer.stop()
    return list(events.values())


async def _give(run: Run, cid: str) -> None:
    given = await run.cli_json(
        "consent",
        "give",
        cid,
        "--purpose",
        "marketing_email",
        "--notice-version",
        "2026.1",
        "--channel",
        "desk",
        "--evidence",
        f"form-{run.tag}",
        *run.reception,
        "--wait",
        WAIT,
    )
    assert given["outcome"] == "applied", given
    assert given["applied"] is True
    assert given["version"] == 1
    assert given["directive"] is None
    email = given["state"]["purposes"]["marketing_email"]
    assert (email["status"], email["allowed"], email["notice_version"]) == (
        "given",
        True,
        "2026.1",
    )
    assert (email["channel"], email["actor"], email["recorded_by"]) == (
        "desk",
        "customer",
        f"r-{run.tag}",
    )


async def _withdraw(run: Run, cid: str) -> dict[str, Any]:
    withdrawn = await run.cli_json(
        "consent",
        "withdraw",
        cid,
        "--purpose",
        "marketing_email",
        "--channel",
        "phone",
        *run.reception,
        "--wait",
        WAIT,
    )
    assert withdrawn["outcome"] == "applied", withdrawn
    assert withdrawn["version"] == 2
    directive: dict[str, Any] = withdrawn["directive"]
    assert directive is not None
    assert directive["consent_version"] == 2
    assert directive["reason"] == "withdrawal"
    assert directive["purposes"] == ["marketing_email"]
    assert directive["expected_services"] == ["marketing"]
    assert directive["fully_applied"] is True, directive
    assert directive["pending"] == []
    assert isinstance(directive["latency_ms"], int)
    assert directive["latency_ms"] >= 0
    return directive


async def _check_audit(run: Run, group: str, cid: str) -> None:
    """Every look at consent, every export and every refusal of this test was audited."""
    reception, marketer, other = (f"{p}-{run.tag}" for p in ("r", "m", "x"))

    def reads(events: list[AuditEvent]) -> list[AuditEvent]:
        return [e for e in events if e.actor == reception and e.resource == "consent.state"]

    def complete(events: list[AuditEvent]) -> bool:
        kinds = {(e.producer, e.actor, e.action, e.outcome, e.customer_id) for e in events}
        # One read per `show` (three) and one per change shown (two).
        return (
            len(reads(events)) >= 5
            and {
                ("marketing", marketer, "export", "success", cid),
                ("marketing", other, "export", "denied", None),
                ("consent", other, "read", "denied", cid),
            }
            <= kinds
        )

    events = await _audit_events(run.infra, group, {reception, marketer, other}, complete)
    assert complete(events), sorted((e.producer, e.actor, e.action, e.outcome) for e in events)
    assert len(reads(events)) == 5
    assert {(e.customer_id, e.outcome, e.producer) for e in reads(events)} == {
        (cid, "success", "consent")
    }
    exports = [e for e in events if e.action == "export" and e.customer_id == cid]
    assert [(e.actor, e.purpose, e.resource) for e in exports] == [
        (marketer, "marketing_email", "marketing.audience")
    ]


async def test_give_show_audience_withdraw_and_the_fan_out(run: Run) -> None:
    infra = run.infra
    cid = run.customer(1)
    group = f"compliance.test-{run.system.run}"
    await start_group_at_end(infra, "compliance", group, AUDIT_TOPIC)

    await _give(run, cid)
    shown = await run.cli_json("consent", "show", cid, *run.reception)
    assert shown["version"] == 1
    assert shown["purposes"]["marketing_email"]["allowed"] is True
    assert shown["purposes"]["marketing_sms"]["allowed"] is False
    assert shown["objections"] == []
    assert shown["directives"] == []

    async def marketing_has_it() -> bool:
        return await _marketing_version(infra, cid) >= 1

    await _wait_for(marketing_has_it, 60, "marketing to apply the consent state")
    assert cid in await run.audience("marketing_email")
    assert cid not in await run.audience("marketing_sms")

    directive = await _withdraw(run, cid)
    after = await run.cli_json("consent", "show", cid, *run.reception)
    email = after["purposes"]["marketing_email"]
    assert (email["status"], email["allowed"], email["channel"]) == ("withdrawn", False, "phone")
    assert after["version"] == 2
    [shown_directive] = after["directives"]
    assert shown_directive["directive_id"] == directive["directive_id"]
    assert shown_directive["fully_applied"] is True
    assert shown_directive["answered"] == ["marketing"]

    # Fully applied means marketing's suppression is durable: the next export leaves them out.
    assert cid not in await run.audience("marketing_email")

    table = await run.cli("consent", "show", cid, *run.reception)
    assert table.exit_code == 0, table.output
    assert "withdrawn" in table.stdout
    assert "fully applied in" in table.stdout

    other = ["--as", f"x-{run.tag}"]
    audience = ["--campaign", f"t-{run.tag}", "--channel", "marketing_email"]
    denied = await run.cli("marketing", "audience", *audience, *other, "--role", "reception")
    assert denied.exit_code == 1
    assert denied.stdout == ""
    looked = await run.cli("consent", "show", cid, *other, "--role", "marketing")
    assert looked.exit_code == 1

    await _check_audit(run, group, cid)


async def test_an_objection_stops_every_channel_and_names_who_must_answer(run: Run) -> None:
    cid = run.customer(2)
    objected = await run.cli_json(
        "consent",
        "object",
        cid,
        "--kind",
        "direct_marketing",
        "--as",
        f"m-{run.tag}",
        "--role",
        "marketing",  # any role may record a stop
        "--wait",
        WAIT,
    )
    assert objected["outcome"] == "applied", objected
    assert objected["version"] == 1
    directive = objected["directive"]
    assert directive["reason"] == "objection"
    assert directive["purposes"] == [
        "marketing_email",
        "marketing_phone",
        "marketing_post",
        "marketing_sms",
    ]
    assert directive["expected_services"] == ["marketing"]
    assert directive["fully_applied"] is True, directive
    # Marketing may record a stop but not read consent: the state is not shown to it.
    assert objected["state"] is None

    shown = await run.cli_json("consent", "show", cid, *run.reception)
    [objection] = shown["objections"]
    assert (objection["objection"], objection["absolute"]) == ("direct_marketing", True)
    assert not any(shown["purposes"][p]["allowed"] for p in directive["purposes"])
    for channel in ("marketing_post", "marketing_phone"):
        assert cid not in await run.audience(channel)

    # Analytics is not running here: its directive names it, and waits for its answer.
    analytics = await run.cli_json(
        "consent", "object", cid, "--kind", "analytics", *run.reception, "--wait", "5"
    )
    assert analytics["outcome"] == "applied", analytics
    assert analytics["directive"]["expected_services"] == ["analytics"]
    if not analytics["directive"]["fully_applied"]:
        assert analytics["directive"]["pending"] == ["analytics"]

    lift = await run.cli(
        "consent", "lift", cid, "--kind", "direct_marketing", *run.reception, "--json"
    )
    assert lift.exit_code == 2  # who asked must be said: the customer or their guardian
    lifted = await run.cli_json(
        "consent",
        "lift",
        cid,
        "--kind",
        "direct_marketing",
        "--actor",
        "customer",
        *run.reception,
        "--wait",
        WAIT,
    )
    assert lifted["outcome"] == "applied", lifted
    assert lifted["applied"] is True
    assert [o["objection"] for o in lifted["state"]["objections"]] == ["analytics"]


async def test_a_customer_consent_never_heard_of_is_not_found(run: Run) -> None:
    missing = await run.cli_json("consent", "show", run.customer(99), *run.reception, code=1)
    assert missing == {"error": "customer_not_found"}
