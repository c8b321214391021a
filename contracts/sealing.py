"""Transit sealing: personal data on command topics is readable only by the receiving service.

A clinic app (or a service) seals the payload of an event to the recipient service's public key
with HPKE (RFC 9180: DHKEM X25519, HKDF-SHA256, AES-256-GCM), bound to the event's identity
(`customer_id`, `type`, `event_id`) so a sealed payload cannot be moved onto another event. On the
wire the event keeps its envelope fields in clear — they carry no personal data — and the rest
travels as one base64 `sealed` field.

Transit topics have short retention; what persists (the register, `records.customer.v1`) is
encrypted with the customer's own data key instead, so erasure can shred it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
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


def _info(envelope: dict[str, Any]) -> bytes:
    parts = (envelope.get("customer_id"), envelope.get("type"), envelope.get("event_id"))
    return _INFO_PREFIX + "|".join(str(p) for p in parts).encode()


def seal(document: dict[str, Any], public_key: x25519.X25519PublicKey) -> dict[str, Any]:
    """Return the wire form of an event document: envelope in clear, the rest sealed."""
    envelope = {k: v for k, v in document.items() if k in ENVELOPE_FIELDS}
    body = {k: v for k, v in document.items() if k not in ENVELOPE_FIELDS}
    plaintext = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    sealed = SUITE.encrypt(plaintext, public_key, info=_info(envelope))
    return envelope | {"sealed": base64.b64encode(sealed).decode()}


def unseal(wire: dict[str, Any], private_key: x25519.X25519PrivateKey) -> dict[str, Any]:
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
        plaintext = SUITE.decrypt(ciphertext, private_key, info=_info(envelope))
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
