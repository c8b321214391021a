"""Envelope encryption, field helpers and the key store, against an in-memory key table."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import crypto
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
)

PERSONAL = "Maija Meikäläinen, 040 123 4567"
AAD_A = associated_data("A-1001", "CustomerRegistered", 1)


def _key(customer_id: str = "A-1001") -> DataKey:
    return DataKey(customer_id, os.urandom(32))


# --- values ---------------------------------------------------------------------------------


def test_round_trip_and_format() -> None:
    key = _key()
    blob = encrypt(key, PERSONAL.encode(), aad=AAD_A)
    assert blob[0] == crypto.FORMAT_VERSION
    assert len(blob) == 1 + 12 + len(PERSONAL.encode()) + 16
    assert PERSONAL.encode() not in blob
    assert decrypt(key, blob, aad=AAD_A) == PERSONAL.encode()


def test_each_encryption_uses_a_fresh_nonce() -> None:
    key = _key()
    first = encrypt(key, b"same", aad=AAD_A)
    second = encrypt(key, b"same", aad=AAD_A)
    assert first[1:13] != second[1:13]
    assert first != second


@given(
    plaintext=st.binary(max_size=2048),
    customer=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True),
)
def test_round_trip_any_bytes(plaintext: bytes, customer: str) -> None:
    key = DataKey(customer, bytes(range(32)))
    aad = associated_data(customer, "VisitRecorded", 3)
    assert decrypt(key, encrypt(key, plaintext, aad=aad), aad=aad) == plaintext


def test_another_customers_key_fails() -> None:
    blob = encrypt(_key("A-1001"), PERSONAL.encode(), aad=AAD_A)
    with pytest.raises(DecryptionError) as caught:
        decrypt(_key("B-2002"), blob, aad=AAD_A)
    message = str(caught.value)
    assert "Maija" not in message
    assert "A-1001" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    "aad",
    [
        associated_data("B-2002", "CustomerRegistered", 1),
        associated_data("A-1001", "ContactDetailsChanged", 1),
        associated_data("A-1001", "CustomerRegistered", 2),
        b"",
    ],
)
def test_other_associated_data_fails(aad: bytes) -> None:
    key = _key()
    blob = encrypt(key, PERSONAL.encode(), aad=AAD_A)
    with pytest.raises(DecryptionError):
        decrypt(key, blob, aad=aad)


@pytest.mark.parametrize(
    "position",
    [0, 1, 12, 13, -17, -1],
    ids=["version", "nonce-first", "nonce-last", "body", "tag-first", "tag-last"],
)
def test_tampered_ciphertext_fails(position: int) -> None:
    key = _key()
    blob = bytearray(encrypt(key, PERSONAL.encode(), aad=AAD_A))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        decrypt(key, bytes(blob), aad=AAD_A)


def test_truncated_ciphertext_fails() -> None:
    key = _key()
    blob = encrypt(key, b"", aad=AAD_A)
    with pytest.raises(DecryptionError, match="too short"):
        decrypt(key, blob[:-1], aad=AAD_A)
    assert decrypt(key, blob, aad=AAD_A) == b""


def test_associated_data_layout() -> None:
    assert associated_data("A-1001", "CustomerRegistered", 1) == b"A-1001|CustomerRegistered|1"
    with pytest.raises(crypto.CryptoError):
        associated_data("A|1", "CustomerRegistered", 1)


def test_data_key_hides_its_material() -> None:
    key = _key()
    assert key.material.hex() not in repr(key)
    assert repr(key.material) not in repr(key)
    with pytest.raises(crypto.CryptoError):
        DataKey("A-1001", b"short")


# --- fields ---------------------------------------------------------------------------------


def test_fields_round_trip_and_skip_none() -> None:
    key = _key()
    sealed = encrypt_fields(key, {"name": "Maija", "email": "m@example.fi", "phone": None}, AAD_A)
    assert set(sealed) == {"name", "email"}
    for text in sealed.values():
        base64.b64decode(text, validate=True)
    assert "Maija" not in str(sealed)
    assert decrypt_fields(key, sealed, AAD_A) == {"name": "Maija", "email": "m@example.fi"}


def test_fields_cannot_be_swapped() -> None:
    key = _key()
    sealed = encrypt_fields(key, {"name": "Maija", "email": "m@example.fi"}, AAD_A)
    swapped = {"name": sealed["email"], "email": sealed["name"]}
    with pytest.raises(DecryptionError):
        decrypt_fields(key, swapped, AAD_A)


def test_fields_reject_garbage() -> None:
    with pytest.raises(DecryptionError, match="base64"):
        decrypt_fields(_key(), {"name": "not base64!"}, AAD_A)


def test_mask_when_key_is_gone() -> None:
    key = _key()
    sealed = encrypt_fields(key, {"name": "Maija", "email": "m@example.fi"}, AAD_A)
    assert decrypt_or_mask(None, sealed, AAD_A) == {"name": SHREDDED, "email": SHREDDED}
    assert decrypt_or_mask(key, sealed, AAD_A)["name"] == "Maija"
    with pytest.raises(DecryptionError):
        decrypt_or_mask(_key(), sealed, AAD_A)


# --- key store ------------------------------------------------------------------------------


@dataclass
class _Row:
    wrapped_key: bytes | None
    key_version: int
    written_in: int
    shredded: bool = False


class FakeKeyTable:
    """`subject_keys` in memory, with just enough transaction semantics for the cache rule.

    Rows written by the current transaction are not settled; `commit` makes them settled,
    `rollback` removes them.
    """

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.tx = 1
        self.queries = 0

    def commit(self) -> None:
        self.tx += 1

    def rollback(self) -> None:
        self.rows = {k: r for k, r in self.rows.items() if r.written_in != self.tx}
        self.tx += 1

    async def fetchrow(self, query: str, *args: Any) -> dict[str, Any] | None:
        self.queries += 1
        customer_id = args[0]
        row = self.rows.get(customer_id)
        if query is crypto.SELECT_KEY:
            if row is None:
                return None
            return {
                "wrapped_key": row.wrapped_key,
                "key_version": row.key_version,
                "shredded": row.shredded,
                "settled": row.written_in != self.tx,
            }
        if query is crypto.INSERT_KEY:
            if row is not None:
                return None
            self.rows[customer_id] = _Row(args[1], args[2], self.tx)
            return {"customer_id": customer_id}
        if query is crypto.SHRED_KEY:
            if row is None:
                return None
            row.wrapped_key, row.shredded, row.written_in = None, True, self.tx
            return {"customer_id": customer_id}
        raise AssertionError("unexpected query")


KEK = bytes(range(32))


def _store(table: FakeKeyTable, **kwargs: Any) -> KeyStore:
    return KeyStore(table, KEK, **kwargs)  # type: ignore[arg-type]


async def test_get_or_create_makes_one_key_per_customer() -> None:
    table = FakeKeyTable()
    store = _store(table)
    first = await store.get_or_create(None, "A-1001")
    table.commit()
    assert await store.get_or_create(None, "A-1001") == first
    assert await _store(table).get(None, "A-1001") == first
    other = await store.get_or_create(None, "B-2002")
    assert other.material != first.material
    assert await _store(table).get(None, "nobody") is None


async def test_stored_key_is_wrapped() -> None:
    table = FakeKeyTable()
    key = await _store(table).get_or_create(None, "A-1001")
    wrapped = table.rows["A-1001"].wrapped_key
    assert wrapped is not None
    assert key.material not in wrapped
    assert wrapped[0] == crypto.FORMAT_VERSION
    assert len(wrapped) == 1 + 12 + 32 + 16
    table.commit()
    with pytest.raises(DecryptionError):
        await KeyStore(table, os.urandom(32)).get(None, "A-1001")  # type: ignore[arg-type]


async def test_wrapped_key_is_bound_to_its_customer() -> None:
    table = FakeKeyTable()
    store = _store(table)
    await store.get_or_create(None, "A-1001")
    await store.get_or_create(None, "B-2002")
    table.commit()
    table.rows["B-2002"].wrapped_key = table.rows["A-1001"].wrapped_key
    with pytest.raises(DecryptionError):
        await _store(table).get(None, "B-2002")


async def test_shred_destroys_the_key() -> None:
    table = FakeKeyTable()
    store = _store(table)
    key = await store.get_or_create(None, "A-1001")
    table.commit()
    blob = encrypt(key, PERSONAL.encode(), aad=AAD_A)
    assert await store.get(None, "A-1001") == key

    assert await store.shred(None, "A-1001") is True
    table.commit()
    assert table.rows["A-1001"].wrapped_key is None
    assert await store.get(None, "A-1001") is None
    assert await _store(table).get(None, "A-1001") is None
    with pytest.raises(KeyShreddedError):
        await store.get_or_create(None, "A-1001")
    assert decrypt_or_mask(await store.get(None, "A-1001"), {"x": "y"}, AAD_A) == {"x": SHREDDED}
    # Only the destroyed key could open it.
    with pytest.raises(DecryptionError):
        decrypt(await store.get_or_create(None, "B-2002"), blob, aad=AAD_A)


async def test_shred_is_idempotent_and_unknown_is_a_noop() -> None:
    table = FakeKeyTable()
    store = _store(table)
    assert await store.shred(None, "nobody") is False
    assert "nobody" not in table.rows
    await store.get_or_create(None, "A-1001")
    table.commit()
    assert await store.shred(None, "A-1001") is True
    assert await store.shred(None, "A-1001") is True


async def test_cache_serves_settled_keys_and_shred_invalidates() -> None:
    table = FakeKeyTable()
    store = _store(table)
    key = await store.get_or_create(None, "A-1001")
    table.commit()
    await store.get(None, "A-1001")
    before = table.queries
    assert await store.get(None, "A-1001") == key
    assert await store.get_or_create(None, "A-1001") == key
    assert table.queries == before
    await store.shred(None, "A-1001")
    assert await store.get(None, "A-1001") is None


async def test_cache_expires_so_a_shred_elsewhere_is_seen() -> None:
    table = FakeKeyTable()
    store = _store(table, cache_ttl_s=0)
    await store.get_or_create(None, "A-1001")
    table.commit()
    assert await store.get(None, "A-1001") is not None
    await _store(table).shred(None, "A-1001")
    table.commit()
    assert await store.get(None, "A-1001") is None


async def test_key_created_in_a_rolled_back_transaction_is_not_cached() -> None:
    table = FakeKeyTable()
    store = _store(table)
    phantom = await store.get_or_create(None, "A-1001")
    assert await store.get(None, "A-1001") == phantom  # visible inside its own transaction
    table.rollback()
    assert await store.get(None, "A-1001") is None
    real = await store.get_or_create(None, "A-1001")
    assert real.material != phantom.material


async def test_retired_kek_still_unwraps_during_rotation() -> None:
    table = FakeKeyTable()
    old = await KeyStore(table, KEK).get_or_create(None, "A-1001")  # type: ignore[arg-type]
    table.commit()
    new_kek = os.urandom(32)
    rotated = KeyStore(table, new_kek, kek_version=2, retired_keks={1: KEK})  # type: ignore[arg-type]
    assert await rotated.get(None, "A-1001") == old
    fresh = await rotated.get_or_create(None, "B-2002")
    assert fresh.key_version == 2
    assert table.rows["B-2002"].key_version == 2
    with pytest.raises(crypto.CryptoError):
        await KeyStore(table, new_kek, kek_version=2).get(None, "A-1001")  # type: ignore[arg-type]


def test_kek_must_be_32_bytes() -> None:
    with pytest.raises(crypto.CryptoError):
        KeyStore(None, b"short")


async def test_no_connection_anywhere_is_an_error() -> None:
    with pytest.raises(crypto.CryptoError):
        await KeyStore(None, KEK).get(None, "A-1001")


def test_migration_creates_the_table() -> None:
    sql = crypto.migration_sql()
    assert crypto.MIGRATION_FILE.name == "0001_subject_keys.sql"
    assert "CREATE TABLE IF NOT EXISTS subject_keys" in sql
    for column in ("customer_id", "wrapped_key", "key_version", "created_at", "shredded_at"):
        assert column in sql
