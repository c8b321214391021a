"""Marketing's rules: which channels it contacts on, and what an audience export may name.

Pure code, no I/O. The consent rules themselves (versions decide, stops, fail closed) are in
`services.consentview.view`, shared with the other consent-driven processors.
"""

from __future__ import annotations

import re
from typing import Final

from contracts.consent import Purpose
from services.consentview.view import purposes_of

SERVICE: Final = "marketing"
"""The service name: schema, Kafka principal, consumer group, audit producer, ack service."""

CHANNELS: Final = purposes_of(SERVICE)
"""The purposes marketing contacts customers for: e-mail, SMS, post, phone and research."""

_CAMPAIGN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class AudienceError(ValueError):
    """An audience was asked for wrongly (the message names the rule, never data)."""


def check_channel(channel: Purpose | str) -> Purpose:
    """The channel as a purpose marketing contacts for.

    Raises:
        AudienceError: It is not a marketing channel (or research).
    """
    try:
        purpose = Purpose(channel)
    except ValueError:
        raise AudienceError("unknown purpose") from None
    if purpose not in CHANNELS:
        raise AudienceError("not a marketing channel")
    return purpose


def check_campaign(campaign: str) -> str:
    """The campaign identifier (a code such as `spring-2026.whitening`, never free text).

    Raises:
        AudienceError: It is not a code of letters, digits and `_.:-`, 1-64 characters.
    """
    if not _CAMPAIGN.fullmatch(campaign):
        raise AudienceError("campaign must be a code: letters, digits and _.:- (1-64)")
    return campaign
