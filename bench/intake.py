"""Intake → records throughput and latency, beside a raw Kafka drain measured in the same run.

    python -m bench.intake [--events 100000] [--rounds 3] [--latency-seconds 20]

Each round pre-fills N realistic sealed registrations (~1 KB each on the wire, one new customer
each) into `intake.submissions.v1`, then measures:

(a) raw: a plain aiokafka consumer draining those N records (the floor any consumer pays);
(b) pipeline: intake and records as real processes (their own consumer groups starting at the
    pre-fill) until all N customers are committed in PostgreSQL (fsync as the server has it,
    printed).

It prints both rates and their ratio per round and the median over rounds, then drives an
open-loop load at 50% of the median pipeline rate and reports p50/p99/max end-to-end latency:
from the clinic app's send to the customer's snapshot arriving on `records.customer.v1` (which
the records outbox publishes only after the commit). Results go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from contracts.client import IntakeClient
from tests.support.dataset import Generator
from tests.support.infra import Infra, find_infra
from tests.support.system import System

TOPIC = "intake.submissions.v1"
PARTITIONS = 6
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def client_for(infra: Infra) -> IntakeClient:
    return IntakeClient(
        bootstrap_servers=infra.kafka_bootstrap,
        username="clinic-app",
        password=infra.kafka_password("clinic-app"),
        intake_public_key=infra.env["REKISTERI_INTAKE_PUBLIC_KEY"],
        producer_name="bench",
    )


async def end_offsets(infra: Infra) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**infra.kafka_client_args("intake"), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def prefill(infra: Infra, run: str, n: int) -> tuple[dict[TopicPartition, int], int]:
    """Publish n sealed registrations; return the offsets before them and the bytes sent."""
    start = await end_offsets(infra)
    gen = Generator(run, seed=hash(run) & 0xFFFF)
    client = client_for(infra)
    producer = AIOKafkaProducer(
        **infra.kafka_client_args("clinic-app"),
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        compression_type=None,
    )
    await producer.start()
    sent_bytes = 0
    t0 = time.perf_counter()
    try:
        pending = []
        for i in range(n):
            doc, _ = gen.registration(f"B{run[:8]}-{i:07d}")
            key, value, _ = client.encode(doc)
            sent_bytes += len(value)
            pending.append(await producer.send(TOPIC, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                if (i + 1) % 20000 == 0:
                    log(f"  pre-filled {i + 1:,}/{n:,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    log(f"  pre-fill: {n:,} events, {sent_bytes / n:.0f} B each, {time.perf_counter() - t0:.1f} s")
    return start, sent_bytes


async def raw_drain(infra: Infra, start: dict[TopicPartition, int], n: int) -> float:
    """Seconds a plain aiokafka consumer takes to read the n pre-filled records."""
    consumer = AIOKafkaConsumer(
        **infra.kafka_client_args("intake"),
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = list(start)
        consumer.assign(tps)
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        got = 0
        t0 = time.perf_counter()
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            got += sum(len(v) for v in batch.values())
        return time.perf_counter() - t0
    finally:
        await consumer.stop()


async def commit_group(infra: Infra, principal: str, group: str, offsets: dict[Any, int]) -> None:
    consumer = AIOKafkaConsumer(
        **infra.kafka_client_args(principal), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def count_customers(conn: asyncpg.Connection[Any], prefix: str) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM customers WHERE customer_id LIKE $1", prefix + "%"
        )
    )


async def pipeline(infra: Infra, run: str, start: dict[TopicPartition, int], n: int) -> float:
    """Seconds from the services' start to all n customers committed in PostgreSQL."""
    records_ends = {
        TopicPartition("records.commands.v1", p): o
        for p, o in (await _ends(infra, "records", "records.commands.v1")).items()
    }
    await commit_group(infra, "intake", f"intake.{run}", start)
    await commit_group(infra, "records", f"records.{run}", records_ends)
    with tempfile.TemporaryDirectory() as tmp:
        system = System(infra, run, Path(tmp))
        system.add("intake")
        system.add("records")
        conn = await asyncpg.connect(infra.pg_dsn("records"))
        try:
            t0 = time.perf_counter()
            await system.start_all()
            ready = time.perf_counter()
            prefix = f"B{run[:8]}-"
            last_report = ready
            while (done := await count_customers(conn, prefix)) < n:
                for svc in system.services.values():
                    if not svc.alive():
                        raise RuntimeError(f"{svc.name} died:\n{svc.tail()}")
                if time.perf_counter() - last_report > 10:
                    log(f"  pipeline: {done:,}/{n:,} customers committed")
                    last_report = time.perf_counter()
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - ready
            log(f"  services ready in {ready - t0:.1f} s (not counted)")
            return elapsed
        finally:
            await conn.close()
            system.stop_all()


