"""Per-customer envelope encryption and crypto-shredding (PATTERNS.md §3).

Every customer has a 32-byte data key (DEK). Personal fields are encrypted with it using
AES-256-GCM before they leave the owning service (on Kafka, in object storage). The DEK is
stored only wrapped by the service's key-encryption key (KEK), in the table `subject_keys` of
the service's own schema. Erasure destroys the wrapped DEK (crypto-shredding): every copy of
the ciphertext, in topics, dead-letter topics, logs and backups, becomes unreadable at once.

Formats (each starts with a version byte, so the format can change without ambiguity):

- value: `0x01 ‖ nonce (12) ‖ AES-GCM(DEK) ciphertext ‖ tag (16)`, with associated data
  `0x01 ‖ associated_data(customer_id, event_type, schema_version)` plus, for fields,
  `|<field name>`. The associated data binds a ciphertext to its customer, event type and field:
  moving it into another event, or another field, fails authentication.
- wrapped DEK: the same shape under the KEK, with associated data
  `rekisteri.dek|<customer_id>|<key_version>`.

Wrapping uses AES-GCM rather than AES key wrap (RFC 3394/5649) because key wrap has no associated
data: with it, anyone able to write the table could copy customer A's wrapped key into customer
B's row, and B's new data would be encrypted under A's key. Binding the wrapped key to its
`customer_id` rules that out. A random 96-bit nonce per wrap is safe far beyond the number of
customers a clinic has (NIST's bound is 2^32 encryptions under one key).

What shredding does and does not reach: `shred` nulls the wrapped key and keeps a tombstone row.
PostgreSQL keeps the old row version until VACUUM (the migration makes autovacuum eager on this
table), and WAL and backups keep copies of the wrapped key for their retention; those copies are
still encrypted under the KEK, so the erasure is final once the backups expire or the KEK is
rotated (rows are wrapped under `key_version`, and `KeyStore` reads retired KEKs by version).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from services.common.db import Connection, Pool

    Db: TypeAlias = Connection | Pool
    """A connection (standalone or from a pool), or a pool, in the service's schema."""

FORMAT_VERSION: Final = 1
"""Version byte of the value and wrapped-key formats written today."""
KEY_BYTES: Final = 32
"""AES-256: data keys and the KEK are 32 bytes."""
NONCE_BYTES: Final = 12
"""AES-GCM nonce length (96 bits, random per encryption)."""
TAG_BYTES: Final = 16
"""AES-GCM authentication tag length."""
SHREDDED: Final = "[shredded]"
"""Mask shown in place of a field whose customer's key has been destroyed."""
DEFAULT_CACHE_TTL_S: Final = 30.0
"""How long a process keeps an unwrapped key; bounds how long another replica's shred lags."""

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations_crypto"
"""Directory of the forward-only SQL migrations of the `subject_keys` table."""
MIGRATION_FILE: Final = MIGRATIONS_DIR / "0001_subject_keys.sql"
"""The migration creating `subject_keys`; apply it in the owning service's schema."""

SELECT_KEY: Final = """
SELECT wrapped_key, key_version, shredded_at IS NOT NULL AS shredded,
       created_at <> now() AS settled
FROM subject_keys
WHERE customer_id = $1
"""
"""One customer's key row. `settled` is false for a row this very transaction inserted.

A row another transaction wrote is visible only once committed, while a row written by the
current transaction carries its start time (`now()`); only settled keys are cached, so a
rolled-back insert can never leave a phantom key in the cache.
"""

INSERT_KEY: Final = """
INSERT INTO subject_keys (customer_id, wrapped_key, key_version)
VALUES ($1, $2, $3)
ON CONFLICT (customer_id) DO NOTHING
RETURNING customer_id
"""
"""Create a customer's key unless another transaction already did."""

SELECT_KEYS: Final = """
SELECT customer_id, wrapped_key, key_version, shredded_at IS NOT NULL AS shredded,
       created_at <> now() AS settled
FROM subject_keys
WHERE customer_id = ANY($1::text[])
"""
"""Many customers' key rows at once (see `SELECT_KEY` for `settled`)."""

