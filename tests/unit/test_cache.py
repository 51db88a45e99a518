"""Reading children from the watch-fed copies (_cache): the objects filed as a pass asks for them, what the operator wrote
read back until the watch shows it (client-go's MutationCache rules), the fallback to requests, and a pass reading
only its LLMDeployment from the API server once the cluster has converged."""

import copy
import itertools

import pytest

from llm_operator import _cache as ca
from llm_operator._kube import CountingKube
from llm_operator._reconcile import run_pass
from tests.unit.fakes import FakeKube, fake_deps

T0, T1 = "2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z"


def _obj(kind, name, rv, namespace="ns", **extra):
    api = {"Deployment": "apps/v1", "LLMRollout": "llmops.dev/v1alpha1", "Service": "v1"}[kind]
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(rv),
            **extra.pop("metadata", {})}, **extra}


class Copies:
    """A :class:`~llm_operator._cache.Source` over a dict: what the informers would hold."""

    def __init__(self, objects=(), synced=True):
        self.objects = {}
        self.is_synced = synced
        for obj in objects:
            self.put(obj)

    @classmethod
    def of(cls, kube: FakeKube) -> "Copies":
        """``kube``'s objects as the watches would show them (a snapshot: later writes are not in it)."""
        kinds = {kind for _, kind, _ in ca.KINDS}
        return cls(copy.deepcopy(o) for (_, kind, _, _), o in kube.objects.items() if kind in kinds)

    def put(self, obj):
        self.objects[(obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def synced(self, kind):
        return self.is_synced

    def get(self, kind, namespace, name):
        return copy.deepcopy(self.objects.get((kind, namespace, name)))

    def owned(self, kind, namespace, owner):
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items() if k == kind and ca.index_key(kind, o) == (namespace, owner)]


@pytest.mark.parametrize(("kind", "body", "key"), [
    ("Deployment", _obj("Deployment", "chat-abc", 1, metadata={"labels": {"llmops.dev/deployment": "chat"}}), ("ns", "chat")),
    ("Deployment", _obj("Deployment", "someone-elses", 1), None),
    ("LLMRollout", _obj("LLMRollout", "chat-abc", 1, spec={"deploymentName": "chat"}), ("ns", "chat")),
    ("LLMRollout", _obj("LLMRollout", "broken", 1, spec={}), None),
    ("Service", _obj("Service", "chat-canary", 1), ("ns", "chat-canary")),
])
def test_objects_are_filed_by_what_a_pass_asks_for(kind, body, key):
    assert ca.index_key(kind, body) == key


def test_the_index_keeps_a_copy_without_managed_fields():
    body = _obj("Service", "chat", 1, metadata={"managedFields": [{"manager": "llm-operator"}], "labels": {"a": "b"}})
    kept = ca.stored(body)
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["labels"] == {"a": "b"}
    kept["metadata"]["labels"]["a"] = "changed"
    assert body["metadata"]["labels"] == {"a": "b"} and "managedFields" in body["metadata"]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _cache(*objects, ttl=30.0):
    clock = Clock()
    copies = Copies(objects)
    return ca.Cache(copies, {"Service", "Deployment"}, ttl=ttl, clock=clock), copies, clock


def test_a_written_object_is_read_back_until_the_watch_delivers_it_or_something_newer():
    cache, copies, _ = _cache(_obj("Service", "chat", 10, spec={"v": "old"}))
    cache.wrote(_obj("Service", "chat", 12, spec={"v": "written"}))
    assert cache.filed("Service", ("ns", "chat"))[0]["spec"] == {"v": "written"}  # the watch is behind
    copies.put(_obj("Service", "chat", 15, spec={"v": "someone else's, later"}))
    assert cache.filed("Service", ("ns", "chat"))[0]["spec"] == {"v": "someone else's, later"}
    copies.put(_obj("Service", "chat", 11, spec={"v": "an older event"}))  # the written one was dropped
    assert cache.filed("Service", ("ns", "chat"))[0]["spec"] == {"v": "an older event"}


def test_a_created_object_is_read_before_its_watch_event_and_the_api_asked_when_the_watch_stays_behind():
    cache, copies, clock = _cache(ttl=30.0)
    cache.wrote(_obj("Service", "chat", 3))
    assert [o["metadata"]["name"] for o in cache.filed("Service", ("ns", "chat"))] == ["chat"]
    assert cache.filed("Service", ("other", "chat")) == []  # another namespace's is another object
    clock.now += 30.0
    assert cache.filed("Service", ("ns", "chat")) is ca.UNSURE  # a watch 30 s behind the operator's write
    copies.put(_obj("Service", "chat", 3))
    assert cache.filed("Service", ("ns", "chat"))[0]["metadata"]["resourceVersion"] == "3"  # caught up: believed again


def test_a_deleted_child_is_hidden_until_the_watch_says_it_is_gone():
    cache, copies, clock = _cache(_obj("Service", "chat", 3))
    cache.deleted("Service", "ns", "chat")
    assert cache.filed("Service", ("ns", "chat")) == []
    del copies.objects[("Service", "ns", "chat")]
    assert cache.filed("Service", ("ns", "chat")) == []
    copies.put(_obj("Service", "chat", 9))  # created again since (a pass applied it): nothing hides it
    assert len(cache.filed("Service", ("ns", "chat"))) == 1


def test_the_watch_wins_when_resource_versions_are_not_integers():
    cache, _, _ = _cache(_obj("Service", "chat", "a", spec={"v": "indexed"}))
    cache.wrote(_obj("Service", "chat", "b", spec={"v": "written"}))
    assert cache.filed("Service", ("ns", "chat"))[0]["spec"] == {"v": "indexed"}


def test_a_deployment_written_is_read_back_among_its_llmdeployments_revisions():
    labels = {"labels": {"llmops.dev/deployment": "chat"}}
    cache, _, _ = _cache(_obj("Deployment", "chat-a", 5, metadata=copy.deepcopy(labels)))
    cache.wrote(_obj("Deployment", "chat-b", 7, metadata=copy.deepcopy(labels)))
    cache.wrote(_obj("Deployment", "other-b", 8, metadata={"labels": {"llmops.dev/deployment": "other"}}))
    assert sorted(o["metadata"]["name"] for o in cache.filed("Deployment", ("ns", "chat"))) == ["chat-a", "chat-b"]


def test_reads_are_copies_the_caller_may_change():
    cache, copies, _ = _cache(_obj("Service", "chat", 1, spec={"v": 1}))
    cache.filed("Service", ("ns", "chat"))[0]["spec"]["v"] = 2
    assert copies.objects[("Service", "ns", "chat")]["spec"] == {"v": 1}


def test_kinds_not_kept_or_not_yet_synced_are_read_by_a_list_of_their_name():
    kube = FakeKube()
    kube.add(_obj("Service", "chat", 1))
    kube.add({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "chat", "namespace": "ns"}})
    copies = Copies.of(kube)
    reader = ca.CachedReader(ca.Cache(copies, {"Service"}), ca.ApiReader(kube))
    assert reader.child("v1", "Service", "ns", "chat")["metadata"]["name"] == "chat" and kube.lists == []
    assert reader.child("networking.istio.io/v1", "VirtualService", "ns", "chat")["kind"] == "VirtualService"
    assert kube.lists == [("VirtualService", "", "metadata.name=chat")]
    assert reader.child("networking.istio.io/v1", "VirtualService", "ns", "gone") is None
    copies.is_synced = False  # the first LIST not in yet
    assert reader.child("v1", "Service", "ns", "chat")["metadata"]["name"] == "chat"
    assert kube.lists[-1] == ("Service", "", "metadata.name=chat")


