"""Intake: the one front door for clinic apps.

It consumes `intake.submissions.v1`, validates each submission (`domain`, with the personal
identity code rules in `hetu`), forwards the valid ones as commands to the service that owns
them and publishes the rest to `intake.rejected.v1` with machine-readable, PII-free reasons.
"""
