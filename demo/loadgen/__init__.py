"""A load generator of long-lived client services, for the demo and benchmarks.

N clients, each one service with one channel (one TCP connection), a target
rate, a method mix; aimed at any target (the L4 Service emulator, a balancer,
a pod). Per client: calls by status code, latency, and the pods that answered.
`python -m demo.loadgen --help` runs it as a process and prints JSON.
"""

from demo.loadgen.generator import LoadGenerator
from demo.loadgen.spec import METHODS, ClientSpec, Method, parse_mix
from demo.loadgen.stats import ClientStats, Latency, LoadStats

__all__ = [
    "METHODS",
    "ClientSpec",
    "ClientStats",
    "Latency",
    "LoadGenerator",
    "LoadStats",
    "Method",
    "parse_mix",
]
