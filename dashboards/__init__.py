"""netwatch's Grafana dashboards as code: one set of panel definitions (definitions.py), two
query languages (queries.py: InfluxQL and PromQL/MetricsQL), built with the Grafana Foundation SDK
(build.py) into dashboards/json/ and dashboards/provisioning/ by ``python -m dashboards``."""
