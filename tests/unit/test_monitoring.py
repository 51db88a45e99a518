"""The monitoring add-on: the PrometheusRule validates against the Prometheus Operator's CRD and its alerts behave
as tested with promtool (Debian's prometheus package ships it; make test installs it)."""

import shutil
import subprocess

import yaml

from tests.conftest import ROOT
from tests.schemas import validate

RULE = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"


def test_prometheus_rule_validates_against_the_prometheus_operator_crd():
    validate(yaml.safe_load(RULE.read_text()))


def test_alerts_fire_as_the_sre_workbook_rules_say(tmp_path):
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": yaml.safe_load(RULE.read_text())["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 12 rules found" in check.stdout  # 7 recording rules, 5 alerts
    shutil.copy(ROOT / "tests" / "unit" / "data" / "slo_rules_test.yaml", tmp_path / "test.yaml")
    result = subprocess.run([promtool, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
