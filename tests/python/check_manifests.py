"""Structural rules for a rendering of deploy/ (`kubectl kustomize deploy/` or an overlay).

    check_manifests.py production|laptop|example[-tls] RENDERED.yaml SECRET_EXAMPLE.yaml...

A variant ending in -tls has deploy/components/tls applied: its rules are checked too.
`example` is the production set rendered together with deploy/examples/directory (the example
internal service with its own service-account Secret): every rule but the production replica
counts, plus the directory's connections.

Prints every broken rule and exits 1 if there is any; run by tests/tests/manifests.rs after
kubernetes-validate has checked the schemas. The NetworkPolicies are checked by evaluating them:
for each connection the deployment needs (and for some it must refuse) the ingress rules of the
policies selecting the destination and the egress rules of those selecting the source decide.
"""

import ipaddress
import re
import sys

import yaml

NAMESPACE = "persons-auth"
# The label that lets pods of other workloads (internal services) call both gRPC services.
GRPC_CLIENT_LABEL = ("persons-auth/grpc-client", "true")
# Where deploy/README.md says Prometheus runs.
PROMETHEUS = ({"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})
# Settings whose values are secrets: only their *_FILE forms may be set.
SECRET_SETTINGS = {
    "AUTH_DATABASE_URL", "AUTH_KEY_ENCRYPTION_KEY", "AUTH_PREVIOUS_KEY_ENCRYPTION_KEY",
    "AUTH_HS256_SECRET", "AUTH_BOOTSTRAP_ADMIN_PASSWORD", "RESOURCE_DATABASE_URL",
    "RESOURCE_HS256_SECRET", "POSTGRES_PASSWORD", "AUTH_FORWARDING_SECRET",
    "RESOURCE_FORWARDING_SECRET", "GATEWAY_FORWARDING_SECRET",
}
# The containers that share the gateway's forwarding secret, with their settings' prefixes.
FORWARDING = {"gateway": "GATEWAY", "auth-service": "AUTH", "resource-service": "RESOURCE"}
# argon2id's memory per hash (auth-service's password parameters) and the base of its memory
# budget (64 MiB + workers x 19 MiB, checked by auth-service at start-up).
ARGON2_MIB = 19
AUTH_BASE_MIB = 64
# The gateway's memory (deploy/README.md, "Sizing"): idle RSS, what one connection may make it
# buffer, and its budget of request bodies in flight (8 MiB, measured 16 MiB resident when full).
GATEWAY_IDLE_MIB = 11
GATEWAY_CONNECTION_KIB = 80
GATEWAY_BODIES_MIB = 16
SUPERUSER_URL = re.compile(r"postgres(?:ql)?://postgres(?:[:@/]|$)")
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")

errors = []


def fail(message):
    errors.append(message)


def mebibytes(quantity):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    quantity = str(quantity)
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


def cpus(quantity):
    quantity = str(quantity)
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def workloads(docs):
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            yield doc, doc["spec"]["template"]


def matches(selector, labels):
    """A label selector (matchLabels and matchExpressions) against a set of labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# --- Pods ---------------------------------------------------------------------------------------


def check_pod(name, pod, secret_values):
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{name}: automountServiceAccountToken is not false")
    if pod_sc.get("runAsNonRoot") is not True:
        fail(f"{name}: the pod's securityContext lacks runAsNonRoot: true")
    secret_mounts = {}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for volume in volumes.values():
        secret = volume.get("secret")
        if secret is None:
            continue
        # Without fsGroup the files are root's, so a mode without "others may read" locks the
        # pod's non-root user out of them (Kubernetes' default mode, 0644, does not).
        modes = [secret.get("defaultMode", 0o644)]
        modes += [i["mode"] for i in secret.get("items") or [] if "mode" in i]
        if any(not mode & 0o004 for mode in modes) and pod_sc.get("fsGroup") is None:
            fail(f"{name}: secret volume {volume['name']} (mode {oct(min(modes))}) is unreadable "
                 "to its non-root user: the pod sets no fsGroup")
    if spec.get("initContainers"):
        fail(f"{name}: init containers have no probes; the rules here expect none")
    for c in spec["containers"]:
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext") or {}
        for probe in ("readinessProbe", "livenessProbe"):
            if not c.get(probe):
                fail(f"{where}: no {probe}")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{where}: root filesystem is not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            fail(f"{where}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            fail(f"{where}: capabilities are not drop [ALL] with nothing added")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            fail(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        if sc.get("runAsNonRoot") is False:
            fail(f"{where}: runAsNonRoot overridden to false")
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for key in ("cpu", "memory"):
            if key not in requests:
                fail(f"{where}: no {key} request")
        if "memory" not in limits:
            fail(f"{where}: no memory limit")
        elif "memory" in requests and mebibytes(requests["memory"]) > mebibytes(limits["memory"]):
            fail(f"{where}: memory request above the limit")

        for mount in c.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume and "secret" in volume:
                items = volume["secret"].get("items")
                secret_mounts[mount["mountPath"].rstrip("/")] = (
                    None if items is None else {i["path"] for i in items}
                )
                if not mount.get("readOnly"):
                    fail(f"{where}: secret volume {mount['name']} is mounted writable")
        for source in c.get("envFrom") or []:
            if "secretRef" in source:
                fail(f"{where}: envFrom a Secret puts secrets into the environment")
        for env in c.get("env") or []:
            env_name, value = env["name"], env.get("value")
            if (env.get("valueFrom") or {}).get("secretKeyRef"):
                fail(f"{where}: {env_name} comes from a Secret as an environment value")
            if env_name in SECRET_SETTINGS:
                fail(f"{where}: secret setting {env_name} is set in the environment (use {env_name}_FILE)")
            if value is None:
                continue
            if URL_WITH_PASSWORD.search(value):
                fail(f"{where}: {env_name} holds a URL with a password")
            if value in secret_values:
                fail(f"{where}: {env_name} holds a value of the example Secret")
            if env_name.endswith("_FILE"):
                directory, _, file = value.rpartition("/")
                if directory not in secret_mounts:
                    fail(f"{where}: {env_name}={value} is not in a mounted Secret")
                elif secret_mounts[directory] is not None and file not in secret_mounts[directory]:
                    fail(f"{where}: {env_name}={value} names no item of the mounted Secret")


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def check_gateway_sizing(docs):
    """deploy/README.md, "Sizing": idle RSS + GATEWAY_MAX_CONNECTIONS x what one connection may
    make the gateway buffer + the process-wide budget of bodies in flight."""
    for _, pod in workloads(docs):
        for c in pod["spec"]["containers"]:
            if c["name"] != "gateway":
                continue
            connections = env_of(c).get("GATEWAY_MAX_CONNECTIONS")
            if connections is None:
                fail("gateway: GATEWAY_MAX_CONNECTIONS is unset (10,000), so no memory limit holds")
                continue
            need = GATEWAY_IDLE_MIB + int(connections) * GATEWAY_CONNECTION_KIB / 1024 + GATEWAY_BODIES_MIB
            limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
            if limit and mebibytes(limit) < need:
                fail(f"gateway: memory limit {limit} below {need:.0f} MiB for {connections} "
                     "connections")


def check_auth_sizing(docs):
    for doc, pod in workloads(docs):
        for c in pod["spec"]["containers"]:
            workers = env_of(c).get("AUTH_HASH_WORKERS")
            if c["name"] != "auth-service":
                continue
            if workers is None:
                fail("auth-service: AUTH_HASH_WORKERS is unset, so the memory limit cannot be sized")
                continue
            limits = (c.get("resources") or {}).get("limits") or {}
            need = AUTH_BASE_MIB + int(workers) * ARGON2_MIB
            if "memory" in limits and mebibytes(limits["memory"]) < need:
                fail(f"auth-service: memory limit {limits['memory']} below {need} MiB "
                     f"(base + {workers} workers x {ARGON2_MIB} MiB)")
            # A CPU beyond the hashing workers: with no more quota than hashing can use, a
            # sign-in storm spends the whole quota and the CFS throttles every other call too.
            if "cpu" not in limits or cpus(limits["cpu"]) < int(workers) + 1:
                fail(f"auth-service: CPU limit {limits.get('cpu')} leaves no CPU beyond "
                     f"AUTH_HASH_WORKERS={workers}")


# The services that sign or check the tokens' issuer, and the setting each reads it from.
ISSUER_SETTINGS = {"auth-service": "AUTH_TOKEN_ISSUER", "resource-service": "RESOURCE_TOKEN_ISSUER",
                   "gateway": "GATEWAY_TOKEN_ISSUER", "directory": "DIRECTORY_TOKEN_ISSUER"}
ISSUER_REF = {"name": "persons-auth-settings", "key": "token-issuer"}


def check_issuer(docs, variant):
    """One issuer for every service: each reads it from the one ConfigMap value, which is an
    absolute https URL outside the laptop."""
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ISSUER_REF["name"]]
    if len(maps) != 1:
        fail(f"expected one ConfigMap {ISSUER_REF['name']}, found {len(maps)}")
        return
    issuer = (maps[0].get("data") or {}).get(ISSUER_REF["key"], "")
    if variant != "laptop" and not re.fullmatch(r"https://[^/\s]+(/\S*)?", issuer):
        fail(f"the token issuer {issuer!r} is not an absolute https URL")
    for doc, pod in workloads(docs):
        for c in pod["spec"]["containers"]:
            setting = ISSUER_SETTINGS.get(c["name"])
            if setting is None:
                continue
            env = {e["name"]: e for e in c.get("env") or []}
            ref = ((env.get(setting) or {}).get("valueFrom") or {}).get("configMapKeyRef")
            if ref is None or {k: ref.get(k) for k in ISSUER_REF} != ISSUER_REF:
                fail(f"{c['name']}: {setting} does not come from ConfigMap "
                     f"{ISSUER_REF['name']} key {ISSUER_REF['key']}")


def check_postgres(docs):
    found = False
    for doc, pod in workloads(docs):
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        for c in pod["spec"]["containers"]:
            if not str(c.get("image", "")).startswith("postgres"):
                continue
            found = True
            if "POSTGRES_PASSWORD_FILE" not in env_of(c):
                fail("postgres: POSTGRES_PASSWORD_FILE is unset")
            init = [m for m in c.get("volumeMounts") or []
                    if m["mountPath"].rstrip("/") == "/docker-entrypoint-initdb.d"
                    and "configMap" in volumes.get(m["name"], {})]
            if not init:
                fail("postgres: no ConfigMap mounted at /docker-entrypoint-initdb.d (the roles)")
    if not found:
        fail("no PostgreSQL container")


def check_secret_example(secret):
    for key, value in (secret.get("stringData") or {}).items():
        if "://" in value and SUPERUSER_URL.search(value):
            fail(f"example Secret: {key} connects as the postgres superuser")


# --- NetworkPolicies ------------------------------------------------------------------------------


class Pod:
    def __init__(self, name, namespace_labels, labels, ports=(), ip=None):
        self.name, self.namespace_labels, self.labels = name, namespace_labels, labels
        self.ports = dict(ports)  # name -> number
        self.ip = ip

    @property
    def ours(self):
        return self.namespace_labels.get("kubernetes.io/metadata.name") == NAMESPACE


def peer_matches(peer, pod):
    if "ipBlock" in peer:
        if pod.ip is None:
            return False
        ip = ipaddress.ip_address(pod.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None:
        # Pods of the policy's own namespace.
        return pod.ours and matches(pod_sel, pod.labels)
    return matches(ns_sel, pod.namespace_labels) and (pod_sel is None or matches(pod_sel, pod.labels))


def port_matches(rule_ports, target, port, protocol):
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        number = p["port"] if isinstance(p["port"], int) else target.ports.get(p["port"])
        if number is not None and number <= port <= p.get("endPort", number):
            return True
    return False


def side_allows(policies, selected, direction, other, target, port, protocol):
    """Whether the policies selecting `selected` let it talk to `other` in `direction`."""
    types_key, rules_key, peers_key = {
        "Ingress": ("Ingress", "ingress", "from"),
        "Egress": ("Egress", "egress", "to"),
    }[direction]
    relevant = [p for p in policies
                if matches(p["spec"]["podSelector"], selected.labels)
                and types_key in p["spec"].get("policyTypes", ["Ingress"])]
    if not relevant:
        return True
    for policy in relevant:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(peer, other) for peer in peers)) and port_matches(
                    rule.get("ports"), target, port, protocol):
                return True
    return False


def allowed(policies, source, target, port, protocol="TCP"):
    """Our namespace's policies decide our side of a connection; the other side's are not ours."""
    ok = True
    if target.ours:
        ok &= side_allows(policies, target, "Ingress", source, target, port, protocol)
    if source.ours:
        ok &= side_allows(policies, source, "Egress", target, target, port, protocol)
    return ok


def check_network(docs):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    default_deny = [p for p in policies
                    if p["spec"].get("podSelector") in ({}, None)
                    and set(p["spec"].get("policyTypes", [])) >= {"Ingress", "Egress"}
                    and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not default_deny:
        fail("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
    for p in policies:
        if p["metadata"].get("namespace") != NAMESPACE:
            fail(f"NetworkPolicy {p['metadata']['name']} is not in {NAMESPACE}")

    ours = {"kubernetes.io/metadata.name": NAMESPACE}
    pods = {}
    for doc, pod in workloads(docs):
        ports = [(p["name"], p["containerPort"]) for c in pod["spec"]["containers"]
                 for p in c.get("ports") or [] if "name" in p]
        pods[doc["metadata"]["name"]] = Pod(doc["metadata"]["name"], ours,
                                            pod["metadata"].get("labels") or {}, ports)
    missing = {"auth-service", "resource-service", "gateway", "postgres"} - pods.keys()
    if missing:
        fail(f"workloads missing: {sorted(missing)}")
        return
    auth, resource, gateway, postgres = (pods[n] for n in ("auth-service", "resource-service", "gateway", "postgres"))
    other_ns = {"kubernetes.io/metadata.name": "billing"}
    client = Pod("a labelled internal client", other_ns, dict([GRPC_CLIENT_LABEL]))
    local_client = Pod("a labelled pod of this namespace", ours, dict([GRPC_CLIENT_LABEL]))
    stranger = Pod("an unlabelled pod", other_ns, {"app": "billing"})
    local_stranger = Pod("an unlabelled pod of this namespace", ours, {"app": "debug"})
    prometheus = Pod("Prometheus", *PROMETHEUS)
    dns = Pod("kube-dns", *KUBE_DNS)
    internet = Pod("an address outside the cluster", {}, {}, ip="203.0.113.7")

    must = [
        (gateway, auth, 50051), (gateway, resource, 50052), (resource, auth, 50051),
        (auth, postgres, 5432), (resource, postgres, 5432),
        (prometheus, auth, 9091), (prometheus, resource, 9091), (prometheus, gateway, 9091),
        (client, auth, 50051), (client, resource, 50052),
        (local_client, auth, 50051), (local_client, resource, 50052),
        (stranger, gateway, 8080), (internet, gateway, 8080),
    ]
    must_not = [
        (gateway, postgres, 5432), (gateway, auth, 9091), (gateway, resource, 9091),
        (auth, resource, 50052), (resource, gateway, 8080), (postgres, auth, 50051),
        (stranger, auth, 50051), (stranger, resource, 50052), (stranger, postgres, 5432),
        (local_stranger, auth, 50051), (local_stranger, resource, 50052),
        (local_stranger, postgres, 5432), (stranger, gateway, 9091), (stranger, auth, 9091),
        (client, postgres, 5432), (client, gateway, 9091),
        (prometheus, auth, 50051), (prometheus, postgres, 5432),
        (auth, internet, 443), (resource, internet, 443), (gateway, internet, 443),
        (postgres, internet, 443), (auth, dns, 5353),
    ]
    directory = pods.get("directory")
    if directory is not None:
        must += [(directory, auth, 50051), (directory, resource, 50052),
                 (client, directory, 50053), (local_client, directory, 50053)]
        must_not += [(stranger, directory, 50053), (local_stranger, directory, 50053),
                     (directory, postgres, 5432), (directory, internet, 443),
                     (gateway, directory, 50053)]
    for source, target, port in must:
        if not allowed(policies, source, target, port):
            fail(f"NetworkPolicies refuse {source.name} -> {target.name}:{port}, which must be allowed")
    for source, target, port in must_not:
        if allowed(policies, source, target, port):
            fail(f"NetworkPolicies allow {source.name} -> {target.name}:{port}, which must be refused")
    for pod in pods.values():
        for protocol in ("UDP", "TCP"):
            if not allowed(policies, pod, dns, 53, protocol):
                fail(f"NetworkPolicies refuse {pod.name} DNS ({protocol} 53 to kube-dns)")


# --- Replicas -----------------------------------------------------------------------------------


def check_forwarding(docs):
    """The gateway's forwarding secret: auth-service and resource-service believe a forwarded
    client address only with it, so all three read it, from the same key of the same Secret."""
    sources = {}
    for _, pod in workloads(docs):
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        for c in pod["spec"]["containers"]:
            prefix = FORWARDING.get(c["name"])
            if prefix is None:
                continue
            path = env_of(c).get(f"{prefix}_FORWARDING_SECRET_FILE")
            if not path:
                fail(f"{c['name']}: {prefix}_FORWARDING_SECRET_FILE is unset, so every pod in the "
                     "trusted range can name the client address the per-client limits key on")
                continue
            directory, _, file = path.rpartition("/")
            for mount in c.get("volumeMounts") or []:
                if mount["mountPath"].rstrip("/") == directory:
                    secret = (volumes.get(mount["name"]) or {}).get("secret") or {}
                    keys = {i["path"]: i["key"] for i in secret.get("items") or []}
                    sources[c["name"]] = (secret.get("secretName"), keys.get(file, file))
    if len(set(sources.values())) > 1:
        fail(f"the forwarding secret comes from different Secret keys: {sources}")


def check_production(docs):
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for doc, pod in workloads(docs):
        if doc["kind"] != "Deployment":
            continue
        name = doc["metadata"]["name"]
        if doc["spec"].get("replicas", 1) < 3:
            fail(f"{name}: fewer than 3 replicas")
        strategy = (doc["spec"].get("strategy") or {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            fail(f"{name}: not a rolling update")
        hpa = [h for h in hpas if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
               and h["spec"]["scaleTargetRef"]["name"] == name]
        if not hpa:
            fail(f"{name}: no HorizontalPodAutoscaler")
        elif hpa[0]["spec"].get("minReplicas", 1) < 3:
            fail(f"{name}: HorizontalPodAutoscaler allows fewer than 3 replicas")
        labels = pod["metadata"].get("labels") or {}
        if not any(matches(p["spec"]["selector"], labels) for p in pdbs):
            fail(f"{name}: no PodDisruptionBudget")


def check_laptop(docs):
    for doc, _ in workloads(docs):
        if doc["spec"].get("replicas", 1) != 1:
            fail(f"{doc['metadata']['name']}: more than one replica on the laptop")
    for doc in docs:
        if doc["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget"):
            fail(f"{doc['kind']} {doc['metadata']['name']} on the laptop (one replica)")


def check_tls(docs):
    """deploy/components/tls: the gRPC ports serve TLS, probes ask the plain-text health port,
    every client dials https:// with a CA, both services verify PostgreSQL's certificate, and
    PostgreSQL serves TLS."""
    containers = {}
    for doc, pod in workloads(docs):
        for c in pod["spec"]["containers"]:
            containers[c["name"]] = c
    for name, prefix in (("auth-service", "AUTH"), ("resource-service", "RESOURCE")):
        c = containers.get(name)
        if c is None:
            fail(f"{name}: missing")
            continue
        env = env_of(c)
        for setting in (f"{prefix}_TLS_CERT_FILE", f"{prefix}_TLS_KEY_FILE"):
            if not env.get(setting):
                fail(f"{name}: {setting} is unset, so its gRPC port speaks plain text")
        health = env.get(f"{prefix}_HEALTH_ADDR") or ""
        port = int(health.rpartition(":")[2]) if health.rpartition(":")[2].isdigit() else None
        if port is None:
            fail(f"{name}: {prefix}_HEALTH_ADDR is unset, so no probe can reach grpc.health.v1")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc = (c.get(probe) or {}).get("grpc")
            if grpc and grpc.get("port") != port:
                fail(f"{name}: {probe} asks port {grpc.get('port')}, not the plain-text health port {port}")
        if env.get("PGSSLMODE") != "verify-full" or not env.get("PGSSLROOTCERT"):
            fail(f"{name}: PostgreSQL's certificate is not verified (PGSSLMODE=verify-full, PGSSLROOTCERT)")
    for name, prefix, urls in (
        ("gateway", "GATEWAY_TLS", ("GATEWAY_AUTH_URL", "GATEWAY_RESOURCE_URL")),
        ("resource-service", "RESOURCE_AUTH_TLS", ("RESOURCE_AUTH_URL",)),
    ):
        env = env_of(containers.get(name) or {})
        for setting in urls:
            for url in (env.get(setting) or "").split(","):
                if not url.strip().startswith("https://"):
                    fail(f"{name}: {setting} has {url!r}, not an https:// URL")
        if not env.get(f"{prefix}_CA_FILE"):
            fail(f"{name}: {prefix}_CA_FILE is unset")
    postgres = containers.get("postgres") or {}
    if "ssl=on" not in (postgres.get("args") or []):
        fail("postgres: ssl=on is not among its arguments")


def main():
    variant, rendered, *secret_examples = sys.argv[1:]
    with open(rendered) as f:
        text = f.read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    secrets = []
    for path in secret_examples:
        with open(path) as f:
            secrets.append(yaml.safe_load(f))
    secret_values = {v for secret in secrets for v in (secret.get("stringData") or {}).values() if v}

    if SUPERUSER_URL.search(text):
        fail("a URL in the manifests connects as the postgres superuser")
    for doc in docs:
        if doc["kind"] == "Secret":
            fail(f"Secret {doc['metadata']['name']} is part of the rendering (create it by hand)")
    for doc, pod in workloads(docs):
        check_pod(f"{doc['kind']} {doc['metadata']['name']}", pod, secret_values)
    check_auth_sizing(docs)
    check_gateway_sizing(docs)
    check_postgres(docs)
    for secret in secrets:
        check_secret_example(secret)
    check_issuer(docs, variant.partition("-")[0])
    check_network(docs)
    if {c["name"] for _, pod in workloads(docs) for c in pod["spec"]["containers"]} >= set(FORWARDING):
        check_forwarding(docs)
    base, _, tls = variant.partition("-")
    {"production": check_production, "laptop": check_laptop, "example": lambda _: None}[base](docs)
    if tls == "tls":
        check_tls(docs)

    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} rule(s) broken in the {variant} rendering")
        sys.exit(1)
    print(f"{variant}: {len(docs)} objects, every rule holds")


if __name__ == "__main__":
    main()
