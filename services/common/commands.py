"""Sealed command topics: the key that opens them, and opening one record into its command.

Intake (and the staff CLI) write commands for records and consent to `<owner>.commands.v1`, the
envelope in clear and the rest sealed with the topic's key (`contracts.sealing.TopicKey`). The
owner opens each record here; any failure is a `PermanentError` with a reason code that never
quotes the content, so the record is dead-lettered at once instead of retried.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import ValidationError

from contracts.sealing import TopicKey, UnsealError, unseal
from services.common.kafka import PermanentError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aiokafka import ConsumerRecord
    from pydantic import SecretStr

    from contracts.envelope import Event

CommandT = TypeVar("CommandT", bound="Event")

_KEY: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
"""Shape of a usable Kafka key (a customer number)."""


class TransitKey:
    """The key of one sealed command topic, parsed on first use (building an app parses none)."""

    def __init__(self, keys: Mapping[str, SecretStr], topic: str) -> None:
        self._secret = keys.get(topic)
        self._topic = topic
        self._key: TopicKey | None = None

    @property
    def key(self) -> TopicKey:
        """The topic key that opens sealed commands.

        Raises:
            RuntimeError: The settings carry no valid key for the topic (names no key).
        """
        if self._key is None:
            message = f"topic_keys has no valid key for {self._topic}"
            if self._secret is None:
                raise RuntimeError(message)
            try:
                self._key = TopicKey.from_b64(self._secret.get_secret_value())
            except (ValueError, binascii.Error):
                raise RuntimeError(message) from None
        return self._key


def record_key(record: ConsumerRecord[Any, Any]) -> str | None:
    """The record's key as a customer number, or None when it is missing or not shaped so."""
    if not isinstance(record.key, bytes):
        return None
    text = record.key.decode("utf-8", errors="replace")
    return text if _KEY.fullmatch(text) else None


def decode_sealed_command(
    record: ConsumerRecord[Any, Any], key: TopicKey, types: Mapping[str, type[CommandT]]
) -> CommandT:
    """Open one record of a sealed command topic into its command (one of `types`).

    Raises:
        PermanentError: `not_json`, `not_object`, `unexpected_type`, `sealed_invalid`,
            `sealed_undecryptable`, `invalid_command` or `key_mismatch`; the reason never
            quotes the content.
    """
    value = record.value
    if not value:
        raise PermanentError("not_json")
    try:
        wire = json.loads(value)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PermanentError("not_json") from None
    if not isinstance(wire, dict):
        raise PermanentError("not_object")
    model = types.get(str(wire.get("type")))
    if model is None or wire.get("schema_version") != 1:
        raise PermanentError("unexpected_type")
    try:
        document = unseal(wire, key)
    except UnsealError as exc:
        raise PermanentError(exc.reason) from None
    try:
        command = model.model_validate(document)
    except ValidationError:
        # The error's text quotes the input (personal data): keep only a code.
        raise PermanentError("invalid_command") from None
    if record_key(record) != command.customer_id:
        raise PermanentError("key_mismatch")
    return command
