"""The monitoring add-on: the PrometheusRule validates against the Prometheus Operator's CRD and its alerts behave
as tested with promtool (Debian's prometheus package ships it; make test installs it), each alert with a scenario
that fires and one that stays silent, kube-prometheus's severities and a runbook section in docs/runbook.md; the
rules and the dashboard use the metric names vLLM 0.32 and the operator export; the dashboard's panels compute what
their titles say; the dashboard, the rules and the rollout analysis agree on which vLLM requests are server errors."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from llm_operator import _analysis, _vllm_facts
from llm_operator import _contract as c
from llm_operator import _promql as q
from llm_operator._telemetry import Telemetry
from tests.conftest import ROOT
from tests.schemas import validate

RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
DASHBOARD = ROOT / "manifests" / "monitoring" / "dashboard.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DATA = ROOT / "tests" / "unit" / "data"
#: promtool scenarios: the burn-rate and rollout alerts, and the serving alerts.
RULE_TESTS = (DATA / "slo_rules_test.yaml", DATA / "serving_rules_test.yaml")
RUNBOOK = ROOT / "docs" / "runbook.md"
#: Where runbook_url points: docs/runbook.md where the repository is hosted (the Argo CD Application's placeholder host).
RUNBOOK_URL = "https://git.example.com/platform/llm-operator/blob/main/docs/runbook.md#"


def test_prometheus_rule_validates_against_the_prometheus_operator_crd():
    validate(yaml.safe_load(RULE.read_text()))


def _rule_file(tmp_path) -> None:
    """The PrometheusRule's groups as a Prometheus rule file, tmp_path/rules.yaml."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": yaml.safe_load(RULE.read_text())["spec"]["groups"]}))


