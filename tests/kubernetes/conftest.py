"""Fixtures: the fake API server, a kubeconfig pointing at it, a platform through it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from platforms.kubernetes import KubernetesPlatform, KubernetesSettings
from tests.kubernetes.fakeapi import FakeKubernetes


@pytest.fixture
def fake_api() -> Iterator[FakeKubernetes]:
    api = FakeKubernetes(bookmark_interval_s=0.2)
    api.start()
    yield api
    api.stop()


@pytest.fixture
def kubeconfig(fake_api: FakeKubernetes, tmp_path: Path) -> Path:
    return fake_api.write_kubeconfig(tmp_path / "kubeconfig", namespace="shop")


@pytest.fixture
def settings(kubeconfig: Path) -> KubernetesSettings:
    """Quick retries and polls: the fake answers at once."""
    return KubernetesSettings(
        kubeconfig=str(kubeconfig),
        context="fake",
        watch_timeout_s=30,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        poll_interval_s=0.05,
        rollout_timeout_s=10,
    )


@pytest.fixture
def platform(settings: KubernetesSettings) -> KubernetesPlatform:
    return KubernetesPlatform(settings, rng=random.Random(7))
