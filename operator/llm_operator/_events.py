"""Kubernetes Events, with identical repeats aggregated as client-go's ``EventCorrelator`` does.

An Event that repeats one already posted about the same object (same involved object uid, type, reason and
message) is not posted again: the existing Event's ``count`` goes up by one and its ``lastTimestamp`` moves to
now, as ``kubectl describe`` shows it ("3x over 2m"). A pass that fails the same way every time therefore leaves
one Warning with a count, not one per pass. Events are named deterministically from that key
(``<object>.<16 hex>``), so an operator restarted mid-way finds its Event by name (a 409 on create) and carries
the count on rather than starting a second one; an Event the API server expired (``--event-ttl``) is posted again
with the count it had reached.

Source: client-go ``tools/record/events_cache.go`` (``eventLogger.eventObserve``: identical events are keyed by
source, involved object, type, reason and message, and update ``count`` and ``lastTimestamp`` of one Event with a
patch). Not done here: client-go's ``EventAggregator`` (ten *similar* events with different messages within ten
minutes combined into one) and its per-object spam filter (a token bucket); the operator's messages repeat
verbatim when a failure repeats, which the identical-event path covers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from . import _contract as c
from ._api import API_VERSION
from ._kube import Conflict, Kube, KubeError
from ._vocabulary import Event

log = logging.getLogger(__name__)

#: Events remembered for aggregation (client-go keeps 4096 in its LRU).
CACHE_SIZE = 4096
MESSAGE_LIMIT = 1024


def event_name(about: Mapping[str, Any], event: Event) -> str:
    """``<object name>.<16 hex characters of the aggregation key>``: the same repeat always has the same name."""
    meta = about["metadata"]
    key = "\x00".join((meta["uid"], event.type, event.reason, event.message[:MESSAGE_LIMIT]))
    return f"{meta['name'][:200]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def event_manifest(about: Mapping[str, Any], event: Event, now: str, instance: str) -> dict[str, Any]:
    """A ``v1`` Event about ``about`` (which must carry apiVersion, kind, name, namespace and uid), count 1."""
    meta = about["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(about, event), "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": about.get("apiVersion", API_VERSION), "kind": about["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:MESSAGE_LIMIT],
        "source": {"component": c.MANAGER},
        "reportingComponent": f"llmops.dev/{c.MANAGER}",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventRecorder:
    """Posts Events through ``kube``, one Event per distinct repeat with a count (thread-safe; build once)."""

    def __init__(self, kube: Kube, instance: str, cache_size: int = CACHE_SIZE):
        self.kube = kube
        self.instance = instance
        self.cache_size = cache_size
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()  # (namespace, event name) -> count posted
        self._lock = threading.Lock()

    def post(self, about: Mapping[str, Any], event: Event, now: str) -> None:
        """Post ``event`` about ``about``, or count it on the Event it repeats.

        An Event is worth a log line, not a failed pass: API errors are logged (once per call) and swallowed.
        """
        manifest = event_manifest(about, event, now, self.instance)
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        key = (namespace, name)
        try:
            with self._lock:
                seen = self._counts.get(key)
            if seen is None:
                try:
                    self.kube.create(manifest)
                    self._remember(key, 1)
                    return
                except Conflict:  # posted before this process started: carry its count on
                    live = self.kube.get("v1", "Event", namespace, name) or {}
                    seen = int(live.get("count") or 1)
            try:
                self.kube.patch("v1", "Event", namespace, name, {"count": seen + 1, "lastTimestamp": now})
                self._remember(key, seen + 1)
            except KubeError as error:
                if error.status != 404:
                    raise
                # The Event expired (kube-apiserver's --event-ttl): post it again with the count reached, as client-go.
                self.kube.create({**manifest, "count": seen + 1})
                self._remember(key, seen + 1)
        except KubeError as error:
            log.warning("could not post event %s on %s: %s", event.reason, about["metadata"]["name"], error)

    def _remember(self, key: tuple[str, str], count: int) -> None:
        with self._lock:
            self._counts[key] = count
            self._counts.move_to_end(key)
            while len(self._counts) > self.cache_size:
                self._counts.popitem(last=False)
