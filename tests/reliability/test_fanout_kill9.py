"""Every withdrawal reaches fully applied, even when a processor is `kill -9`ed mid-run.

Intake, consent, marketing, analytics and photos run as real processes with their own consumer
groups. 150 customers give e-mail and photo-storage consent; then 300 withdrawals and
objections (two per customer, spread over every processor) are published through intake at a
steady pace while marketing, analytics and photos are each killed with SIGKILL once and
restarted at once. Asserted: every one of the 300 directives reaches `fully_applied_at`
(consent's `directive_status`) within a bounded time, answered by exactly the services it
expected; each processor's view of every customer ends at the customer's final consent version
with exactly the purposes the versions allow; no service died on its own or raised an alert.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import pytest

from contracts.consent import Purpose, affected_services
from tests.support.consent import (
    FANOUT,
    PROCESSORS,
    SERVICE_PURPOSES,
    Clinic,
    ConsentModel,
    Views,
    assert_alive,
    assert_no_alerts,
    base_time,
    capture,
    eventually,
    objection,
    start_fanout,
    withdraw,
)

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from tests.support.infra import Infra
    from tests.support.system import System

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(600)]

log = logging.getLogger(__name__)

CUSTOMERS: Final = 150
STOPS_PER_CUSTOMER: Final = 2
STOP_RATE: Final = 30.0
"""Stops published per second: 300 take about ten seconds, long enough for three crashes."""
KILLS: Final = {"marketing": 0.2, "analytics": 0.45, "photos": 0.7}
"""When each processor is killed, as a share of the stops published."""
FULLY_APPLIED_WITHIN: Final = 120.0
STOPS: Final = (
    ("withdraw", Purpose.MARKETING_EMAIL),
    ("object", "analytics"),
    ("withdraw", Purpose.PHOTO_STORAGE),
    ("object", "direct_marketing"),
    ("withdraw", Purpose.ANALYTICS),
    ("object", "research"),
)
"""The stops, taken in turn: each processor answers a third of them or more."""


def stop_doc(cid: str, n: int, at: datetime) -> dict[str, Any]:
    """The `n`-th stop of the run for customer `cid`."""
    kind, what = STOPS[n % len(STOPS)]
    if kind == "withdraw":
        return withdraw(cid, Purpose(what), at)
    return objection(cid, str(what), at)


async def publish_stops(
    clinic: Clinic, system: System, model: ConsentModel, docs: list[dict[str, Any]]
) -> dict[str, float]:
    """Publish the stops at `STOP_RATE`, killing and restarting each processor on the way."""
    due = {round(share * len(docs)): name for name, share in KILLS.items()}
    killed: dict[str, float] = {}
    started = time.monotonic()
    for i, doc in enumerate(docs):
        if i in due:
            victim = system[due[i]]
            victim.kill9()
            victim.start()
            killed[victim.name] = time.monotonic() - started
        delay = started + i / STOP_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await clinic.send(doc)
        model.apply(doc)
    return killed


async def test_no_withdrawal_is_lost_when_processors_are_killed(
    infra: Infra, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex
    prefix = f"K{run[:8]}-"
    customers = [f"{prefix}{i:04d}" for i in range(CUSTOMERS)]
    system = await start_fanout(infra, run, tmp_path, services=FANOUT)
    views = await Views.open(infra)
    clinic = Clinic(infra)
    await clinic.start()
    model = ConsentModel()
    try:
        base = base_time()
        for cid in customers:
            for purpose in (Purpose.MARKETING_EMAIL, Purpose.PHOTO_STORAGE):
                doc = capture(cid, purpose, base)
                await clinic.send(doc)
                model.apply(doc)

        async def consents_recorded() -> bool:
            versions = await views.consent_versions(customers)
            return all(versions.get(c) == model[c].version for c in customers)

        await eventually(consents_recorded, within=60, what="every consent recorded")

        stops = [
            stop_doc(cid, i * STOPS_PER_CUSTOMER + n, base + timedelta(minutes=1 + n))
            for n in range(STOPS_PER_CUSTOMER)
            for i, cid in enumerate(customers)
        ]
        killed = await publish_stops(clinic, system, model, stops)
        published = time.monotonic()
        for svc in system.services.values():
            await svc.wait_ready()

        async def every_directive_applied() -> bool:
            rows = await views.directives(prefix)
            return len(rows) >= len(stops) and all(r["fully_applied_at"] for r in rows)

        await eventually(
            every_directive_applied,
            within=FULLY_APPLIED_WITHIN,
            pause=0.5,
            what=f"all {len(stops)} directives fully applied",
        )
        applied_after = time.monotonic() - published
        rows = await views.directives(prefix)
        await assert_directives(views, rows, model, len(stops))
        await assert_views(views, model, customers)
        assert_alive(system)
        assert_no_alerts(system)
        assert {name: system[name].starts for name in PROCESSORS} == dict.fromkeys(PROCESSORS, 2)
        latencies = sorted(int(r["latency_ms"]) for r in rows)
        log.info(
            "kill -9 at %s s; all %d directives fully applied %.1f s after the last stop; "
            "commit -> fully applied p50 %d ms, p99 %d ms, max %d ms",
            {k: round(v, 1) for k, v in killed.items()},
            len(rows),
            applied_after,
            statistics.median(latencies),
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            latencies[-1],
        )
    finally:
        await clinic.stop()
        await views.close()
        system.stop_all()


async def assert_directives(
    views: Views, rows: list[dict[str, Any]], model: ConsentModel, expected: int
) -> None:
    """One directive per stop, each answered by exactly the services it expected."""
    assert len(rows) == expected
    versions: dict[str, list[int]] = {}
    for row in rows:
        status = await views.directive(row["directive_id"])
        assert status is not None
        assert status.fully_applied_at is not None, "a directive never reached fully applied"
        assert status.latency_ms is not None
        assert status.reason in {"withdrawal", "objection"}
        assert status.pending == ()
        assert set(status.acks) == set(status.expected_services)
        assert status.expected_services == affected_services(status.purposes)
        versions.setdefault(status.customer_id, []).append(status.consent_version)
    for cid, got in versions.items():
        # The stops were the customer's last commands: versions 3 and 4 of 4.
        final = model[cid].version
        assert sorted(got) == list(range(final - STOPS_PER_CUSTOMER + 1, final + 1))


async def assert_views(views: Views, model: ConsentModel, customers: list[str]) -> None:
    """Every processor ends at each customer's final version, allowing what it says."""
    for service in PROCESSORS:
        held = await views.processor_versions(service, customers)
        wrong = [c for c in customers if held.get(c) != model[c].version]
        assert wrong == [], f"{service} views not at the final version: {len(wrong)}"
    for cid in customers:
        m = model[cid]
        marketing = await views.marketing(cid)
        analytics = await views.analytics(cid)
        photos = await views.photos(cid)
        assert marketing is not None
        assert analytics is not None
        assert photos is not None
        assert marketing.allowed == m.allowed(SERVICE_PURPOSES["marketing"])
        assert analytics.allowed == m.allowed(SERVICE_PURPOSES["analytics"])
        assert photos.allowed == m.allowed(SERVICE_PURPOSES["photos"])
        assert await views.may_contact(cid, Purpose.MARKETING_EMAIL) == m.allows(
            Purpose.MARKETING_EMAIL
        )
