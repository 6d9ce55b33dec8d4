"""Generate Herald's Grafana dashboard (herald.json) with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py            # writes deploy/grafana/herald.json
    python deploy/grafana/dashboard.py --check    # fails if herald.json is not what the code makes

Panels follow the metrics of services/runtime/metrics.py; "per role" is the Prometheus job
(herald-ingest, herald-matcher, herald-dispatcher, herald-run). Runs in the deploy tools'
virtualenv (deploy/ci/requirements.txt), not Herald's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

OUTPUT = Path(__file__).with_name("herald.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"


def query(expr: str, legend: str) -> prometheus.Dataquery:
    """A Prometheus range query on the dashboard's data source."""
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def graph(
    title: str, unit: str, description: str, *queries: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel, 8 columns wide."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .min(0)
        .datasource(DATASOURCE)
        .grid_pos(GridPos(h=8, w=8, x=0, y=0))
    )
    for ref_id, q in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(q.ref_id(ref_id))
    return panel


def quantiles(metric: str, by: str = "") -> list[prometheus.Dataquery]:
    """p50, p90 and p99 of a histogram, optionally per label."""
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        query(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{RATE})))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def build() -> dashboard.Dashboard:
    """The dashboard: health, throughput, latency, backlog and errors."""
    board = (
        dashboard.Dashboard("Herald")
        .uid("herald")
        .description("Herald FHIR Subscriptions broker: throughput, latency, backlog and errors")
        .tags(["herald", "fhir"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    rows: list[tuple[str, list[stat.Panel | timeseries.Panel]]] = [
        (
            "Health",
            [
                graph(
                    "Ready processes per role",
                    "short",
                    "herald_ready: processes whose /readyz answers 200 (database and bus answer)",
                    query("sum by (job) (herald_ready)", "{{job}} ready"),
                    query('count by (job) (up{job=~"herald-.*"} == 1)', "{{job}} up"),
                ),
                graph(
                    "Subscriptions by status",
                    "short",
                    "herald_subscriptions (every dispatcher counts them all; the largest is shown)",
                    query("max by (status) (herald_subscriptions)", "{{status}}"),
                ),
                graph(
                    "Versions running",
                    "short",
                    "herald_build_info: processes per version and role (mixed while upgrading)",
                    query("sum by (version, role) (herald_build_info)", "{{role}} {{version}}"),
                ),
            ],
        ),
        (
            "Throughput",
            [
                graph(
                    "Resource writes",
                    "ops",
                    "Resource versions written by ingest, per second",
                    query(
                        "sum by (resource_type, interaction) "
                        f"(rate(herald_resource_writes_total{RATE}))",
                        "{{resource_type}} {{interaction}}",
                    ),
                ),
                graph(
                    "Pipeline",
                    "ops",
                    "Records per second: outbox → matcher → notification requests → events",
                    query(
                        f"sum(rate(herald_outbox_published_records_total{RATE}))",
                        "outbox published",
                    ),
                    query(f"sum(rate(herald_changes_consumed_total{RATE}))", "changes matched"),
                    query(
                        f"sum by (kind) (rate(herald_notification_requests_total{RATE}))",
                        "requests {{kind}}",
                    ),
                    query(f"sum(rate(herald_events_recorded_total{RATE}))", "events recorded"),
                ),
                graph(
                    "Notification POSTs by outcome",
                    "reqps",
                    "herald_delivery_attempts_total per second, by outcome",
                    query(
                        f"sum by (outcome) (rate(herald_delivery_attempts_total{RATE}))",
                        "{{outcome}}",
                    ),
                ),
            ],
        ),
        (
            "Latency",
            [
                graph(
                    "Change → notification accepted",
                    "s",
                    "herald_notification_latency_seconds (includes retries of failing endpoints)",
                    *quantiles("herald_notification_latency_seconds"),
                ),
                graph(
                    "One notification POST",
                    "s",
                    "herald_delivery_attempt_duration_seconds, by kind",
                    *quantiles("herald_delivery_attempt_duration_seconds", "kind"),
                ),
                graph(
                    "Latency SLO: share later than 60 s",
                    "percentunit",
                    "Error ratio of the 99 %-within-60 s objective over 5 m, 1 h and 6 h "
                    "(alerts HeraldLatencyBudgetBurn*); the budget is 0.01",
                    query("herald:notification_latency_slow:ratio_rate5m", "5m"),
                    query("herald:notification_latency_slow:ratio_rate1h", "1h"),
                    query("herald:notification_latency_slow:ratio_rate6h", "6h"),
                ),
                graph(
                    "Match one change",
                    "s",
                    "herald_match_duration_seconds",
                    *quantiles("herald_match_duration_seconds"),
                ),
            ],
        ),
        (
            "Backlog",
            [
                graph(
                    "Consumer lag per role",
                    "short",
                    "herald_consumer_lag_records: records not yet processed, per consumer group",
                    query("sum by (service) (herald_consumer_lag_records)", "{{service}}"),
                ),
                graph(
                    "Oldest outbox record",
                    "s",
                    "herald_outbox_oldest_age_seconds: how long the oldest change waits for Kafka",
                    query("max(herald_outbox_oldest_age_seconds)", "age"),
                ),
                graph(
                    "Retries and circuits",
                    "short",
                    "Subscriptions awaiting a retry, origins with an open circuit, POSTs in flight",
                    query("sum(herald_retry_backlog_subscriptions)", "retry backlog"),
                    query("max(herald_circuit_open_endpoints)", "open circuits"),
                    query("sum(herald_deliveries_in_flight)", "in flight"),
                ),
            ],
        ),
        (
            "Errors",
            [
                graph(
                    "Rejected requests by status",
                    "reqps",
                    "Requests answered with a 4xx OperationOutcome",
                    query(
                        f"sum by (status) (rate(herald_rejected_requests_total{RATE}))",
                        "{{status}}",
                    ),
                ),
                graph(
                    "Failed and skipped POSTs",
                    "reqps",
                    "Notification POSTs that failed, by outcome, and those an open circuit skipped",
                    query(
                        "sum by (outcome) "
                        f'(rate(herald_delivery_attempts_total{{outcome!="success"}}{RATE}))',
                        "{{outcome}}",
                    ),
                    query(
                        f"sum by (kind) (rate(herald_delivery_attempts_skipped_total{RATE}))",
                        "skipped {{kind}}",
                    ),
                ),
                graph(
                    "Bus records skipped",
                    "ops",
                    "Records that broke their contract, and duplicates ignored, per role",
                    query(
                        f"sum by (service) (rate(herald_malformed_records_total{RATE}))",
                        "malformed {{service}}",
                    ),
                    query(
                        f"sum by (service) (rate(herald_duplicate_records_total{RATE}))",
                        "duplicate {{service}}",
                    ),
                ),
            ],
        ),
    ]
    # Expanded rows: Grafana lists a row's panels after it, at the top level.
    panel_id = 1
    for title, panels in rows:
        board = board.with_row(dashboard.Row(title).id(panel_id).collapsed(False))
        panel_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(panel_id))
            panel_id += 1
    return board


def render() -> str:
    """The dashboard as Grafana JSON."""
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def main(argv: list[str]) -> int:
    """Write herald.json, or with --check compare it with what the code makes."""
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
