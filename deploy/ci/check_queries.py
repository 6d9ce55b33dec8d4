"""Check every PromQL query Herald ships: the dashboard's panels and the alert rules.

    python deploy/ci/check_queries.py   # in the deploy tools' virtualenv; needs promtool

Each query must parse (promql-parser, then promtool, as recording rules) and name only series
Herald exports (services/runtime/metrics.py, with the suffixes of its counters and histograms),
the recording rules of alerts.yml, or `up`. The dashboard must have unique panel ids and a grid
position on every panel. Exit status 1 with the reasons on failure.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/herald.json"
RULES = ROOT / "deploy/prometheus/alerts.yml"
METRICS = ROOT / "services/runtime/metrics.py"
NAME = re.compile(r"\b(herald(?:_|:)[a-z0-9_:]+)")


def exported_names() -> set[str]:
    """Series names Herald's metrics produce (from the constructor calls in metrics.py)."""
    source = METRICS.read_text()
    names: set[str] = set()
    for kind, name in re.findall(r"(Counter|Gauge|Histogram)\(\s*\"(herald_[a-z0-9_]+)\"", source):
        if kind == "Counter":
            names.add(f"{name}_total")
        elif kind == "Histogram":
            names.update(f"{name}_{s}" for s in ("bucket", "count", "sum"))
        else:
            names.add(name)
    return names


def dashboard_queries(errors: list[str]) -> list[str]:
    """The dashboard's exprs; panel ids and positions are checked on the way."""
    board = json.loads(DASHBOARD.read_text())
    ids: list[int] = []
    queries: list[str] = []
    for panel in board["panels"]:
        ids.append(panel["id"])
        if not {"x", "y", "w", "h"} <= set(panel.get("gridPos", {})):
            errors.append(f"panel {panel.get('title')!r} has no complete gridPos")
        for target in panel.get("targets", []):
            queries.append(target["expr"])
    if len(ids) != len(set(ids)):
        errors.append(f"duplicate panel ids: {sorted(ids)}")
    return queries


def main() -> int:
    """Run the checks; print what fails."""
    errors: list[str] = []
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    rule_queries = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    known = exported_names() | recorded
    queries = dashboard_queries(errors)
    for expr in queries + rule_queries:
        concrete = expr.replace("$__rate_interval", "5m")
        try:
            promql_parser.parse(concrete)
        except ValueError as error:
            errors.append(f"{expr!r} does not parse: {error}")
        for name in set(NAME.findall(concrete)) - known:
            errors.append(f"{expr!r} uses {name}, which Herald does not export")
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as file:
        records = [
            {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m")}
            for i, q in enumerate(queries)
        ]
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}, file)
        file.flush()
        checked = subprocess.run(
            ["promtool", "check", "rules", file.name], capture_output=True, text=True
        )
        if checked.returncode:
            errors.append(f"promtool rejects a dashboard query:\n{checked.stdout}{checked.stderr}")
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(queries)} dashboard queries, {len(rule_queries)} rule expressions checked")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
