"""The dashboard's platform from the environment: ``BALLAST_PLATFORM=kubernetes`` with its
kubeconfig, context and namespace, and the balancers' admin Service; a mistake is one
line naming the variable, in a fresh process as an operator starts it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import envkubernetes, envplatform, envport, envservice
from tests.dashboard.test_config_errors import DEV, one_line_error, run


def test_it_has_no_platform_unless_asked() -> None:
    assert envplatform({}) is None
    assert envplatform({"BALLAST_PLATFORM": "none"}) is None
    assert envplatform({"BALLAST_PLATFORM": " Kubernetes "}) == "kubernetes"


def test_it_names_the_variable_of_an_unknown_platform() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"BALLAST_PLATFORM='k8s': use kubernetes"):
        envplatform({"BALLAST_PLATFORM": "k8s"})


def test_it_reads_the_kubeconfig_context_and_namespace(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("{}", encoding="utf-8")
    settings = envkubernetes(
        {
            "BALLAST_KUBECONFIG": str(kubeconfig),
            "BALLAST_KUBE_CONTEXT": "prod",
            "BALLAST_KUBE_NAMESPACE": "shop",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",  # a kubeconfig named wins over in-cluster
        }
    )
    assert (settings.kubeconfig, settings.context, settings.namespace) == (
        str(kubeconfig), "prod", "shop",
    )  # fmt: skip
    assert not settings.in_cluster


def test_it_is_in_cluster_in_a_pod_without_a_kubeconfig() -> None:
    settings = envkubernetes({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert settings.in_cluster
    assert settings.kubeconfig is None


def test_it_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ImproperlyConfigured, match=r"^BALLAST_KUBECONFIG='.*nope': no such file"):
        envkubernetes({"BALLAST_KUBECONFIG": str(missing)})


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("ballast/ballast-balancer-admin", ("ballast", "ballast-balancer-admin")),
        ("ballast-balancer-admin", ("", "ballast-balancer-admin")),
    ],
)
def test_it_reads_the_balancers_service(value: str, found: tuple[str, str]) -> None:
    assert envservice("BALLAST_BALANCERS_SERVICE", {"BALLAST_BALANCERS_SERVICE": value}) == found


@pytest.mark.parametrize("value", ["a/b/c", "Ballast_Admin", "/admin", "ns/"])
def test_it_names_a_bad_service(value: str) -> None:
    with pytest.raises(
        ImproperlyConfigured, match=r"^BALLAST_BALANCERS_SERVICE=.*'namespace/name'"
    ):
        envservice("BALLAST_BALANCERS_SERVICE", {"BALLAST_BALANCERS_SERVICE": value})


def test_it_reads_a_port_by_name_or_number() -> None:
    assert envport("P", "admin", {}) == "admin"
    assert envport("P", "admin", {"P": "9901"}) == 9901
    with pytest.raises(ImproperlyConfigured, match=r"^P='0': a port number is 1 to 65535"):
        envport("P", "admin", {"P": "0"})
    with pytest.raises(ImproperlyConfigured, match=r"^P='Admin Port': not a port"):
        envport("P", "admin", {"P": "Admin Port"})


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"BALLAST_PLATFORM": "openshift"}, "BALLAST_PLATFORM='openshift': use kubernetes"),
        (
            {"BALLAST_PLATFORM": "kubernetes", "BALLAST_KUBECONFIG": "/nonexistent/kubeconfig"},
            "BALLAST_KUBECONFIG='/nonexistent/kubeconfig': no such file",
        ),
        (
            {"BALLAST_BALANCERS_SERVICE": "ballast/ballast-balancer-admin"},
            "BALLAST_BALANCERS_SERVICE is set but BALLAST_PLATFORM is not kubernetes",
        ),
        (
            {
                "BALLAST_PLATFORM": "kubernetes",
                "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                "BALLAST_BALANCERS_SERVICE": "admin",
                "BALLAST_BALANCERS": "b0=127.0.0.1:9901",
            },
            "BALLAST_BALANCERS and BALLAST_BALANCERS_SERVICE are both set: set one",
        ),
        ({"BALLAST_BALANCERS_PORT": "70000"}, "BALLAST_BALANCERS_PORT='70000'"),
    ],
)
def test_a_bad_platform_variable_is_one_line_naming_it(env: dict[str, str], says: str) -> None:
    line = one_line_error(run("manage.py", "check", **DEV, **env))
    assert line.startswith("manage.py: ")
    assert says in line


def test_the_dashboard_says_in_one_line_that_its_kubeconfig_does_not_work(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\ncontexts: []\n", encoding="utf-8")
    result = run(
        "-m", "dashboard", "--port", "0", **DEV,
        BALLAST_PLATFORM="kubernetes", BALLAST_KUBECONFIG=str(broken),
        BALLAST_BALANCERS_SERVICE="ballast/ballast-balancer-admin",
        BALLAST_ADMIN_TOKEN="t" * 24, BALLAST_SERVICES="inventory",
    )  # fmt: skip
    line = one_line_error(result)
    assert result.returncode == 2
    assert line.startswith("dashboard: BALLAST_PLATFORM=kubernetes: cannot configure the")


def test_the_deployed_dashboard_env_finds_the_balancers_through_the_kubernetes_api(
    tmp_path: Path,
) -> None:
    from tests.test_deploy import named, raw_docs

    env_data = named(raw_docs(), "ConfigMap", "ballast-dashboard-env")["data"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG, encoding="utf-8")
    code = (
        "from dashboard.server import setup_django; setup_django()\n"
        "from dashboard.app.collecting import control_plane_from_settings as made\n"
        "plane = made()\n"
        "print(type(plane.platform).__name__, plane.platform.namespace,"
        " plane.follower is not None, len(plane.collector.config.replicas))\n"
    )
    result = run(
        "-c", code, **DEV, **{**env_data, "BALLAST_DB_PATH": ":memory:"},
        BALLAST_KUBECONFIG=str(kubeconfig), BALLAST_ADMIN_TOKEN="t" * 24,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["KubernetesPlatform", "ballast", "True", "0"]


def test_runcollector_finds_the_balancers_from_their_admin_service(tmp_path: Path) -> None:
    from django.test import override_settings

    from dashboard.app.management.commands.runcollector import Command

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG, encoding="utf-8")
    with override_settings(
        BALLAST_PLATFORM="kubernetes",
        BALLAST_KUBERNETES=envkubernetes({"BALLAST_KUBECONFIG": str(kubeconfig)}),
        BALLAST_BALANCERS={},
        BALLAST_BALANCERS_SERVICE=("ballast", "ballast-balancer-admin"),
        BALLAST_ADMIN_TOKEN="t" * 24,
    ):
        plane = Command().control_plane()
    assert plane.follower is not None
    assert plane.reconciler.pod_gone_grace_s == 60
    assert plane.platform is not None and type(plane.platform).__name__ == "KubernetesPlatform"


# A kubeconfig that loads (nothing is called: the server is never reached here).
KUBECONFIG = """{"apiVersion": "v1", "kind": "Config",
 "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
 "users": [{"name": "u", "user": {"token": "x"}}],
 "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "ballast"}}],
 "current-context": "c"}"""