def test_the_rules_are_valid_prometheus_rules(tmp_path):
    _rule_file(tmp_path)
    check = subprocess.run([PROMTOOL, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 29 rules found" in check.stdout  # 7 burn-rate and 7 serving recording rules, 15 alerts


@pytest.mark.parametrize("scenarios", RULE_TESTS, ids=lambda p: p.stem)
def test_alerts_fire_as_their_promtool_scenarios_say(tmp_path, scenarios):
    _rule_file(tmp_path)
    shutil.copy(scenarios, tmp_path / "test.yaml")
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def scenario_counts() -> dict[str, tuple[int, int]]:
    """Per alert, the promtool checks that expect it to fire and those that expect silence."""
    counts: dict[str, list[int]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                counts.setdefault(check["alertname"], [0, 0])[0 if check.get("exp_alerts") else 1] += 1
    return {name: (firing, silent) for name, (firing, silent) in counts.items()}


def test_every_alert_has_a_scenario_that_fires_and_one_that_stays_silent():
    counts = scenario_counts()
    assert set(counts) <= set(_alerts())  # no scenario of an alert that is gone
    for name in _alerts():
        firing, silent = counts.get(name, (0, 0))
        assert firing >= 1 and silent >= 1, f"{name}: {firing} firing, {silent} silent scenarios"


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub (and GitLab) give a document's headings: lower case, punctuation dropped, spaces as '-'."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_every_alert_follows_kube_prometheus_conventions_and_has_its_runbook_section():
    anchors = _anchors(RUNBOOK.read_text())
    for name, alert in _alerts().items():
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = alert["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        url = annotations["runbook_url"]
        assert url == RUNBOOK_URL + name.lower(), name  # its own section, titled by the alert's name
        assert url.removeprefix(RUNBOOK_URL) in anchors, f"{name}: no section #{url.removeprefix(RUNBOOK_URL)} in docs/runbook.md"


# ------------------------------------------------------------------ metric names

#: The vLLM series the rules and the dashboard read, as vLLM 0.32 (vllm/v1/metrics/loggers.py) names them;
#: histograms and counters by their base name. vLLM 0.32 has no vllm:gpu_cache_usage_perc (it became
#: vllm:kv_cache_usage_perc).
VLLM_METRICS = {"vllm:request_success", "vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds",
                "vllm:inter_token_latency_seconds", "vllm:num_requests_waiting", "vllm:num_requests_running",
                "vllm:kv_cache_usage_perc", "vllm:generation_tokens", "vllm:prompt_tokens"}
#: Operator metrics the rules read that the operator does not export (none: the latency SLO gauges are exported for
#: every LLMDeployment that sets them; the rules hold the others to a default).
NOT_YET_EXPORTED: set[str] = set()


def _everything() -> list[str]:
    return list(_rule_exprs().values()) + [e for exprs in _dashboard_exprs().values() for e in exprs]


def _vllm_names() -> set[str]:
    return {re.sub(r"_(bucket|count|sum|total)$", "", name) for e in _everything() for name in re.findall(r"vllm:\w+", e)}


def test_the_rules_and_the_dashboard_read_vllm_0_32s_metric_names():
    assert _vllm_facts.VLLM_VERSION == "0.32.0"  # a new pin: check VLLM_METRICS against its loggers.py
    assert _vllm_names() == VLLM_METRICS
    assert not any("gpu_cache_usage_perc" in e for e in _everything())


def test_vllm_names_its_metrics_so_in_the_installed_source():
    loggers = sorted(ROOT.glob(".venv-vllm/lib/python3*/site-packages/vllm/v1/metrics/loggers.py"))
    if not loggers:
        pytest.skip("no .venv-vllm (make deps builds it)")
    source = loggers[0].read_text()
    for name in VLLM_METRICS:
        assert f'"{name}"' in source, name


def test_the_rules_and_the_dashboard_read_metrics_the_operator_exports():
    exported = set()
    for family in Telemetry().registry.collect():
        exported |= {family.name + "_total"} if family.type == "counter" else {family.name}
    # Series names, not the label names llmops_dev_* (or kube-state-metrics' label_llmops_dev_*) nor recording rules.
    used = {n for e in _everything() for n in re.findall(r"(?<![\w:])llmops_\w+", e) if not n.startswith("llmops_dev_")}
    assert "llmops_slo_availability_ratio" in used
    assert used - exported <= NOT_YET_EXPORTED, used - exported


# ------------------------------------------------------------------ which vLLM requests are errors

#: A label matcher on vLLM's finished_reason: (operator, value).
_FINISHED_REASON = re.compile(r'finished_reason\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _dashboard_exprs() -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in json.loads(DASHBOARD.read_text())["panels"]}


def _rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    return {r.get("record") or r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_one_definition_of_a_server_error_for_the_analysis_the_rules_and_the_dashboard():
    # vLLM 0.32 (vllm/v1/engine FinishReason): "error" is a server-side failure, always answered with a 500;
    # "abort" is the client going away and "repetition" a cut-off repetitive output: neither is a server error.
    assert c.FINISHED_REASON_ERROR == "error" and c.FINISHED_REASON_REPETITION == "repetition"
    assert {c.FINISHED_REASON_ERROR, c.FINISHED_REASON_REPETITION} <= set(_vllm_facts.FINISHED_REASONS)
    assert _FINISHED_REASON.findall(q.errors(q.Scope("ns", "chat", "r1"), 60)) == [("=", c.FINISHED_REASON_ERROR)]
    error_exprs = {f"rule {n}": e for n, e in _rule_exprs().items() if n.startswith("llmops:request_error_ratio:")}
    error_exprs |= {f"panel {t}": e for t, exprs in _dashboard_exprs().items() if "Error" in t for e in exprs}
    assert len(error_exprs) == 9  # 7 recording rules, the error-ratio and the burn-rate panels
    for where, expr in error_exprs.items():
        assert _FINISHED_REASON.findall(expr) == [("=", c.FINISHED_REASON_ERROR)], where
    everything = list(_rule_exprs().values()) + [e for exprs in _dashboard_exprs().values() for e in exprs]
    for expr in everything:  # any other panel names values vLLM has
        assert {value for _, value in _FINISHED_REASON.findall(expr)} <= set(_vllm_facts.FINISHED_REASONS), expr


def _finished(revision: str, per_minute: dict[str, int]) -> list[dict]:
    return [{"series": f'vllm:request_success_total{{finished_reason="{reason}",namespace="ns",llmops_dev_deployment="chat",'
                       f'llmops_dev_revision="{revision}"}}', "values": f"0+{count}x120"} for reason, count in per_minute.items()]


#: Requests a minute by finished_reason: 12.5% server errors, 37.5% clients gone, 12.5% repetitions cut off. Rates of
#: whole numbers per second and binary fractions keep promtool's exact comparisons exact.
MIX = {"stop": 12 * 60, "abort": 12 * 60, "repetition": 4 * 60, "error": 4 * 60}


def _promtool_test(tmp_path, series: list[dict], expr_tests: list[dict]) -> subprocess.CompletedProcess:
    (tmp_path / "empty.yaml").write_text("groups: []\n")
    test = {"rule_files": ["empty.yaml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": expr_tests}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    return subprocess.run([PROMTOOL, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)


def test_the_dashboards_error_panels_count_server_errors_not_client_aborts(tmp_path):
    panels = _dashboard_exprs()
    grafana = {"$__rate_interval": "5m", "$namespace": "ns", "$deployment": "chat"}

    def promql(expr: str) -> str:
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        return expr

    (ratio,) = panels["Error ratio per revision"]
    (burn,) = panels["Error-budget burn rate (1h) per revision"]
    series = _finished("r1", MIX) + [
        {"series": 'llmops_slo_availability_ratio{namespace="ns",llmops_dev_deployment="chat",job="llm-operator"}',
         "values": "0.875x120"}]  # a budget of 0.125
    result = _promtool_test(tmp_path, series, [
        {"expr": promql(ratio), "eval_time": "70m", "exp_samples": [{"labels": '{llmops_dev_revision="r1"}', "value": 0.125}]},
        {"expr": promql(burn), "eval_time": "70m", "exp_samples": [{"labels": '{llmops_dev_revision="r1"}', "value": 1.0}]},
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_analysis_and_the_rules_count_the_same_errors_as_the_dashboard(tmp_path):
    scope = q.Scope("ns", "chat", "r1")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": yaml.safe_load(RULE.read_text())["spec"]["groups"]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": _finished("r1", MIX),
        "promql_expr_test": [
            {"expr": f"{q.errors(scope, 300)} / {q.requests(scope, 300)}", "eval_time": "70m", "exp_samples": [{"labels": "{}", "value": 0.125}]},
            {"expr": "llmops:request_error_ratio:rate5m", "eval_time": "70m",
             "exp_samples": [{"labels": 'llmops:request_error_ratio:rate5m{namespace="ns",llmops_dev_deployment="chat"}', "value": 0.125}]},
        ]}]}))
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ the dashboard's serving panels

#: What Grafana puts in for the dashboard's variables.
GRAFANA = {"$__rate_interval": "5m", "$namespace": "ns", "$deployment": "chat"}


def _promql(expr: str) -> str:
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    return expr


def _series(name: str, values: str, **labels: str) -> dict:
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}


def _vllm(name: str, values: str, revision: str = "r1", pod: str = "chat-r1-a", **labels: str) -> dict:
    return _series(name, values, namespace="ns", llmops_dev_deployment="chat", llmops_dev_revision=revision, pod=pod, **labels)


def _pod(pod: str, revision: str, ready: int = 1, namespace: str = "ns", deployment: str = "chat") -> list[dict]:
    """A pod as kube-state-metrics reports it (with the pod-label allowlist): its labels and its Ready condition."""
    uid = f"uid-{pod}"
    return [_series("kube_pod_labels", "1x40", namespace=namespace, pod=pod, uid=uid, label_llmops_dev_deployment=deployment,
                    label_llmops_dev_revision=revision),
            _series("kube_pod_status_ready", f"{ready}x40", namespace=namespace, pod=pod, uid=uid, condition="true")]


def _histogram(name: str, revision: str, upper: str) -> list[dict]:
    """One request a second, every one in the bucket (lower, upper] of buckets 1, 2 and +Inf."""
    return [_vllm(f"{name}_bucket", "0+60x40" if float(le) >= float(upper) else "0x40", revision, f"chat-{revision}-a", le=le)
            for le in ("1", "2", "+Inf")] + [_vllm(f"{name}_count", "0+60x40", revision, f"chat-{revision}-a")]


def _eval_panel(tmp_path, title: str, series: list[dict], expected: dict[str, list[tuple[str, float]]]) -> None:
    """Evaluate each target of the panel (by legend) with promtool at minute 30, with the PrometheusRule's recording
    rules loaded, and compare with ``expected``: legend -> [(labels, value)]."""
    (panel,) = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == title]
    targets = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert set(targets) == set(expected), title
    _rule_file(tmp_path)
    checks = [{"expr": _promql(targets[legend]), "eval_time": "30m", "exp_samples": [{"labels": labels, "value": v} for labels, v in samples]}
              for legend, samples in expected.items()]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}]}))
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


