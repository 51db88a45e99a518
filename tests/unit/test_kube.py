"""The Kubernetes boundary's errors: what an API error carries to the callers that retry (issue item 8: a 429 from API
Priority and Fairness honours its Retry-After, in a pass's retry and in a background loop's next round)."""

import asyncio
import logging

import pytest
import urllib3
from kubernetes.client.rest import ApiException, RESTResponse
from kubernetes.dynamic.exceptions import api_exception

from llm_operator import _handlers as h
from llm_operator._kube import KubeError, _wrap
from llm_operator._settings import Settings
from llm_operator._telemetry import Telemetry


def _from_the_client(status, headers):
    """The exception the dynamic client raises for an HTTP answer, built the way the client builds it: the ApiException
    of the urllib3 response read (headers and all), as its status class (TooManyRequestsError for a 429)."""
    body = b'{"kind":"Status","status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests"}'
    response = RESTResponse(urllib3.HTTPResponse(body=body, status=status, headers={"Content-Type": "application/json", **headers}))
    response.read()
    try:
        ApiException.from_response(http_resp=response, body=None, data=None)
    except ApiException as error:
        return api_exception(error)
    raise AssertionError("from_response always raises")


@pytest.mark.parametrize("headers, retry_after", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "7"}, 7.0),  # HTTP/2 sends header names in lower case
    ({}, None),
    ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),  # an HTTP date: not what kube-apiserver sends
])
def test_a_429_carries_the_servers_retry_after(headers, retry_after):
    error = _wrap(_from_the_client(429, headers))
    assert type(error) is KubeError and error.status == 429 and error.retry_after == retry_after
    assert "Too many requests" in str(error)


def test_a_429s_retry_after_delays_the_objects_next_pass_at_least_that_long():
    """The first failure's own back-off is 1 s (+-20%): the server's 7 s is the floor, and until then only a spec edit
    starts a pass."""
    passes = []

    def reconcile(namespace, name):
        passes.append(name)
        raise _wrap(_from_the_client(429, {"Retry-After": "7"}))

    controller = h.Controller(object(), Telemetry(), settings=Settings())
    scheduled = []
    controller.reconcile = reconcile
    controller.schedule = lambda ns, name, delay: scheduled.append(delay)
    controller.guarded("team-a", "chat", logging.getLogger("test"))
    assert scheduled[0] >= 7.0
    controller.guarded("team-a", "chat", logging.getLogger("test"), urgent=False)  # a child's event meanwhile
    assert passes == ["chat"] and scheduled[1:] == []


def test_a_429s_retry_after_delays_the_loops_next_round_at_least_that_long(monkeypatch):
    lists = []

    class Kube:
        def list(self, api_version, kind, namespace, label_selector, field_selector=""):
            lists.append(kind)
            if len(lists) == 1:
                raise _wrap(_from_the_client(429, {"Retry-After": "7"}))
            return []

    controller = h.Controller(Kube(), Telemetry(), settings=Settings(resync_seconds=5.0))
    slept = []

    async def sleep(seconds):
        slept.append(seconds)
        if len(lists) == 2:
            raise asyncio.CancelledError  # the operator stopping

    monkeypatch.setattr(asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(controller._forever("resync", controller.settings.resync_seconds, controller._resync))
    assert slept[0] == 5.0 and slept[1] >= 7.0 and slept[2:] == [5.0, 5.0] and len(lists) == 2