INSERT_KEYS: Final = """
INSERT INTO subject_keys (customer_id, wrapped_key, key_version)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::int[])
ON CONFLICT (customer_id) DO NOTHING
RETURNING customer_id
"""
"""Create many customers' keys in one statement, skipping any another transaction made."""

SHRED_KEY: Final = """
UPDATE subject_keys
SET wrapped_key = NULL, shredded_at = coalesce(shredded_at, now())
WHERE customer_id = $1
RETURNING customer_id
"""
"""Destroy a customer's wrapped key, keeping the row as a tombstone (idempotent)."""


class CryptoError(Exception):
    """Base of the errors raised here; messages never contain keys or data."""


class DecryptionError(CryptoError):
    """A ciphertext could not be decrypted: wrong key, altered bytes or associated data."""


class KeyShreddedError(CryptoError):
    """The customer's key has been destroyed; nothing can be encrypted for them any more."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """One customer's unwrapped data key.

    Attributes:
        customer_id: The customer the key belongs to.
        material: The 32 raw key bytes (never shown by `repr`).
        key_version: The KEK version the key is stored wrapped under.
    """

    customer_id: str
    material: bytes = field(repr=False)
    key_version: int = 1

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise CryptoError("a data key must be 32 bytes")


def associated_data(customer_id: str, event_type: str, schema_version: int) -> bytes:
    """The associated data binding a ciphertext to its customer, event type and schema version.

    Returns `customer_id|event_type|schema_version` as UTF-8. The parts may not contain `|`
    (customer numbers and type names never do), so the encoding is unambiguous.
    """
    if "|" in customer_id or "|" in event_type:
        raise CryptoError("associated data parts may not contain '|'")
    return f"{customer_id}|{event_type}|{schema_version}".encode()


@functools.lru_cache(maxsize=2048)
def _aead(key: bytes) -> AESGCM:
    """The cipher of one key, kept for reuse: a batch encrypts a dozen fields per customer.

    Bounded, and holding only keys this process already holds in `KeyStore`'s cache.
    """
    return AESGCM(key)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    header = bytes([FORMAT_VERSION])
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + _aead(key).encrypt(nonce, plaintext, header + aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("ciphertext is too short")
    if blob[0] != FORMAT_VERSION:
        raise DecryptionError("ciphertext has an unknown format version")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return _aead(key).decrypt(nonce, body, blob[:1] + aad)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication") from None


def encrypt(key: DataKey, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt bytes with a customer's key: `version ‖ nonce ‖ ciphertext ‖ tag`.

    Args:
        key: The customer's data key.
        plaintext: The bytes to protect.
        aad: Associated data, normally `associated_data(customer_id, event_type, version)`;
            the same bytes must be given to `decrypt`.
    """
    return _seal(key.material, plaintext, aad)


def decrypt(key: DataKey, ciphertext: bytes, *, aad: bytes) -> bytes:
    """Decrypt what `encrypt` produced.

    Raises:
        DecryptionError: The key or the associated data is not the one used to encrypt, or the
            ciphertext was altered. The message carries no data.
    """
    return _open(key.material, ciphertext, aad)


def _field_aad(aad: bytes, name: str) -> bytes:
    return aad + b"|" + name.encode()


def encrypt_fields(key: DataKey, fields: Mapping[str, str | None], aad: bytes) -> dict[str, str]:
    """Encrypt each present field to base64 text for JSON; `None` fields are left out.

    Each field's associated data also names the field, so ciphertexts cannot be swapped
    between fields (an email showing up as a phone number) without failing authentication.
    """
    return {
        name: base64.b64encode(encrypt(key, value.encode(), aad=_field_aad(aad, name))).decode()
        for name, value in fields.items()
        if value is not None
    }


def decrypt_fields(key: DataKey, fields: Mapping[str, str], aad: bytes) -> dict[str, str]:
    """Decrypt fields produced by `encrypt_fields`.

    Raises:
        DecryptionError: A field is not valid base64, or fails to decrypt.
    """
    out: dict[str, str] = {}
    for name, text in fields.items():
        try:
            blob = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise DecryptionError("field is not valid base64") from None
        plain = decrypt(key, blob, aad=_field_aad(aad, name))
        try:
            out[name] = plain.decode()
        except UnicodeDecodeError:
            raise DecryptionError("field is not valid UTF-8") from None
    return out


