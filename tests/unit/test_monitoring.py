"""The monitoring add-on: the PrometheusRule validates against the Prometheus Operator's CRD and its alerts behave
as tested with promtool (Debian's prometheus package ships it; make test installs it), each alert with a scenario
that fires and one that stays silent, kube-prometheus's severities and a runbook section in docs/runbook.md; the
rules and the dashboard use the metric names vLLM 0.32 and the operator export; the dashboard, the rules and the
rollout analysis agree on which vLLM requests are server errors."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from llm_operator import _contract as c
from llm_operator import _promql as q
from llm_operator import _vllm_facts
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
                "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                "vllm:generation_tokens"}
#: The SLO gauges the latency alerts read when the operator exports them (it does not yet; until then the rules hold
#: every LLMDeployment to a default), beside llmops_slo_availability_ratio.
NOT_YET_EXPORTED = {"llmops_slo_latency_p99_seconds", "llmops_slo_time_to_first_token_p95_seconds"}


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
