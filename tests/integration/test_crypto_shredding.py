"""Crypto-shredding against the real PostgreSQL, in an isolated schema owned by svc_records.

After `shred`, the wrapped key is gone from the table, a fresh key store (no cache) has no key
for the customer, and ciphertext written before the erasure cannot be decrypted with any key
left in the table, while another customer's data is untouched.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from services.common.crypto import (
    SHREDDED,
    DataKey,
    DecryptionError,
    KeyShreddedError,
    KeyStore,
    associated_data,
    decrypt,
    decrypt_fields,
    decrypt_or_mask,
    encrypt,
    encrypt_fields,
    migration_sql,
)
from tests.support.infra import Infra

pytestmark = pytest.mark.real

Connect = Callable[[], Awaitable["asyncpg.Connection[asyncpg.Record]"]]


@pytest.fixture
async def connect(infra: Infra) -> AsyncIterator[Connect]:
    """Connections as svc_records to a throw-away schema holding `subject_keys`."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.pg_admin_dsn)
    await admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION svc_records")
    opened: list[asyncpg.Connection[asyncpg.Record]] = []

    async def open_one() -> asyncpg.Connection[asyncpg.Record]:
        conn = await asyncpg.connect(infra.pg_dsn("records"))
        await conn.execute(f"SET search_path = {schema}")
        opened.append(conn)
        return conn

    first = await open_one()
    await first.execute(migration_sql())
    try:
        yield open_one
    finally:
        for conn in opened:
            await conn.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def _ids() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"A-{run}", f"B-{run}"


async def _wrapped(conn: asyncpg.Connection[asyncpg.Record], customer_id: str) -> bytes | None:
    value: bytes | None = await conn.fetchval(
        "SELECT wrapped_key FROM subject_keys WHERE customer_id = $1", customer_id
    )
    return value


async def test_shredding_makes_earlier_ciphertext_unreadable(connect: Connect) -> None:
    conn = await connect()
    kek = os.urandom(32)
    store = KeyStore(None, kek)
    a_id, b_id = _ids()
    key_a = await store.get_or_create(conn, a_id)
    key_b = await store.get_or_create(conn, b_id)
    aad_a = associated_data(a_id, "CustomerRegistered", 1)
    aad_b = associated_data(b_id, "CustomerRegistered", 1)
    blob_a = encrypt(key_a, b"Maija Meikalainen", aad=aad_a)
    fields_a = encrypt_fields(key_a, {"name": "Maija", "email": "maija@example.fi"}, aad_a)
    blob_b = encrypt(key_b, b"Matti Virtanen", aad=aad_b)

    # The customer's own key, as a fresh store reads it back from the table, decrypts.
    reread = await KeyStore(conn, kek).get(None, a_id)
    assert reread == key_a
    assert decrypt(reread, blob_a, aad=aad_a) == b"Maija Meikalainen"
    assert decrypt_fields(reread, fields_a, aad_a)["email"] == "maija@example.fi"
    # Another customer's key, or other associated data, does not.
    with pytest.raises(DecryptionError):
        decrypt(key_b, blob_a, aad=aad_a)
    with pytest.raises(DecryptionError):
        decrypt(key_a, blob_a, aad=associated_data(a_id, "CustomerRegistered", 2))
    with pytest.raises(DecryptionError):
        decrypt(key_a, blob_a, aad=aad_b)

    old_wrapped = await _wrapped(conn, a_id)
    assert old_wrapped is not None
    assert key_a.material not in old_wrapped

    assert await store.shred(conn, a_id) is True

    assert await _wrapped(conn, a_id) is None
    assert (
        await conn.fetchval("SELECT count(*) FROM subject_keys WHERE wrapped_key = $1", old_wrapped)
        == 0
    )
    assert await conn.fetchval(
        "SELECT shredded_at IS NOT NULL FROM subject_keys WHERE customer_id = $1", a_id
    )
    assert await store.get(conn, a_id) is None
    fresh = KeyStore(None, kek)
    assert await fresh.get(conn, a_id) is None
    with pytest.raises(KeyShreddedError):
        await fresh.get_or_create(conn, a_id)
    assert decrypt_or_mask(await fresh.get(conn, a_id), fields_a, aad_a) == {
        "name": SHREDDED,
        "email": SHREDDED,
    }
    # No key left in the table opens the earlier ciphertext.
    survivors = await conn.fetch(
        "SELECT customer_id FROM subject_keys WHERE wrapped_key IS NOT NULL"
    )
    assert [r["customer_id"] for r in survivors] == [b_id]
    for row in survivors:
        survivor = await fresh.get(conn, row["customer_id"])
        assert survivor is not None
        with pytest.raises(DecryptionError):
            decrypt(survivor, blob_a, aad=aad_a)

    # The other customer is unaffected.
    key_b_again = await fresh.get(conn, b_id)
    assert key_b_again == key_b
    assert decrypt(key_b_again, blob_b, aad=aad_b) == b"Matti Virtanen"
    assert await fresh.shred(conn, f"never-{uuid.uuid4().hex[:8]}") is False


async def test_a_rolled_back_key_leaves_nothing_behind(connect: Connect) -> None:
    conn = await connect()
    store = KeyStore(None, os.urandom(32))
    a_id, _ = _ids()

    tx = conn.transaction()
    await tx.start()
    phantom = await store.get_or_create(conn, a_id)
    assert await store.get(conn, a_id) == phantom  # visible inside its own transaction
    await tx.rollback()

    assert await store.get(conn, a_id) is None
    real = await store.get_or_create(conn, a_id)
    assert real.material != phantom.material
    assert await _wrapped(conn, a_id) is not None


async def test_concurrent_first_use_agrees_on_one_key(connect: Connect) -> None:
    first, second = await connect(), await connect()
    kek = os.urandom(32)
    a_id, _ = _ids()
    tx = first.transaction()
    await tx.start()
    winner = await KeyStore(None, kek).get_or_create(first, a_id)
    racer = asyncio.ensure_future(KeyStore(None, kek).get_or_create(second, a_id))
    await asyncio.sleep(0.3)
    assert not racer.done()  # blocked on the uncommitted row's unique key
    await tx.commit()
    loser: DataKey = await asyncio.wait_for(racer, timeout=10)
    assert loser == winner
    assert await second.fetchval("SELECT count(*) FROM subject_keys") == 1


async def test_bulk_keys_agree_with_single_keys_and_refuse_the_shredded(connect: Connect) -> None:
    conn = await connect()
    kek = os.urandom(32)
    old, new_a, new_b = (f"C-bulk-{uuid.uuid4().hex[:8]}" for _ in range(3))
    existing = await KeyStore(None, kek).get_or_create(conn, old)
    bulk = await KeyStore(None, kek, cache_ttl_s=0).get_or_create_many(conn, [old, new_a, new_b])
    assert set(bulk) == {old, new_a, new_b}
    assert bulk[old] == existing
    assert bulk[new_a] != bulk[new_b]
    fresh = KeyStore(None, kek, cache_ttl_s=0)
    assert await fresh.get(conn, new_a) == bulk[new_a]
    assert await fresh.get(conn, new_b) == bulk[new_b]
    assert await conn.fetchval("SELECT count(*) FROM subject_keys") == 3
    await fresh.shred(conn, new_b)
    with pytest.raises(KeyShreddedError):
        await fresh.get_or_create_many(conn, [new_a, new_b])
    assert await conn.fetchval("SELECT count(*) FROM subject_keys") == 3