R1, R2 = '{llmops_dev_revision="r1"}', '{llmops_dev_revision="r2"}'


def test_the_latency_panels_show_each_quantile_per_revision_and_the_slo(tmp_path):
    # r1's requests all take 1-2 s (the q quantile interpolates to 1 + q), r2's under a second (q).
    series = _histogram("vllm:e2e_request_latency_seconds", "r1", "2") + _histogram("vllm:e2e_request_latency_seconds", "r2", "1")
    _eval_panel(tmp_path, "End-to-end latency p50 / p95 / p99 and the p99 SLO", series, {
        "p50 {{llmops_dev_revision}}": [(R1, 1.5), (R2, 0.5)],
        "p95 {{llmops_dev_revision}}": [(R1, 1.95), (R2, 0.95)],
        "p99 {{llmops_dev_revision}}": [(R1, 1.99), (R2, 0.99)],
        "SLO (p99)": [("{}", 30)],  # the default: this LLMDeployment sets no latencyP99Seconds
    })
    series = _histogram("vllm:time_to_first_token_seconds", "r1", "2") + [
        _series("llmops_slo_time_to_first_token_p95_seconds", "1.5x40", namespace="ns", llmops_dev_deployment="chat")]
    _eval_panel(tmp_path, "Time to first token p50 / p95 and the p95 SLO", series, {
        "p50 {{llmops_dev_revision}}": [(R1, 1.5)], "p95 {{llmops_dev_revision}}": [(R1, 1.95)], "SLO (p95)": [("{}", 1.5)]})
    _eval_panel(tmp_path, "Inter-token latency p50 / p95", _histogram("vllm:inter_token_latency_seconds", "r2", "1"), {
        "p50 {{llmops_dev_revision}}": [(R2, 0.5)], "p95 {{llmops_dev_revision}}": [(R2, 0.95)]})


