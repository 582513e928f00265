"""The dashboard's collector: balancer snapshots and pod facts → per-pod rates and frames.

This package is plain Python (no Django) so the math can be tested alone and
reused by a collector process: `rates` turns consecutive snapshots into rates,
`scrape` turns consecutive scrapes of each pod's /metrics into the rates the
pod reports itself (every client, those bypassing the balancer included),
`imbalance` scores a service's spread, `frames` builds the compact per-service
message the browsers get, and `history` keeps recent frames for a page's first
paint. `runner` is the network part: it follows the balancers' snapshot streams,
polls the platform, scrapes the pods and publishes a frame per service every
interval.
"""