async def _ends(infra: Infra, principal: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**infra.kafka_client_args(principal), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def latency(infra: Infra, rate: float, seconds: float) -> dict[str, float]:
    """Open-loop load at `rate`/s; latency from send to the snapshot on records.customer.v1."""
    run = uuid.uuid4().hex
    gen = Generator(run, seed=11)
    client = client_for(infra)
    snapshot_ends = await _ends(infra, "analytics", "records.customer.v1")
    await commit_group(
        infra,
        "analytics",
        f"analytics.bench-{run}",
        {TopicPartition("records.customer.v1", p): o for p, o in snapshot_ends.items()},
    )
    start = await end_offsets(infra)
    await commit_group(infra, "intake", f"intake.{run}", start)
    records_ends = await _ends(infra, "records", "records.commands.v1")
    await commit_group(
        infra,
        "records",
        f"records.{run}",
        {TopicPartition("records.commands.v1", p): o for p, o in records_ends.items()},
    )
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        system = System(infra, run, Path(tmp))
        system.add("intake")
        system.add("records")
        await system.start_all()
        watcher = AIOKafkaConsumer(
            "records.customer.v1",
            **infra.kafka_client_args("analytics"),
            group_id=f"analytics.bench-{run}",
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        await watcher.start()
        producer = AIOKafkaProducer(
            **infra.kafka_client_args("clinic-app"), enable_idempotence=True, linger_ms=0
        )
        await producer.start()

        async def watch() -> None:
            while len(latencies) < total:
                batch = await watcher.getmany(timeout_ms=200)
                now = time.perf_counter()
                for records in batch.values():
                    for r in records:
                        t = sent_at.pop(r.key, None) if r.key else None
                        if t is not None:
                            latencies.append(now - t)

        watching = asyncio.create_task(watch())
        try:
            t0 = time.perf_counter()
            for i in range(total):
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                doc, _ = gen.registration(f"L{run[:8]}-{i:07d}")
                key, value, _ = client.encode(doc)
                sent_at[key] = time.perf_counter()
                await producer.send(TOPIC, value, key=key)
            await asyncio.wait_for(watching, timeout=120)
        finally:
            watching.cancel()
            await producer.stop()
            await watcher.stop()
            system.stop_all()
    latencies.sort()
    return {
        "rate_per_s": rate,
        "events": float(total),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)],
        "max_ms": 1000 * latencies[-1],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    infra = find_infra()
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    try:
        fsync = await admin.fetchval("SHOW fsync")
        sync_commit = await admin.fetchval("SHOW synchronous_commit")
    finally:
        await admin.close()
    log(f"postgres fsync={fsync} synchronous_commit={sync_commit}; {args.events:,} events/round")
    rounds = []
    for r in range(args.rounds):
        run = uuid.uuid4().hex
        log(f"round {r + 1}/{args.rounds}")
        start, sent_bytes = await prefill(infra, run, args.events)
        raw_s = await raw_drain(infra, start, args.events)
        pipe_s = await pipeline(infra, run, start, args.events)
        result = {
            "raw_per_s": args.events / raw_s,
            "pipeline_per_s": args.events / pipe_s,
            "ratio": raw_s / pipe_s,
            "bytes_per_event": sent_bytes / args.events,
        }
        rounds.append(result)
        log(
            f"  raw drain {result['raw_per_s']:,.0f}/s, pipeline {result['pipeline_per_s']:,.0f} "
            f"customers/s, ratio {result['ratio']:.1%}"
        )
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    load = await latency(infra, median["pipeline_per_s"] * 0.5, args.latency_seconds)
    return {
        "benchmark": "intake",
        "events_per_round": args.events,
        "rounds": rounds,
        "median": median,
        "latency_at_50pct": load,
        "postgres_fsync": fsync,
        "targets": {
            "ratio_min": 0.20,
            "pipeline_per_s_min": 2000,
            "p99_ms_max": 250,
        },
        "met": {
            "ratio": median["ratio"] >= 0.20,
            "pipeline_rate": median["pipeline_per_s"] >= 2000,
            "p99": load["p99_ms"] <= 250,
        },
    }


def report(out: dict[str, Any]) -> None:
    m, lat = out["median"], out["latency_at_50pct"]
    print()
    print(f"intake benchmark, median of {len(out['rounds'])} rounds x {out['events_per_round']:,}")
    print(f"  raw aiokafka drain      {m['raw_per_s']:>10,.0f} records/s")
    print(
        f"  intake -> records       {m['pipeline_per_s']:>10,.0f} customers/s "
        f"(fsync={out['postgres_fsync']})"
    )
    print(f"  pipeline / raw          {m['ratio']:>10.1%}   (target >= 20%, >= 2,000/s)")
    print(
        f"  latency at {lat['rate_per_s']:,.0f}/s (50%): p50 {lat['p50_ms']:.0f} ms, "
        f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms   (target p99 <= 250 ms)"
    )
    print(f"  targets met: {out['met']}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args()
    out = asyncio.run(main(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    report(out)
    print(f"  written to {RESULTS}")


if __name__ == "__main__":
    cli()