def test_the_throughput_and_kv_cache_panels(tmp_path):
    _eval_panel(tmp_path, "Generated and prompt tokens/s", [
        _vllm("vllm:generation_tokens_total", "0+600x40"), _vllm("vllm:generation_tokens_total", "0+600x40", pod="chat-r1-b"),
        _vllm("vllm:prompt_tokens_total", "0+1200x40")], {
        "generated {{llmops_dev_revision}}": [(R1, 20)], "prompt {{llmops_dev_revision}}": [(R1, 20)]})
    _eval_panel(tmp_path, "KV-cache use (mean and fullest pod)", [
        _vllm("vllm:kv_cache_usage_perc", "0.5x40"), _vllm("vllm:kv_cache_usage_perc", "0.75x40", pod="chat-r1-b")], {
        "mean {{llmops_dev_revision}}": [(R1, 0.625)], "fullest pod {{llmops_dev_revision}}": [(R1, 0.75)]})


def test_the_http_5xx_panel_counts_the_api_servers_5xx_responses(tmp_path):
    # prometheus-fastapi-instrumentator (vLLM's API server) groups status codes: 2 requests/s answered 2xx, 1 4xx
    # (a client's mistake, in the denominator only), 1 5xx; another LLMDeployment's 5xx are not counted.
    def http(status: str, per_minute: int, deployment: str = "chat") -> dict:
        return _series("http_requests_total", f"0+{per_minute}x40", namespace="ns", llmops_dev_deployment=deployment,
                       llmops_dev_revision="r1", pod=f"{deployment}-r1-a", handler="/v1/chat/completions", method="POST", status=status)
    _eval_panel(tmp_path, "HTTP 5xx ratio per revision (vLLM API server)",
                [http("2xx", 120), http("4xx", 60), http("5xx", 60), http("5xx", 600, "other")],
                {"{{llmops_dev_revision}}": [(R1, 0.25)]})


def test_the_gpu_memory_panel_shows_each_gpu_of_the_deployments_pods(tmp_path):
    def dcgm(name: str, values: str, gpu: str, pod: str = "chat-r1-a") -> dict:
        return _series(name, values, gpu=gpu, UUID=f"GPU-{pod}-{gpu}", device=f"nvidia{gpu}", Hostname="gpu-node", namespace="ns",
                       pod=pod, container="vllm")
    series = _pod("chat-r1-a", "r1") + _pod("other-r1-a", "r1", deployment="other") + [
        dcgm("DCGM_FI_DEV_FB_USED", "60x40", "0"), dcgm("DCGM_FI_DEV_FB_FREE", "20x40", "0"),
        dcgm("DCGM_FI_DEV_FB_USED", "40x40", "1"), dcgm("DCGM_FI_DEV_FB_FREE", "40x40", "1"),
        dcgm("DCGM_FI_DEV_FB_USED", "80x40", "0", "other-r1-a"), dcgm("DCGM_FI_DEV_FB_FREE", "0x40", "0", "other-r1-a")]
    _eval_panel(tmp_path, "GPU memory used (DCGM exporter)", series, {
        "{{pod}} GPU {{gpu}}": [('{pod="chat-r1-a",gpu="0"}', 0.75), ('{pod="chat-r1-a",gpu="1"}', 0.5)]})


