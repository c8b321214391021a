"""Clinic apps → intake → records, end to end on the real stack, with crashes.

10,000 submissions, 10% of them invalid (every kind of bad input), are published as clinic apps
would while intake and records run as real processes; each is `kill -9`ed three times and
restarted mid-run. Exactly the valid customers must land in the register, each with its last
contact change, with no event applied twice; every invalid submission must be answered on
`intake.rejected.v1` with its reason; and no canary personal data may appear in clear in any
topic (DLQs included), in either service's tables, or in their logs.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contracts.client import IntakeClient
from contracts.intake import SubmissionRejected
from services.common import crypto
from services.records.repository import load_customer
from tests.support.dataset import HETU_RE, Dataset, Generator, Sent
from tests.support.infra import Infra
from tests.support.kafka import start_group_at_end
from tests.support.system import System
from tests.support.topics import find_in_topics

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(900)]

TOTAL = 10_000
KILLS = ("records", "intake", "records", "intake", "records", "intake")


async def _publish(infra: Infra, client: IntakeClient, items: list[Sent]) -> None:
    producer = AIOKafkaProducer(
        **infra.kafka_client_args("clinic-app"),
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    try:
        pending = []
        for s in items:
            key: bytes | None
            if isinstance(s.value, dict):
                doc = {k: v for k, v in s.value.items() if k != "_canaries"}
                key, value, _ = client.encode(doc)
            else:
                key, value = s.key, s.value
            pending.append(await producer.send("intake.submissions.v1", value, key=key))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _collect_rejections(
    infra: Infra, group: str, want: int, deadline: float
) -> list[tuple[bytes | None, SubmissionRejected]]:
    consumer = AIOKafkaConsumer(
        "intake.rejected.v1",
        **infra.kafka_client_args("clinic-app"),
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[tuple[bytes | None, SubmissionRejected]] = []
    try:
        while len(out) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out.extend(
                    (r.key, SubmissionRejected.model_validate_json(r.value))
                    for r in records
                    if r.value is not None
                )
    finally:
        await consumer.stop()
    return out


async def _register_counts(infra: Infra, prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(infra.pg_dsn("records"))
    try:
        rows = await conn.fetch(
            "SELECT customer_id, version FROM customers WHERE customer_id LIKE $1",
            prefix + "%",
        )
    finally:
        await conn.close()
    return {r["customer_id"]: r["version"] for r in rows}


async def _wait_for_register(infra: Infra, data: Dataset, prefix: str, deadline: float) -> None:
    expected = {c.customer_id: c.events for c in data.customers.values()}
    while time.monotonic() < deadline:
        if await _register_counts(infra, prefix) == expected:
            return
        await asyncio.sleep(1)


def _leaks(text: str, tag: str, hetus: set[str]) -> bool:
    """Whether `text` holds a canary: the run's tag, or one of its identity codes."""
    return tag in text or bool(hetus.intersection(HETU_RE.findall(text)))


async def _plaintext_in_tables(
    infra: Infra, schemas: tuple[str, ...], tag: str, hetus: set[str]
) -> list[str]:
    """Tables of `schemas` (read as the superuser) in which a canary occurs in clear."""
    conn = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'",
            list(schemas),
        )
        leaking = []
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            rows = await conn.fetch(f"SELECT t::text AS row FROM {name} t")
            if _leaks("\n".join(r["row"] for r in rows), tag, hetus):
                leaking.append(name)
        return leaking
    finally:
        await conn.close()


