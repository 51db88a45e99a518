"""The operator's vocabulary, named once, in the lowest layer: rollout phases, the Event type and RFC 3339 time.

Pure: every other module may import it, it imports nothing of the operator's.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Phase(enum.StrEnum):
    """``status.phase`` of an LLMRollout (a str: compares equal to the wire value)."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ABORTED = "Aborted"
    FAILED = "Failed"


#: The phases a rollout ends in (an aborted or failed one may be retried by ``spec.retry``).
TERMINAL = (Phase.SUCCEEDED, Phase.ABORTED, Phase.FAILED)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the reconciled object, or about ``about`` (an LLMRollout) when given.

    ``type`` is ``Normal`` or ``Warning``; ``reason`` one CamelCase word (the condition reason it reports, where
    there is one); ``message`` for people (the recorder cuts it at 1024 characters)."""

    type: str
    reason: str
    message: str
    about: Mapping[str, Any] | None = None


def rfc3339(moment: datetime.datetime) -> str:
    """``moment`` as the API server writes times: RFC 3339 in UTC to the second, ``2026-12-02T01:30:00Z``
    (``moment`` is taken as UTC when it has no zone)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    """An RFC 3339 time (``Z`` or an offset) as an aware datetime.

    Raises:
        ValueError: ``text`` is not an RFC 3339 time.
    """
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_now() -> str:
    """The current time, :func:`rfc3339`."""
    return rfc3339(datetime.datetime.now(tz=datetime.UTC))