def test_the_autoscaler_panels_follow_the_hpa_of_the_deployment(tmp_path):
    def hpa(name: str, value: int, hpa_name: str = "chat", **labels: str) -> dict:
        return _series(name, f"{value}x40", namespace="ns", horizontalpodautoscaler=hpa_name, job="kube-state-metrics", **labels)
    waiting = {"metric_name": "vllm_num_requests_waiting", "metric_target_type": "average"}
    series = [hpa("kube_horizontalpodautoscaler_status_current_replicas", 3), hpa("kube_horizontalpodautoscaler_status_desired_replicas", 4),
              hpa("kube_horizontalpodautoscaler_spec_max_replicas", 4), hpa("kube_horizontalpodautoscaler_spec_max_replicas", 9, "chat2"),
              hpa("kube_horizontalpodautoscaler_status_target_metric", 6, **waiting),
              hpa("kube_horizontalpodautoscaler_spec_target_metric", 4, **waiting)]
    _eval_panel(tmp_path, "Autoscaler replicas: current, desired, maxReplicas", series,
                {"current": [("{}", 3)], "desired": [("{}", 4)], "maxReplicas": [("{}", 4)]})
    _eval_panel(tmp_path, "Autoscaler metric per pod against its target", series, {
        "current {{metric_name}}": [('{metric_name="vllm_num_requests_waiting"}', 6)],
        "target {{metric_name}}": [('{metric_name="vllm_num_requests_waiting"}', 4)]})
    keda = [hpa("kube_horizontalpodautoscaler_spec_max_replicas", 2, "keda-hpa-chat")]  # KEDA's HPA of ScaledObject chat
    _eval_panel(tmp_path, "Autoscaler replicas: current, desired, maxReplicas", keda,
                {"current": [], "desired": [], "maxReplicas": [("{}", 2)]})


def test_the_pod_panels_count_ready_pods_restarts_and_oom_kills_per_revision(tmp_path):
    _eval_panel(tmp_path, "Ready pods per revision",
                _pod("chat-r1-a", "r1") + _pod("chat-r1-b", "r1") + _pod("chat-r2-a", "r2") + _pod("chat-r2-b", "r2", ready=0),
                {"{{llmops_dev_revision}}": [(R1, 2), (R2, 1)]})

    def container(name: str, values: str, pod: str, name_of_container: str = "vllm", **labels: str) -> dict:
        return _series(name, values, namespace="ns", pod=pod, uid=f"uid-{pod}", container=name_of_container, **labels)
    series = _pod("chat-r1-a", "r1") + _pod("chat-r1-b", "r1") + [
        container("kube_pod_container_status_restarts_total", "0x27 1x13", "chat-r1-a"),  # restarted at minute 28
        container("kube_pod_container_status_last_terminated_reason", "_x27 1x13", "chat-r1-a", reason="OOMKilled"),
        container("kube_pod_container_status_restarts_total", "0x40", "chat-r1-b"),
        container("kube_pod_container_status_restarts_total", "0x27 3x13", "chat-r1-b", "istio-proxy")]  # not vLLM
    _eval_panel(tmp_path, "vLLM container restarts and OOM kills per revision", series, {
        "restarts {{llmops_dev_revision}}": [(R1, 1)], "last terminated OOMKilled {{llmops_dev_revision}}": [(R1, 1)]})


def test_the_gpu_hours_panel_is_the_analysis_cost_per_1k_tokens_at_a_price_of_one(tmp_path):
    # Two Ready pods of 4 GPUs and one not Ready (holding GPUs the analysis does not count) generate 20 tokens/s.
    def gpus(pod: str) -> dict:
        return _series("kube_pod_container_resource_requests", "4x40", namespace="ns", pod=pod, uid=f"uid-{pod}", container="vllm",
                       node="gpu-node", resource="nvidia_com_gpu", unit="integer")
    series = (_pod("chat-r1-a", "r1") + _pod("chat-r1-b", "r1") + _pod("chat-r1-c", "r1", ready=0)
              + [gpus("chat-r1-a"), gpus("chat-r1-b"), gpus("chat-r1-c"), _vllm("vllm:generation_tokens_total", "0+1200x40")])
    (panel,) = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"] == "GPU-hours per 1k generated tokens per revision"]
    (target,) = panel["targets"]
    cost = _analysis.cost_per_1k_tokens(1.0, gpus=8, window_seconds=300, generated_tokens=20 * 300)
    _rule_file(tmp_path)
    check = {"expr": f"abs(({_promql(target['expr'])}) - {cost!r}) < bool 1e-12", "eval_time": "30m",
             "exp_samples": [{"labels": R1, "value": 1}]}  # equal but for rounding: the two compute in another order
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [check]}]}))
    result = subprocess.run([PROMTOOL, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
