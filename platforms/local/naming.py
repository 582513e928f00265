"""Pod names as Kubernetes makes them, and free loopback ports.

A pod is named `<deployment>-<template hash>-<suffix>`, like a ReplicaSet's
pod: the hash changes when the pod template does (a rollout restart bumps a
generation, as the `restartedAt` annotation does) and the suffix is random.
Both use Kubernetes' alphabet without vowels (and without 0, 1, 3), so that no
word appears by chance.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
from collections.abc import Container

from platforms.local.spec import DeploymentSpec

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
HASH_CHARS = 5
SUFFIX_CHARS = 5


def _encode(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "".join(chars)


def template_hash(spec: DeploymentSpec, generation: int) -> str:
    """Five characters that change with the pod template or the restart generation."""
    template = {
        "argv": list(spec.argv),
        "env": dict(sorted(spec.env.items())),
        "cwd": str(spec.cwd) if spec.cwd else None,
        "memory_limit_bytes": spec.memory_limit_bytes,
        "generation": generation,
    }
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return _encode(int.from_bytes(digest[:8], "big"), HASH_CHARS)


def pod_name(prefix: str, rng: random.Random, taken: Container[str]) -> str:
    """`<prefix>-<random suffix>`, not one of `taken`."""
    while True:
        name = f"{prefix}-{''.join(rng.choices(ALPHABET, k=SUFFIX_CHARS))}"
        if name not in taken:
            return name


class Ports:
    """Free TCP ports on one host, never two alike among those handed out and not released.

    A port is free when the kernel hands it out for a bind to port 0; another
    program may take it before the pod binds it, and then the pod fails to start
    and is replaced on another port.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._in_use: set[int] = set()

    def take(self) -> int:
        while True:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                port: int = probe.getsockname()[1]
            if port not in self._in_use:
                self._in_use.add(port)
                return port

    def release(self, *ports: int | None) -> None:
        for port in ports:
            if port is not None:
                self._in_use.discard(port)
