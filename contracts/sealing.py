"""Transit sealing: personal data on the front door and command topics is never in clear.

Two kinds of key seal the payload of an event, bound to the event's identity (`customer_id`,
`type`, `event_id`) so a sealed payload cannot be moved onto another event:

- the front door (`intake.submissions.v1`): clinic apps seal to intake's *public* key with HPKE
  (RFC 9180: DHKEM X25519, HKDF-SHA256, AES-256-GCM), so one app cannot read another's
  submissions and only intake can open them;
- service command topics (`records.commands.v1`, ...): writer and reader share a *topic key*
  (AES-256-GCM). Both ends are services the register trusts, and a symmetric key costs about a
  microsecond where HPKE costs about a hundred — it matters at thousands of events a second.

On the wire the event keeps its envelope fields in clear — they carry no personal data — and the
rest travels as one base64 `sealed` field.

Transit topics have short retention; what persists (the register, `records.customer.v1`) is
encrypted with the customer's own data key instead, so erasure can shred it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ENVELOPE_FIELDS: Final = frozenset(
    {
        "event_id",
        "type",
        "schema_version",
        "occurred_at",
        "correlation_id",
        "customer_id",
        "producer",
    }
)
SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_INFO_PREFIX: Final = b"rekisteri/sealed/v1|"


class UnsealError(Exception):
    """The sealed payload is malformed, for another recipient, or was tampered with.

    The message never contains payload data; `reason` is a machine-readable code.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def generate_keypair() -> tuple[str, str]:
    """A new (private, public) X25519 key pair, each as base64 of the raw 32 bytes."""
    private = x25519.X25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw_private = private.private_bytes_raw()
    return base64.b64encode(raw_private).decode(), base64.b64encode(public).decode()


def load_public_key(b64: str) -> x25519.X25519PublicKey:
    """Parse a base64 raw X25519 public key."""
    return x25519.X25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))


def load_private_key(b64: str) -> x25519.X25519PrivateKey:
    """Parse a base64 raw X25519 private key."""
    return x25519.X25519PrivateKey.from_private_bytes(base64.b64decode(b64, validate=True))


class TopicKey:
    """A symmetric key shared by the writers and readers of one topic (AES-256-GCM)."""

    _VERSION: Final = b"\x01"

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a topic key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_b64(cls, b64: str) -> TopicKey:
        """Parse a base64 key (as provisioned into `<SERVICE>_TOPIC_KEYS`)."""
        return cls(base64.b64decode(b64, validate=True))

    @staticmethod
    def generate() -> str:
        """A new random key, base64."""
        return base64.b64encode(os.urandom(32)).decode()

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Version byte, random 96-bit nonce, ciphertext and tag."""
        nonce = os.urandom(12)
        return self._VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Open `encrypt`'s output; raises `InvalidTag` or `ValueError` when it is not ours."""
        if len(blob) < 29 or blob[:1] != self._VERSION:
            raise ValueError("not a topic-sealed payload")
        return self._aead.decrypt(blob[1:13], blob[13:], aad)


SealingKey = x25519.X25519PublicKey | TopicKey
"""What seals: a recipient's public key (front door) or a topic key (service commands)."""
OpeningKey = x25519.X25519PrivateKey | TopicKey
"""What opens: the recipient's private key, or the same topic key."""


def _info(envelope: dict[str, Any]) -> bytes:
    parts = (envelope.get("customer_id"), envelope.get("type"), envelope.get("event_id"))
    return _INFO_PREFIX + "|".join(str(p) for p in parts).encode()


def seal(document: dict[str, Any], key: SealingKey) -> dict[str, Any]:
    """Return the wire form of an event document: envelope in clear, the rest sealed."""
    envelope = {k: v for k, v in document.items() if k in ENVELOPE_FIELDS}
    body = {k: v for k, v in document.items() if k not in ENVELOPE_FIELDS}
    plaintext = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if isinstance(key, TopicKey):
        sealed = key.encrypt(plaintext, _info(envelope))
    else:
        sealed = SUITE.encrypt(plaintext, key, info=_info(envelope))
    return envelope | {"sealed": base64.b64encode(sealed).decode()}


def unseal(wire: dict[str, Any], key: OpeningKey) -> dict[str, Any]:
    """Open a sealed wire document back into the full event document.

    Raises:
        UnsealError: `sealed_invalid` when the field is not base64 or not a JSON object once
            opened, `sealed_undecryptable` when it is for another key, was moved onto another
            event, or was tampered with.
    """
    token = wire.get("sealed")
    if not isinstance(token, str):
        raise UnsealError("sealed_invalid")
    try:
        ciphertext = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise UnsealError("sealed_invalid") from None
    envelope = {k: v for k, v in wire.items() if k in ENVELOPE_FIELDS}
    try:
        if isinstance(key, TopicKey):
            plaintext = key.decrypt(ciphertext, _info(envelope))
        else:
            plaintext = SUITE.decrypt(ciphertext, key, info=_info(envelope))
    except (InvalidTag, ValueError):
        raise UnsealError("sealed_undecryptable") from None
    try:
        body = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnsealError("sealed_invalid") from None
    if not isinstance(body, dict):
        raise UnsealError("sealed_invalid")
    # Envelope fields inside the sealed body are ignored: the clear envelope is authoritative
    # (and authenticated, through the HPKE info binding).
    return {k: v for k, v in body.items() if k not in ENVELOPE_FIELDS} | envelope