class _Requests(list):
    def __call__(self, verb, kind, code):
        self.append((verb, kind))


def _deps(kube, cache, now, requests):
    counted = ca.WriteThroughKube(CountingKube(kube, requests), cache)
    deps = fake_deps(kube, now)
    return type(deps)(**{**deps.__dict__, "kube": counted, "reader": ca.CachedReader(cache, ca.ApiReader(counted))})


@pytest.mark.parametrize("sample", ["llmdeployment-multigpu", "llmdeployment-minimal", "llmdeployment-gateway-api"])
def test_a_pass_over_a_converged_llmdeployment_reads_only_the_llmdeployment(samples, sample):
    """Issue 15: at rest a pass makes one request (the GET of its LLMDeployment), where it made a LIST or GET per child."""
    doc = copy.deepcopy(samples[sample])
    doc["metadata"]["namespace"] = "default"
    kube = FakeKube()
    kube.add(doc)
    name = doc["metadata"]["name"]
    served = {kind for _, kind, _ in ca.KINDS}
    run_pass(fake_deps(kube, T0), "default", name)  # converges through requests
    cache = ca.Cache(Copies.of(kube), served)
    requests = _Requests()
    result = run_pass(_deps(kube, cache, T1, requests), "default", name)
    assert result.writes == 0 and result.plan.actions == []
    assert requests == [("get", "LLMDeployment")]


