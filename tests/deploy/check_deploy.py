#!/usr/bin/env python3
"""Static checks of everything under deploy/, run by tests/deploy/validate.sh.

Validates the Kubernetes manifests against the Kubernetes JSON schemas that the
kubernetes-validate package ships (strict: unknown fields fail; no network needed), the
ServiceMonitor and Kustomization against the schemas in tests/deploy/schemas/, and then checks
what no schema can see: that the files agree with each other and with the gateway's own
timeouts (deploy/xmpp-gateway.toml is the reference for keys and defaults).

Prints one line per check, `PASS name` or `FAIL name: why`, and exits 1 if any failed.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
# 1.30: first release with the preStop `sleep` action on by default; 1.37: newest schema shipped.
K8S_VERSIONS = ("1.30.0", "1.37.0")
OWN_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor.schema.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): SCHEMAS / "kustomization.schema.json",
}

failures = 0


def check(name: str, ok: bool, why: str = "") -> bool:
    global failures
    if ok:
        print(f"PASS {name}")
    else:
        failures += 1
        print(f"FAIL {name}: {why}")
    return ok


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys, which plain YAML loading silently
    resolves to the last value (a classic way for a manifest to lose a setting)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml_docs(path: Path) -> list:
    return [d for d in yaml.load_all(path.read_text(), Loader=UniqueKeyLoader) if d is not None]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---- the gateway's own configuration: keys and defaults -----------------------------------

def reference_config() -> tuple[dict, set[str]]:
    """deploy/xmpp-gateway.toml parsed twice: as it is (the defaults) and with its commented
    example keys (`# key = value`) enabled, which gives the set of every known key path."""
    text = (DEPLOY / "xmpp-gateway.toml").read_text()
    defaults = tomllib.loads(text)
    enabled = "\n".join(
        re.sub(r"^#\s*([a-z_]+\s*=\s*\S.*)$", r"\1", line) for line in text.splitlines()
    )
    return defaults, key_paths(tomllib.loads(enabled))


def key_paths(table: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            paths |= key_paths(value, path + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                paths |= key_paths(item, path + ".")
        else:
            paths.add(path)
    return paths


def setting(config: dict, defaults: dict, dotted: str):
    for source in (config, defaults):
        node = source
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    raise KeyError(dotted)


# ---- Kubernetes ------------------------------------------------------------------------------

def validate_own_schema(doc: dict, schema_path: Path) -> list[str]:
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def schema_errors(doc: dict) -> dict[str, list[str]]:
    """Errors per schema used: the shipped Kubernetes schemas per version, or our own."""
    own = OWN_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
    if own is not None:
        return {own.name: validate_own_schema(doc, own)}
    out = {}
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            out[version] = []
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            out[version] = [f"{path}: {e.message}"]
        except SchemaNotFoundError as e:
            # kubernetes-validate only warns about an unknown kind; here it is a failure, so
            # a new CRD cannot slip through unchecked.
            out[version] = [e.message]
    return out


def check_schemas(manifests: dict[Path, list[dict]]) -> None:
    for path, docs in manifests.items():
        for doc in docs:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name', path.stem)}"
            for schema, errors in schema_errors(doc).items():
                check(f"schema {rel(path)} {name} [{schema}]", not errors, "; ".join(errors))


def check_validators_bite() -> None:
    """The validators must reject what they exist to reject: otherwise every PASS above
    could be vacuous (a schema that accepts anything, a kind that is silently skipped)."""
    deployment = load_yaml_docs(K8S / "deployment.yaml")[0]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    check("validator rejects an unknown Deployment field",
          any(schema_errors(bad).values()), "a misspelt field passed")
    bad = copy.deepcopy(deployment)
    bad["spec"]["replicas"] = "two"
    check("validator rejects a wrongly typed field", any(schema_errors(bad).values()),
          "replicas: 'two' passed")
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}
    check("validator rejects an unknown kind", any(schema_errors(unknown).values()),
          "an unknown kind passed")
    monitor = load_yaml_docs(K8S / "servicemonitor.yaml")[0]
    bad = copy.deepcopy(monitor)
    bad["spec"]["endpoints"][0]["intervall"] = "15s"
    check("ServiceMonitor schema rejects an unknown field", any(schema_errors(bad).values()),
          "a misspelt field passed")
    bad = copy.deepcopy(monitor)
    bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
    check("ServiceMonitor schema rejects a bad duration", any(schema_errors(bad).values()),
          "interval '15 seconds' passed")
    try:
        yaml.load("a: 1\na: 2\n", Loader=UniqueKeyLoader)
        check("YAML loader rejects duplicate keys", False, "duplicate key accepted")
    except yaml.YAMLError:
        check("YAML loader rejects duplicate keys", True)


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_kubernetes(defaults: dict, known_keys: set[str]) -> None:
    files = sorted(p for p in K8S.glob("*.yaml"))
    manifests = {}
    for path in files:
        try:
            manifests[path] = load_yaml_docs(path)
            check(f"yaml {rel(path)}", bool(manifests[path]), "no document")
        except yaml.YAMLError as e:
            check(f"yaml {rel(path)}", False, str(e).replace("\n", " "))
    check_schemas(manifests)

    by_kind = {}
    for docs in manifests.values():
        for doc in docs:
            by_kind.setdefault(doc["kind"], []).append(doc)
    for kind in ("Deployment", "ConfigMap", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler", "ServiceMonitor", "Kustomization"):
        check(f"kubernetes has one {kind}", len(by_kind.get(kind, [])) == 1,
              f"found {len(by_kind.get(kind, []))}")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    check("kubernetes has the Services xmpp-gateway and xmpp-gateway-cluster (headless)",
          set(services) == {"xmpp-gateway", "xmpp-gateway-cluster"}, str(sorted(services)))
    try:
        dep, cm, pdb, hpa, mon, kus = (by_kind[k][0] for k in (
            "Deployment", "ConfigMap", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceMonitor", "Kustomization"))
        svc, headless = services["xmpp-gateway"], services["xmpp-gateway-cluster"]
    except (KeyError, IndexError):
        return

    # kustomization: every manifest listed, every listed file present.
    listed = set(kus.get("resources", []))
    present = {p.name for p in files if p.name != "kustomization.yaml"}
    check("kustomization lists every manifest", listed == present,
          f"listed {sorted(listed)}, present {sorted(present)}")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    container = spec["containers"][0]
    image_names = {i["name"] for i in kus.get("images", [])}
    check("kustomization images entry names the container image",
          container["image"].split(":")[0] in image_names,
          f"{container['image']} vs {sorted(image_names)}")

    labels = pod["metadata"]["labels"]
    check("deployment selector matches its pod labels", selects(dep["spec"]["selector"], labels),
          "selector does not select the template")
    check("service selects the gateway pods", selects(svc["spec"]["selector"], labels),
          "service selector does not match pod labels")
    check("pdb selects the gateway pods", selects(pdb["spec"]["selector"], labels),
          "pdb selector does not match pod labels")
    check("hpa targets the deployment",
          hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
          and hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "wrong target")
    check("hpa minReplicas leaves a pod beyond the pdb's minAvailable",
          hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"], "minReplicas too low")
    check("hpa cpu target has a cpu request to be relative to",
          "cpu" in container.get("resources", {}).get("requests", {}), "no cpu request")

    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    check("container ports: http 5280 and admin 9280",
          port_names.get("http") == 5280 and port_names.get("admin") == 9280, str(port_names))
    args = container.get("args", [])
    arg = lambda flag: args[args.index(flag) + 1] if flag in args else None  # noqa: E731
    check("args listen on the http port",
          arg("--listen") == f"0.0.0.0:{port_names.get('http')}", str(arg("--listen")))
    check("args admin-listen on the admin port",
          arg("--admin-listen") == f"0.0.0.0:{port_names.get('admin')}",
          str(arg("--admin-listen")))
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(f"{probe} GET {path} on the admin port",
              get.get("path") == path and get.get("port") in ("admin", port_names.get("admin")),
              str(get))
    for sp in svc["spec"]["ports"]:
        check(f"service port {sp['name']} targets a container port",
              sp["targetPort"] in port_names or sp["targetPort"] in port_names.values(),
              str(sp["targetPort"]))
    check("service has no session affinity (the pods' cluster forwards BOSH requests)",
          svc["spec"].get("sessionAffinity", "None") == "None", str(svc["spec"].get("sessionAffinity")))
    check("headless cluster service: no cluster IP, not-ready pods published, selects the pods",
          headless["spec"].get("clusterIP") == "None"
          and headless["spec"].get("publishNotReadyAddresses") is True
          and selects(headless["spec"]["selector"], labels), str(headless["spec"]))
    hports = headless["spec"]["ports"]
    check("headless cluster service targets the cluster container port",
          len(hports) == 1 and hports[0]["targetPort"] in ("cluster", port_names.get("cluster")),
          str(hports))
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    check("servicemonitor selects the service", selects(mon["spec"]["selector"],
                                                       svc["metadata"]["labels"]), "no match")
    for ep in mon["spec"]["endpoints"]:
        check(f"servicemonitor port {ep.get('port')} exists on the service",
              ep.get("port") in svc_ports and ep.get("path") == "/metrics", str(ep))

    # Security context demanded for the image (distroless nonroot, uid 65532).
    psc, csc = spec.get("securityContext", {}), container.get("securityContext", {})
    check("pod and container run as non-root 65532",
          psc.get("runAsNonRoot") and psc.get("runAsUser") == 65532
          and csc.get("runAsNonRoot") and csc.get("runAsUser") == 65532, f"{psc} {csc}")
    check("container hardening (read-only root, no escalation, no caps, RuntimeDefault)",
          csc.get("readOnlyRootFilesystem") is True
          and csc.get("allowPrivilegeEscalation") is False
          and csc.get("capabilities", {}).get("drop") == ["ALL"]
          and "add" not in csc.get("capabilities", {})
          and (csc.get("seccompProfile") or psc.get("seccompProfile", {})).get("type")
          == "RuntimeDefault", str(csc))
    check("no preStop exec (the image has no shell or sleep binary)",
          "exec" not in container.get("lifecycle", {}).get("preStop", {}), "exec hook found")

    # The ConfigMap: the file the container reads, with keys the gateway knows.
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    cm_volumes = [v for v in spec.get("volumes", []) if "configMap" in v]
    check("config volume comes from the ConfigMap",
          any(v["configMap"]["name"] == cm["metadata"]["name"] for v in cm_volumes),
          "no volume for the ConfigMap")
    config_path = arg("--config") or ""
    key = Path(config_path).name
    check("--config points at the mounted ConfigMap key",
          any(config_path == f"{mounts.get(v['name'])}/{key}" for v in cm_volumes)
          and key in cm["data"], f"{config_path} not mounted from ConfigMap data")
    try:
        cm_config = tomllib.loads(cm["data"].get(key, ""))
        check("configmap TOML parses", True)
    except tomllib.TOMLDecodeError as e:
        check("configmap TOML parses", False, str(e))
        return
    unknown = sorted(key_paths(cm_config) - known_keys)
    check("configmap TOML has only keys the gateway knows", not unknown,
          f"unknown: {unknown} (reference: deploy/xmpp-gateway.toml)")
    check("configmap has at least one route", bool(cm_config.get("route")), "no [[route]]")

    # docs/protocol.md §8: the pods form a cluster through the headless Service.
    cluster = cm_config.get("cluster", {})
    listen_port = str(cluster.get("listen", "")).rsplit(":", 1)[-1]
    check("configmap [cluster] listens on the cluster container port",
          listen_port == str(port_names.get("cluster")), f"{cluster.get('listen')} vs {port_names}")
    dns_host, _, dns_port = str(cluster.get("peers_dns", "")).rpartition(":")
    check("configmap [cluster] finds its peers through the headless Service",
          dns_host.split(".")[0] == headless["metadata"]["name"]
          and dns_port == str(hports[0]["port"]), f"{cluster.get('peers_dns')}")
    secret_volumes = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
    secret_file = Path(str(cluster.get("secret_file", "")))
    check("configmap [cluster] secret_file is a key of a mounted Secret",
          any(mounts.get(name) == str(secret_file.parent)
              and any(i["path"] == secret_file.name for i in v.get("items", []))
              for name, v in secret_volumes.items()),
          f"{secret_file} vs mounts {mounts} and secrets {secret_volumes}")

    drain = setting(cm_config, defaults, "drain_timeout_secs")
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check("terminationGracePeriodSeconds covers preStop + drain + 5 s",
          grace >= pre_stop + drain + 5, f"{grace} < {pre_stop} + {drain} + 5")
    ready = container["readinessProbe"]
    check("readiness notices a drain within 15 s",
          ready.get("periodSeconds", 10) * ready.get("failureThreshold", 3) <= 15, str(ready))


# ---- HAProxy ---------------------------------------------------------------------------------

def haproxy_seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value)
    if not m:
        raise ValueError(value)
    scale = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(m.group(1)) * scale[m.group(2)]


def haproxy_sections(text: str) -> dict[str, list[str]]:
    sections, current = {}, None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if not raw[0].isspace():
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
    return sections


def check_haproxy(defaults: dict) -> None:
    path = DEPLOY / "haproxy" / "haproxy.cfg"
    sections = haproxy_sections(path.read_text())
    dflt = sections.get("defaults", [])
    timeouts = {}
    for line in dflt:
        parts = line.split()
        if parts[0] == "timeout" and len(parts) == 3:
            timeouts[parts[1]] = haproxy_seconds(parts[2])
    wait = setting({}, defaults, "bosh.max_wait_secs")
    ping = setting({}, defaults, "websocket.ping_interval_secs")
    for name in ("client", "server"):
        check(f"haproxy timeout {name} > BOSH wait ({wait} s) + 15 s margin",
              timeouts.get(name, 0) >= wait + 15, f"{timeouts.get(name)} s")
    check(f"haproxy timeout tunnel far above the ping interval ({ping} s)",
          timeouts.get("tunnel", 0) >= max(10 * ping, 600), f"{timeouts.get('tunnel')} s")
    check("haproxy timeout http-request set (slowloris)", "http-request" in timeouts, "missing")

    frontends = [k for k in sections if k.startswith("frontend ")]
    check("haproxy has one frontend and the backends gateways and bosh",
          len(frontends) == 1 and "backend gateways" in sections and "backend bosh" in sections,
          f"{frontends} {[k for k in sections if k.startswith('backend ')]}")
    if not (frontends and "backend gateways" in sections and "backend bosh" in sections):
        return
    front, back, bosh = sections[frontends[0]], sections["backend gateways"], sections["backend bosh"]
    check("haproxy terminates TLS on 443 with /etc/haproxy/certs/xmpp.pem",
          any(l.startswith("bind") and ":443" in l and "ssl crt /etc/haproxy/certs/xmpp.pem" in l
              for l in front), "no such bind")
    check("haproxy redirects plain HTTP to https",
          any(l.startswith("bind") and l.split()[1].endswith(":80") for l in front)
          and any("redirect scheme https" in l for l in front), "no :80 redirect")
    check("haproxy sets X-Forwarded-For and X-Forwarded-Proto https",
          "option forwardfor" in front + back
          and any(re.search(r"set-header X-Forwarded-Proto https", l) for l in front), "missing")
    check("haproxy checks /readyz", "option httpchk" in back
          and any("/readyz" in l for l in back), "no /readyz check")
    servers = [l for l in back if l.startswith("server ")]
    check("haproxy servers gw1 and gw2, each checked on its own admin port",
          len(servers) == 2 and all(re.search(r"\bcheck port \S+", l) for l in servers),
          str(servers))
    check("haproxy sends /http-bind to the bosh backend",
          "use_backend bosh if { path_beg /http-bind }" in front, "no use_backend for /http-bind")
    bosh_servers = [l for l in bosh if l.startswith("server ")]
    check("haproxy bosh backend: round robin, the same nodes tracking the checked ones",
          "balance roundrobin" in bosh and len(bosh_servers) == 2
          and all(re.search(r"\btrack gateways/gw[12]$", l) for l in bosh_servers),
          str(bosh_servers))
    everything = sum(sections.values(), [])
    check("haproxy keeps BOSH on no node: no cookie, no stick table, no persist "
          "(the gateways' cluster forwards)",
          not any(re.match(r"(cookie|stick|stick-table|option persist)\b", l) for l in everything),
          str([l for l in everything if re.match(r"(cookie|stick|option persist)\b", l)]))
    check("haproxy never shuts sessions of a node marked down",
          not any("shutdown-sessions" in l for l in sum(sections.values(), [])),
          "on-marked-down shutdown-sessions would cut WebSocket tunnels during a drain")
    check("haproxy retries and redispatches", "option redispatch 1" in dflt + back
          and any(l.startswith("retries") for l in dflt + back), "missing")


# ---- Docker Compose, Prometheus, Grafana -----------------------------------------------------

def compose_bind_source(volume: str) -> str | None:
    source = volume.split(":", 1)[0]
    return source if source.startswith((".", "/")) else None


def check_compose() -> None:
    path = DEPLOY / "docker-compose.yml"
    try:
        compose = load_yaml_docs(path)[0]
        check(f"yaml {rel(path)}", True)
    except yaml.YAMLError as e:
        check(f"yaml {rel(path)}", False, str(e).replace("\n", " "))
        return
    services = compose.get("services", {})
    expected = {"certs", "prosody", "gw1", "gw2", "haproxy", "prometheus", "grafana"}
    check("compose services", expected <= set(services), f"missing {expected - set(services)}")
    volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        check(f"compose {name}: image or build", "image" in svc or "build" in svc, "neither")
        if "build" in svc:
            ctx = (DEPLOY / svc["build"]["context"]).resolve()
            dockerfile = ctx / svc["build"].get("dockerfile", "Dockerfile")
            check(f"compose {name}: build context and Dockerfile exist",
                  ctx.is_dir() and dockerfile.is_file(), str(dockerfile))
        for vol in svc.get("volumes", []):
            source = compose_bind_source(vol)
            if source is None:
                check(f"compose {name}: volume {vol.split(':')[0]} declared",
                      vol.split(":")[0] in volumes, "not in top-level volumes")
            else:
                check(f"compose {name}: bind source {source} exists",
                      (DEPLOY / source).exists(), str((DEPLOY / source).resolve()))
        deps = svc.get("depends_on", [])
        for dep in deps:
            check(f"compose {name}: depends_on {dep} exists", dep in services, "no such service")

    gateways = {n: s for n, s in services.items() if n in ("gw1", "gw2")}
    listen = {}
    for name, svc in gateways.items():
        cmd = svc.get("command", [])
        get = lambda flag: cmd[cmd.index(flag) + 1] if flag in cmd else ""  # noqa: E731
        listen[name] = (get("--listen").rsplit(":", 1)[-1], get("--admin-listen").rsplit(":", 1)[-1])
        route = get("--route")
        check(f"compose {name}: route targets the prosody service",
              route.split("=", 1)[-1].split(":")[0] == "prosody", route)
        grace = svc.get("stop_grace_period", "10s")
        check(f"compose {name}: stop_grace_period covers the drain",
              haproxy_seconds(grace) >= 35, grace)

    # docs/protocol.md §8: the gateways form a cluster, so HAProxy needs no BOSH stickiness.
    for name, svc in gateways.items():
        genv = svc.get("environment", {})
        secret = genv.get("XMPP_GATEWAY_CLUSTER__SECRET_FILE", "")
        peers = genv.get("XMPP_GATEWAY_CLUSTER__PEERS", "")
        port = genv.get("XMPP_GATEWAY_CLUSTER__LISTEN", "").rsplit(":", 1)[-1]
        check(f"compose {name}: in a cluster with every gateway, the secret from a mounted volume",
              port and all(f"{g}:{port}" in peers for g in gateways)
              and any(secret.startswith(v.split(":")[1] + "/") for v in svc.get("volumes", [])
                      if ":" in v),
              f"listen :{port}, peers {peers}, secret {secret}")

    env = services.get("haproxy", {}).get("environment", {})
    for gw in ("gw1", "gw2"):
        n = gw[-1]
        addr, admin = env.get(f"GW{n}_ADDR", ""), str(env.get(f"GW{n}_ADMIN_PORT", ""))
        check(f"compose haproxy reaches {gw} on its public and admin ports",
              gw in listen and addr == f"{gw}:{listen[gw][0]}" and admin == listen[gw][1],
              f"{addr} / {admin} vs {listen.get(gw)}")
    check("compose haproxy mounts deploy/haproxy/haproxy.cfg",
          any(v.startswith("./haproxy/haproxy.cfg:") for v in services["haproxy"]["volumes"]),
          "not mounted")

    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for sc in prom["scrape_configs"] for s in sc.get("static_configs", [])
               for t in s["targets"]}
    want = {f"{gw}:{listen[gw][1]}" for gw in listen}
    check("prometheus scrapes both gateways' admin ports", targets == want,
          f"{sorted(targets)} vs {sorted(want)}")
    check("compose prometheus mounts prometheus.yml",
          any(v.startswith("./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml")
              for v in services["prometheus"]["volumes"]), "not mounted")

    graf = services.get("grafana", {})
    mounts = dict(v.split(":")[:2] for v in graf.get("volumes", []))
    for provider in (ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"):
        for p in yaml.safe_load(provider.read_text()).get("providers", []):
            target = p.get("options", {}).get("path")
            check(f"grafana provider {provider.name} reads a mounted directory",
                  mounts.get("../grafana/dashboards") == target, f"{target} vs {mounts}")
    for ds_file in (ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml"):
        for ds in yaml.safe_load(ds_file.read_text()).get("datasources", []):
            host = re.sub(r"^\w+://", "", ds.get("url", "")).split(":")[0]
            check(f"grafana datasource {ds.get('name')} points at a compose service",
                  host in services, ds.get("url"))


# ---- Dockerfile and systemd unit -------------------------------------------------------------

def check_dockerfile(defaults: dict) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    froms = [l.split()[1] for l in lines if l.startswith("FROM ")]
    check("Dockerfile: rust:1-bookworm builder, distroless/debian runtime",
          len(froms) == 2 and froms[0] == "rust:1-bookworm"
          and re.match(r"(gcr\.io/distroless/cc-debian12|debian:bookworm-slim)", froms[1]),
          str(froms))
    check("Dockerfile: cargo build --release --locked -p xmpp-gateway",
          "cargo build --release --locked -p xmpp-gateway" in text, "missing")
    check("Dockerfile: EXPOSE 5280 9280", "EXPOSE 5280 9280" in lines, "missing")
    user = [l.split()[1] for l in lines if l.startswith("USER ")]
    check("Dockerfile: runs as non-root", user and user[-1].split(":")[0] not in ("0", "root"),
          str(user))
    check("Dockerfile: ships the example configuration",
          "COPY deploy/xmpp-gateway.toml /etc/xmpp-gateway/xmpp-gateway.toml" in lines, "missing")
    entry = [l for l in lines if l.startswith("ENTRYPOINT ")]
    check("Dockerfile: exec-form ENTRYPOINT (signals reach the gateway, not a shell)",
          entry and entry[-1].startswith('ENTRYPOINT ["'), str(entry))
    cmd = [l for l in lines if l.startswith("CMD ")]
    check("Dockerfile: listeners bind all interfaces in the container",
          cmd and "0.0.0.0:5280" in cmd[-1] and "0.0.0.0:9280" in cmd[-1], str(cmd))


def systemd_seconds(value: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"(\d+)\s*(ms|s|min|m|h)?", value):
        total += int(num) * {"ms": 1e-3, "s": 1, "": 1, "min": 60, "m": 60, "h": 3600}[unit]
    return total


def check_systemd(defaults: dict) -> None:
    settings = {}
    for line in (DEPLOY / "systemd" / "xmpp-gateway.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            settings.setdefault(k.strip(), []).append(v.strip())
    one = lambda k: (settings.get(k) or [""])[-1]  # noqa: E731
    drain = setting({}, defaults, "drain_timeout_secs")
    check("unit: TimeoutStopSec covers the drain + 10 s",
          systemd_seconds(one("TimeoutStopSec")) >= drain + 10, one("TimeoutStopSec"))
    check("unit: Type=exec, SIGTERM, reload by SIGHUP",
          one("Type") == "exec" and one("KillSignal") == "SIGTERM"
          and "-HUP $MAINPID" in one("ExecReload"), str(settings.get("ExecReload")))
    check("unit: ExecStart uses /etc/xmpp-gateway/xmpp-gateway.toml",
          one("ExecStart") == "/usr/local/bin/xmpp-gateway --config "
          "/etc/xmpp-gateway/xmpp-gateway.toml", one("ExecStart"))
    check("unit: LimitNOFILE 1048576", one("LimitNOFILE") == "1048576", one("LimitNOFILE"))
    required = {
        "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes",
        "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "Restart": "on-failure",
    }
    wrong = {k: one(k) for k, v in required.items() if k not in settings or one(k) != v}
    check("unit: sandboxing settings", not wrong, str(wrong))
    check("unit: SystemCallFilter=@system-service",
          "@system-service" in settings.get("SystemCallFilter", []), "missing")


def main() -> int:
    defaults, known = reference_config()
    check("reference config deploy/xmpp-gateway.toml parses", bool(known), "no keys")
    check_validators_bite()
    check_kubernetes(defaults, known)
    check_haproxy(defaults)
    check_compose()
    check_dockerfile(defaults)
    check_systemd(defaults)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