def decrypt_or_mask(key: DataKey | None, fields: Mapping[str, str], aad: bytes) -> dict[str, str]:
    """Decrypt fields, or mask every one with `SHREDDED` when the customer's key is gone.

    Pass the result of `KeyStore.get`, which is `None` once the key has been shredded. A
    present key that fails to decrypt still raises `DecryptionError`: tampering is not erasure.
    """
    if key is None:
        return dict.fromkeys(fields, SHREDDED)
    return decrypt_fields(key, fields, aad)


def _wrap_aad(customer_id: str, key_version: int) -> bytes:
    return f"rekisteri.dek|{customer_id}|{key_version}".encode()


class KeyStore:
    """Wrapped per-customer data keys in the service's `subject_keys` table.

    Every method takes the connection to run on, so key creation and shredding join the
    caller's transaction (with the domain change and its outbox rows); pass `None` to use the
    pool or connection given here. Unwrapped keys are cached in this process for `cache_ttl_s`
    seconds; `shred` drops the entry at once, and the TTL bounds how long a shred made by
    another process can go unnoticed here.

    Args:
        pool_or_conn: Default pool or connection for calls made with `conn=None`.
        kek: The key-encryption key, 32 bytes (`settings.kek_bytes()`).
        kek_version: The version new keys are wrapped under (stored as `key_version`).
        retired_keks: Older KEKs by version, still accepted to unwrap existing rows while a
            KEK rotation rewraps them.
        cache_ttl_s: Seconds an unwrapped key stays cached (0 disables the cache).
    """

    def __init__(
        self,
        pool_or_conn: Db | None,
        kek: bytes,
        *,
        kek_version: int = 1,
        retired_keks: Mapping[int, bytes] | None = None,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
    ) -> None:
        keks = dict(retired_keks or {})
        keks[kek_version] = kek
        if any(len(k) != KEY_BYTES for k in keks.values()):
            raise CryptoError("a key-encryption key must be 32 bytes")
        if kek_version < 1:
            raise CryptoError("kek_version starts at 1")
        self._db = pool_or_conn
        self._keks = keks
        self._kek_version = kek_version
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, DataKey]] = {}

    def _executor(self, conn: Db | None) -> Db:
        db = conn if conn is not None else self._db
        if db is None:
            raise CryptoError("no connection given and no default pool or connection")
        return db

    def _cached(self, customer_id: str) -> DataKey | None:
        entry = self._cache.get(customer_id)
        if entry is None:
            return None
        expires, key = entry
        if time.monotonic() >= expires:
            del self._cache[customer_id]
            return None
        return key

    def _remember(self, key: DataKey) -> None:
        if self._ttl > 0:
            self._cache[key.customer_id] = (time.monotonic() + self._ttl, key)

    def invalidate(self, customer_id: str | None = None) -> None:
        """Forget one customer's cached key, or every cached key when `customer_id` is None."""
        if customer_id is None:
            self._cache.clear()
        else:
            self._cache.pop(customer_id, None)

    def _unwrap(self, customer_id: str, wrapped: bytes, key_version: int) -> DataKey:
        kek = self._keks.get(key_version)
        if kek is None:
            raise CryptoError("the customer's key is wrapped under an unknown KEK version")
        try:
            material = _open(kek, wrapped, _wrap_aad(customer_id, key_version))
        except DecryptionError:
            raise DecryptionError("the customer's wrapped key failed to unwrap") from None
        return DataKey(customer_id, material, key_version)

    async def _load(self, db: Db, customer_id: str) -> tuple[DataKey | None, bool]:
        """(key or None, whether a row exists); raises KeyShreddedError for a tombstone."""
        row = await db.fetchrow(SELECT_KEY, customer_id)
        if row is None:
            return None, False
        if row["shredded"]:
            raise KeyShreddedError("the customer's key has been shredded")
        key = self._unwrap(customer_id, row["wrapped_key"], row["key_version"])
        if row["settled"]:
            self._remember(key)
        return key, True

    async def get(self, conn: Db | None, customer_id: str) -> DataKey | None:
        """The customer's key, or None when they have none or it has been shredded."""
        cached = self._cached(customer_id)
        if cached is not None:
            return cached
        try:
            key, _ = await self._load(self._executor(conn), customer_id)
        except KeyShreddedError:
            return None
        return key

    async def get_or_create(self, conn: Db | None, customer_id: str) -> DataKey:
        """The customer's key, created (random, wrapped, stored) on first use.

        Run it in the transaction that stores the customer's data, so a rolled-back change
        leaves no key behind. Concurrent first uses agree on one key (`ON CONFLICT DO NOTHING`,
        then read the winner's row).

        Raises:
            KeyShreddedError: The customer was erased; no new key is made for them, so a late
                or replayed event cannot bring their data back under a fresh key.
        """
        cached = self._cached(customer_id)
        if cached is not None:
            return cached
        db = self._executor(conn)
        key, _ = await self._load(db, customer_id)
        if key is not None:
            return key
        material = secrets.token_bytes(KEY_BYTES)
        wrapped = _seal(
            self._keks[self._kek_version],
            material,
            _wrap_aad(customer_id, self._kek_version),
        )
        inserted = await db.fetchrow(INSERT_KEY, customer_id, wrapped, self._kek_version)
        if inserted is not None:
            return DataKey(customer_id, material, self._kek_version)
        key, exists = await self._load(db, customer_id)
        if key is None or not exists:
            raise CryptoError("the customer's key row vanished while it was being created")
        return key

    async def get_or_create_many(
        self, conn: Db | None, customer_ids: Iterable[str]
    ) -> dict[str, DataKey]:
        """`get_or_create` for many customers in at most three statements (batch consumers).

        Raises:
            KeyShreddedError: One of the customers was erased (the caller decides which to
                refuse: call `get_or_create` per customer to find out).
        """
        wanted = list(dict.fromkeys(customer_ids))
        keys: dict[str, DataKey] = {}
        for cid in wanted:
            cached = self._cached(cid)
            if cached is not None:
                keys[cid] = cached
        missing = [cid for cid in wanted if cid not in keys]
        if not missing:
            return keys
        db = self._executor(conn)
        keys |= await self._load_many(db, missing)
        fresh = [cid for cid in missing if cid not in keys]
        if fresh:
            made = {cid: secrets.token_bytes(KEY_BYTES) for cid in fresh}
            kek = self._keks[self._kek_version]
            wrapped = [_seal(kek, made[cid], _wrap_aad(cid, self._kek_version)) for cid in fresh]
            rows = await db.fetch(INSERT_KEYS, fresh, wrapped, [self._kek_version] * len(fresh))
            inserted = {r["customer_id"] for r in rows}
            keys |= {
                cid: DataKey(cid, made[cid], self._kek_version) for cid in fresh if cid in inserted
            }
            raced = [cid for cid in fresh if cid not in inserted]
            if raced:
                keys |= await self._load_many(db, raced)
        if any(cid not in keys for cid in wanted):
            raise CryptoError("a customer's key row vanished while it was being created")
        return keys

    async def _load_many(self, db: Db, customer_ids: list[str]) -> dict[str, DataKey]:
        out: dict[str, DataKey] = {}
        for row in await db.fetch(SELECT_KEYS, customer_ids):
            if row["shredded"]:
                raise KeyShreddedError("the customer's key has been shredded")
            key = self._unwrap(row["customer_id"], row["wrapped_key"], row["key_version"])
            if row["settled"]:
                self._remember(key)
            out[key.customer_id] = key
        return out

    async def shred(self, conn: Db | None, customer_id: str) -> bool:
        """Destroy the customer's key (crypto-shredding), in the caller's transaction.

        The wrapped key is set to NULL and `shredded_at` stamped; afterwards `get` returns None
        and `get_or_create` refuses. Idempotent: shredding again keeps the first timestamp.

        Returns:
            True when the customer had a key (now destroyed, by this call or an earlier one);
            False for a customer who never had one (a no-op).
        """
        self.invalidate(customer_id)
        row = await self._executor(conn).fetchrow(SHRED_KEY, customer_id)
        self.invalidate(customer_id)
        return row is not None


def migration_sql() -> str:
    """The SQL creating `subject_keys`, for a service's migration runner to apply."""
    return MIGRATION_FILE.read_text(encoding="utf-8")