def test_a_pass_right_after_writes_the_watch_has_not_shown_writes_nothing_again(samples):
    """Without reading back what it wrote, the second pass would see the indexes from before the first and apply
    every child again."""
    doc = copy.deepcopy(samples["llmdeployment-multigpu"])
    doc["metadata"]["namespace"] = "default"
    kube = FakeKube()
    kube.add(doc)
    cache = ca.Cache(Copies.of(kube), {kind for _, kind, _ in ca.KINDS})  # the watches show none of the writes
    first = run_pass(_deps(kube, cache, T0, _Requests()), "default", "llama-70b")
    assert first.writes >= 9  # every child, and the status
    second = run_pass(_deps(kube, cache, T1, _Requests()), "default", "llama-70b")
    assert second.writes == 0 and second.plan.actions == []


def test_the_pass_plans_the_same_from_the_indexes_as_from_requests(samples):
    """Differential: an LLMDeployment mid-rollout (a second revision, its LLMRollout) planned from the cache and
    from the API reads alike."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["metadata"]["namespace"] = "default"
    kube = FakeKube()
    kube.add(doc)
    name = doc["metadata"]["name"]
    ticks = (f"2026-11-21T10:{m:02d}:00Z" for m in itertools.count())
    run_pass(fake_deps(kube, next(ticks)), "default", name)
    obj = kube.objects[("llmops.dev/v1alpha1", "LLMDeployment", "default", name)]
    obj["spec"]["runtime"] = {**obj["spec"].get("runtime", {}), "maxModelLen": 4096}
    obj["metadata"]["generation"] += 1
    for _ in range(3):
        now = next(ticks)
        twin = copy.deepcopy(kube)
        cache = ca.Cache(Copies.of(twin), {kind for _, kind, _ in ca.KINDS})
        cached = run_pass(_deps(twin, cache, now, _Requests()), "default", name)
        direct = run_pass(fake_deps(kube, now), "default", name)
        assert cached.plan == direct.plan and _without_uids(twin.objects) == _without_uids(kube.objects)


def _without_uids(objects):
    out = copy.deepcopy(objects)
    for obj in out.values():
        obj["metadata"].pop("uid", None)  # the fake stamps a random one on each create
    return out


def test_a_revision_written_then_deleted_is_not_read_back_once_the_watch_has_lost_it():
    """Review: a scale then a delete of a revision Deployment, both events arriving between two reads, left the
    written copy pending for ever (every pass then asked the API server)."""
    labels = {"labels": {"llmops.dev/deployment": "chat"}}
    cache, copies, clock = _cache(_obj("Deployment", "chat-b", 5, metadata=copy.deepcopy(labels)))
    cache.wrote(_obj("Deployment", "chat-b", 7, metadata=copy.deepcopy(labels)))
    cache.deleted("Deployment", "ns", "chat-b", key=cache.owner_of("Deployment", "ns", "chat-b"))
    assert cache.filed("Deployment", ("ns", "chat")) == []  # hidden at once, the watch not there yet
    del copies.objects[("Deployment", "ns", "chat-b")]
    clock.now += 3600
    assert cache.filed("Deployment", ("ns", "chat")) == []  # not UNSURE: nothing is pending any more


def test_a_key_the_watch_stays_behind_on_is_asked_of_the_api_server_once_then_believed_again():
    kube = FakeKube()
    copies = Copies()
    clock = Clock()
    cache = ca.Cache(copies, {"Service"}, ttl=30.0, clock=clock)
    reader = ca.CachedReader(cache, ca.ApiReader(kube))
    cache.wrote(_obj("Service", "chat", 4))  # then deleted by someone else before the watch showed it
    clock.now += 31
    assert reader.child("v1", "Service", "ns", "chat") is None and len(kube.lists) == 1  # asked: gone
    assert reader.child("v1", "Service", "ns", "chat") is None and len(kube.lists) == 1  # the copies believed again
    assert cache._written == {}  # nothing left pending for the key


def test_what_the_api_server_answered_is_not_undone_by_the_watch_it_was_asked_instead_of():
    """Review: after asking the API server (the watch 30 s behind the operator's write), the next read believed the
    lagging copy again: a rollout read at its previous step."""
    kube = FakeKube()
    rollout = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": "chat-b", "namespace": "ns"},
               "spec": {"deploymentName": "chat"}}
    live = kube.add({**copy.deepcopy(rollout), "status": {"currentStepIndex": 2}})
    copies = Copies([{**copy.deepcopy(rollout), "metadata": {**rollout["metadata"], "resourceVersion": "0"},
                      "status": {"currentStepIndex": 1}}])  # the watch behind
    clock = Clock()
    cache = ca.Cache(copies, {"LLMRollout"}, ttl=30.0, clock=clock)
    reader = ca.CachedReader(cache, ca.ApiReader(kube))
    cache.wrote(live)
    assert reader.rollouts("ns", "chat")[0]["status"]["currentStepIndex"] == 2  # read back
    clock.now += 31
    assert reader.rollouts("ns", "chat")[0]["status"]["currentStepIndex"] == 2 and len(kube.lists) == 1  # asked
    assert reader.rollouts("ns", "chat")[0]["status"]["currentStepIndex"] == 2 and len(kube.lists) == 1  # not step 1
    copies.put(copy.deepcopy(live))  # the watch caught up
    clock.now += 31
    assert reader.rollouts("ns", "chat")[0]["status"]["currentStepIndex"] == 2 and len(kube.lists) == 1


def test_a_watch_that_keeps_failing_backs_off_and_then_makes_the_informer_list_again(monkeypatch):
    """Review: SharedInformer opens a new watch at once after a failed one (922 requests in 0.5 s against a 403)
    and lists again only after a 410, so its copies stayed frozen. A watch refused, or one that opens and dies within
    10 s (a stream reset), counts; one that lived longer, or a genuine 410, does not."""
    import types

    from kubernetes.client.exceptions import ApiException

    from llm_operator import _kube

    now = [1000.0]
    monkeypatch.setattr(_kube.time, "monotonic", lambda: now[0])
    slept = []
    answers = []

    def call(**kwargs):
        answers.append(kwargs)
        if len(answers) % 2:
            raise ApiException(status=403, reason="Forbidden")
        return types.SimpleNamespace(status=200)  # opened, then (the next call shows) died at once
    list_objects = _kube._lister(call, "Service", "v1", "Service in all namespaces", types.SimpleNamespace(wait=slept.append))
    for i in range(5):
        if i % 2 == 0:
            with pytest.raises(ApiException) as refused:
                list_objects(watch=True)
            assert refused.value.status == 403
        else:
            list_objects(watch=True)
        now[0] += 1.0
    assert len(slept) == 4 and slept == sorted(slept) and 0.5 < slept[0] < 1.5  # 1 s doubling (+-20%)
    with pytest.raises(ApiException) as relist:
        list_objects(watch=True)
    assert relist.value.status == 410 and len(answers) == 5  # no request: the informer lists again
    assert answers[0]["allow_watch_bookmarks"] is True and answers[0]["timeout_seconds"] == _kube.WATCH_SERVER_TIMEOUT
    slept.clear()
    list_objects(watch=True)  # after the relist: a fresh start, no wait
    now[0] += 300.0  # that watch lived its 300 s: the server's timeout, not a failure
    with pytest.raises(ApiException):
        list_objects(watch=True)
    assert slept == []

    def expired(**kwargs):
        raise ApiException(status=410, reason="Gone")
    list_objects = _kube._lister(expired, "Service", "v1", "", types.SimpleNamespace(wait=slept.append))
    for _ in range(3):
        with pytest.raises(ApiException):
            list_objects(watch=True)
    assert slept == []  # an expired resourceVersion is the informer's to relist, never a back-off


def test_a_list_for_the_informer_keeps_plain_dicts_with_their_kind():
    import inspect
    import json as _json

    from llm_operator import _kube

    class Raw:
        data = _json.dumps({"metadata": {"resourceVersion": "42"}, "items": [{"metadata": {"name": "a", "namespace": "ns"}}]})

    list_objects = _kube._lister(lambda **kw: Raw(), "Service", "v1")
    listing = list_objects(label_selector="app.kubernetes.io/managed-by=llm-operator")
    assert listing.metadata.resource_version == "42"
    assert listing.items == [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "ns"}}]
    assert inspect.signature(list_objects).return_annotation is object  # Watch.stream: events stay dicts, RVs tracked


def test_the_informer_hooks_the_operator_relies_on_exist():
    """Informers reaches into SharedInformer (its first LIST, its cache, its stop): a kubernetes release that renames
    them fails here, not silently (every read would go to the API server)."""
    from kubernetes.informer import SharedInformer
    from kubernetes.informer.cache import ObjectCache

    from llm_operator import _kube

    informer = SharedInformer(lambda **kw: None)
    assert callable(informer._initial_list) and isinstance(informer._cache, ObjectCache)
    assert hasattr(informer, "_stop_event") and hasattr(informer, "_watch")
    cache = _kube._stripped_cache()
    assert hasattr(cache, "_objects") and hasattr(cache, "_rlock") and hasattr(cache, "_key_func")
    cache._put({"metadata": {"name": "a", "namespace": "ns", "managedFields": [{"manager": "x"}]}, "spec": {"n": 1}})
    cache._replace_all([*cache.list(), {"metadata": {"name": "b", "namespace": "ns", "managedFields": []}}])
    assert [o["metadata"] for o in cache.list()] == [{"name": "a", "namespace": "ns"}, {"name": "b", "namespace": "ns"}]
    assert all(isinstance(v, bytes) for v in cache._objects.values())  # kept as JSON
    got = cache.get_by_key("ns/a")
    got["spec"]["n"] = 2  # a fresh dict: the copy is untouched
    assert cache.get_by_key("ns/a")["spec"] == {"n": 1} and cache.get_by_key("ns/missing") is None


@pytest.mark.parametrize(("kind", "obj", "deployment"), [
    ("LLMRollout", {"spec": {"deploymentName": "chat"}}, "chat"),
    ("LLMRollout", {"spec": {}}, None),
    ("Deployment", {"metadata": {"ownerReferences": [
        {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "name": "chat", "controller": True}]}}, "chat"),
    ("Deployment", {"metadata": {"ownerReferences": [
        {"apiVersion": "other.dev/v1", "kind": "LLMDeployment", "name": "chat", "controller": True}]}}, None),
    ("Deployment", {"metadata": {"ownerReferences": [
        {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "name": "chat"}]}}, None),
])
def test_an_informer_event_starts_the_pass_of_the_llmdeployment_it_concerns(kind, obj, deployment):
    from llm_operator._handlers import llmdeployment_of

    assert llmdeployment_of(kind, obj) == deployment


def test_a_relist_after_a_failed_one_still_starts_the_passes_of_what_changed_meanwhile():
    """Review: the copies are unbelieved while relists fail (synced cleared), but the events of the relist that then
    succeeds are changes, not the start-up's: they must start passes (a child deleted during an outage)."""
    from kubernetes import client

    from llm_operator import _kube

    def rollout(name):
        return {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
                "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"}, "spec": {"deploymentName": "chat"}}
    changes = []
    informers = _kube.Informers(client.ApiClient(client.Configuration()), [("llmops.dev/v1alpha1", "LLMRollout", "llmrollouts")],
                                owner=lambda kind, obj: obj["spec"]["deploymentName"],
                                on_change=lambda kind, obj: changes.append(obj["metadata"]["name"]))
    informer = informers._informers[("LLMRollout", None)]
    answers = iter([[rollout("a"), rollout("b")], ConnectionError("the API server is down"), [rollout("a")]])

    def list_func(**kwargs):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return _kube._Listing({"metadata": {"resourceVersion": "9"}, "items": answer})
    informer._list_func = list_func
    informer._initial_list()
    assert changes == [] and informers.synced("LLMRollout")  # the first LIST: start-up, not changes
    assert [o["metadata"]["name"] for o in informers.owned("LLMRollout", "ns", "chat")] == ["a", "b"]
    with pytest.raises(ConnectionError):
        informer._initial_list()
    assert not informers.synced("LLMRollout")  # not believed while its LIST fails
    informer._initial_list()
    assert informers.synced("LLMRollout") and sorted(changes) == ["a", "b"]  # b deleted, a listed again: both passes
    assert [o["metadata"]["name"] for o in informers.owned("LLMRollout", "ns", "chat")] == ["a"]
    assert informer._cache._owned == {("ns", "chat"): {"ns/a"}}  # nothing left filed for b