async def test_ten_thousand_submissions_with_kill9_crashes(infra: Infra, tmp_path: Path) -> None:
    run = uuid.uuid4().hex
    data = Generator(run).dataset(TOTAL, invalid_share=0.10)
    assert len(data.sent) == TOTAL
    invalid = data.invalid
    assert len(invalid) == TOTAL // 10
    prefix = f"E{run[:8]}-"

    system = System(infra, run, tmp_path)
    system.add("intake")
    system.add("records")
    await start_group_at_end(infra, "intake", f"intake.{run}", "intake.submissions.v1")
    await start_group_at_end(infra, "records", f"records.{run}", "records.commands.v1")
    await start_group_at_end(infra, "clinic-app", f"clinic-app.{run}", "intake.rejected.v1")
    await system.start_all()
    started = time.monotonic()
    try:
        client = IntakeClient(
            bootstrap_servers=infra.kafka_bootstrap,
            username="clinic-app",
            password=infra.kafka_password("clinic-app"),
            intake_public_key=infra.env["REKISTERI_INTAKE_PUBLIC_KEY"],
        )
        chunks = len(KILLS) + 1
        size = -(-TOTAL // chunks)
        for i in range(chunks):
            await _publish(infra, client, data.sent[i * size : (i + 1) * size])
            if i < len(KILLS):
                await asyncio.sleep(0.7)  # let the pipeline get busy, then crash it
                victim = system[KILLS[i]]
                victim.kill9()
                victim.start()
        for svc in system.services.values():
            await svc.wait_ready()
        deadline = started + 600
        await _wait_for_register(infra, data, prefix, deadline)
        rejections = await _collect_rejections(infra, f"clinic-app.{run}", len(invalid), deadline)
        for svc in system.services.values():
            assert svc.alive(), f"{svc.name} crashed on its own:\n{svc.tail()}"
    finally:
        system.stop_all()

    assert system["intake"].starts == 4
    assert system["records"].starts == 4

    # Exactly the valid customers, each event applied exactly once (the version counts them).
    register = await _register_counts(infra, prefix)
    assert register == {c.customer_id: c.events for c in data.customers.values()}
    assert await _register_counts(infra, f"X{run[:8]}-") == {}, "an invalid customer landed"

    await _assert_last_contact_wins(infra, data)
    _assert_every_rejection(invalid, rejections)
    await _assert_no_plaintext(infra, data, system)


async def _assert_last_contact_wins(infra: Infra, data: Dataset) -> None:
    """Per-customer order held: each register entry ends with the last contact change."""
    pool = await asyncpg.create_pool(infra.pg_dsn("records"), min_size=1, max_size=2)
    assert pool is not None
    try:
        kek = base64.b64decode(infra.service_env("records")["RECORDS_KEK"])
        keys = crypto.KeyStore(pool, kek)
        async with pool.acquire() as conn:
            wrong = []
            for customer in data.customers.values():
                view = await load_customer(conn, keys, customer.customer_id)
                assert view is not None
                if list(view.value("emails")) != [customer.last_email]:
                    wrong.append(customer.customer_id)
            assert wrong == []
    finally:
        await pool.close()


def _assert_every_rejection(
    invalid: list[Sent], rejections: list[tuple[bytes | None, SubmissionRejected]]
) -> None:
    """Every invalid submission was answered with its reason."""
    by_event = {str(r.submission_event_id): r for _, r in rejections if r.submission_event_id}
    by_key: dict[bytes | None, list[SubmissionRejected]] = {}
    for key, r in rejections:
        by_key.setdefault(key, []).append(r)
    missing: Counter[str] = Counter()
    for s in invalid:
        assert s.expect_reason is not None
        if s.event_id is not None and s.event_id in by_event:
            codes = {x.code for x in by_event[s.event_id].reasons}
        else:
            codes = {x.code for r in by_key.get(s.key, []) for x in r.reasons}
        if s.expect_reason not in codes:
            missing[s.expect_reason] += 1
    assert not missing, f"rejections missing or with another reason: {dict(missing)}"


async def _assert_no_plaintext(infra: Infra, data: Dataset, system: System) -> None:
    """No canary in clear anywhere: topics (DLQs included), tables, logs."""
    canaries = data.canaries()
    assert len(canaries) > 4 * len(data.customers)
    tag = Generator(system.run).tag
    assert all(tag in c for c in canaries - data.hetus())
    leaks = await find_in_topics(infra, tag.encode(), {h.encode() for h in data.hetus()})
    assert leaks == {}, f"records with plaintext personal data, per topic: {leaks}"
    hetus = data.hetus()
    assert await _plaintext_in_tables(infra, ("records", "intake"), tag, hetus) == []
    for svc in system.services.values():
        log = svc.log_path.read_text("utf-8", "replace")
        assert not _leaks(log, tag, hetus), f"{svc.name} logged personal data"
        assert '"level": "CRITICAL"' not in log
