"""The balancer's admin API: a token-guarded gRPC service and optional Prometheus metrics.

`AdminServer` serves both. `snapshot` reads a running Balancer into plain data,
which the gRPC service (`service`, through `messages`) and the Prometheus
collector (`metrics`) both present. The service's `.proto` and its generated
code live in `v1/`; `python -m balancer.admin.generate` regenerates the code.
"""
