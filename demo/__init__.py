"""The demo: a misbehaving gRPC workload, a kube-proxy-like L4 Service, load clients, a scene."""
