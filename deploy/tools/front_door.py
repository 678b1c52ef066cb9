"""deploy/check's front door checks, on the rendered overlays (validate.py
calls them; `validate.py front-door-selftest` proves that each one fails on
a broken copy of a rendered overlay).

public_routes: only `/api/` is public.
  - every VirtualService bound to an ingress Gateway (any gateway but
    `mesh`) forwards only requests whose path is `/api/...`: each HTTP route
    that forwards has matches, and each match is a case-sensitive `prefix`
    or `exact` URI starting with `/api/` (no regex, no header-only match);
    no rewrite leaves `/api/`; no TCP/TLS routes, no delegation;
  - no other public entry: no Service of type LoadBalancer/NodePort or with
    externalIPs, no Ingress, no Gateway server that passes TLS/TCP through;
  - every workload port the ingress gateway's namespace may reach (by the
    NetworkPolicies) is limited to `/api/*` by the Istio
    AuthorizationPolicies (evaluated like Istio: DENY first, then ALLOW):
    so a route added by hand later still cannot reach /metrics, /ready or
    /health;
  - the gateway forwards only `/api/` prefixes, unchanged (its routes in
    gateway.toml, or the default `/api/stores`; upstream URLs without a
    path);
  - Prometheus can still scrape every ServiceMonitor endpoint: admitted by
    the NetworkPolicies from its namespace and allowed GET on the path by
    the AuthorizationPolicies for its principal.

queue_key: the gateway's write queue key is required.
  - the gateway container's GATEWAY_QUEUE_KEY comes from a Secret key
    (secretKeyRef) that is not optional: never a literal, a ConfigMap, or a
    key file beside the queue;
  - gateway.toml's `[degraded] queue_key_source` is "env" (the gateway
    refuses to start without GATEWAY_QUEUE_KEY).

queue_backend: where the gateway's accepted writes live.
  - redb (the default): queue_path is on a volume the container mounts
    (the root filesystem is read-only);
  - jetstream: [degraded.jetstream] names NATS URLs and replicas >= 3 (a
    202 survives the loss of a NATS server), no queue_path and no
    writable volume in the pod (it keeps nothing of the queue), the root
    filesystem read-only, GATEWAY_NATS_TOKEN from a required Secret, and a
    NetworkPolicy lets the gateway reach the NATS servers' client port;
  - the overlays in JETSTREAM_OVERLAYS (prod) use jetstream, and every
    overlay's gateway.toml equals the base's outside [degraded]
    (validate.py, across overlays).

nats_access (on the rendered deploy/k8s/nats, namespace `nats`): only the
gateways reach the NATS client port 4222, only the NATS servers the route
port 6222, nobody the monitoring port 8222: by the NetworkPolicies and by
the Istio AuthorizationPolicies (STRICT mTLS). The NATS pods come from the
Helm chart (not rendered offline): a stand-in with the chart's labels and
ports is checked against the policies. nats_values: the Helm values set what
those policies and the gateway rely on (3 servers, JetStream on PVCs, the
token from a Secret, no_advertise, service account `nats`, no nats-box).

Each check returns a list of failures (strings) and a list of notes (what
was verified), for one overlay's documents.
"""

import copy
import re
import tomllib
from urllib.parse import urlsplit

# Where the public entry and Prometheus come from (deploy/README.md,
# "Prerequisites"; the NetworkPolicies name the same namespaces).
INGRESS_NAMESPACE = "istio-ingress"
INGRESS_POD_LABELS = {"istio": "ingressgateway"}
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_PRINCIPAL = "cluster.local/ns/monitoring/sa/prometheus-k8s"
API_PREFIX = "/api/"
QUEUE_KEY_ENV = "GATEWAY_QUEUE_KEY"
# The gateway's default routes when gateway.toml has none
# (bins/gateway/src/config.rs, default_routes).
GATEWAY_DEFAULT_PREFIXES = ["/api/stores"]
GATEWAY_UPSTREAM_ENVS = ("STORE_SERVICE_URL", "HARDWARE_SERVICE_URL")
# The JetStream write queue (components/jetstream-queue, deploy/k8s/nats).
JETSTREAM_OVERLAYS = {"prod"}
NATS_TOKEN_ENV = "GATEWAY_NATS_TOKEN"
PLATFORM_NAMESPACE = "store-platform"
GATEWAY_LABELS = {"app.kubernetes.io/name": "gateway"}
GATEWAY_PRINCIPAL = "cluster.local/ns/store-platform/sa/gateway"
NATS_NAMESPACE = "nats"
NATS_POD_LABELS = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats"}
NATS_PRINCIPAL = "cluster.local/ns/nats/sa/nats"
NATS_CLIENT_PORT, NATS_ROUTE_PORT, NATS_MONITOR_PORT = 4222, 6222, 8222


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def name_of(doc):
    return doc.get("metadata", {}).get("name", "?")


def namespace_of(doc, default="default"):
    return doc.get("metadata", {}).get("namespace", default)


# --- label selectors ---------------------------------------------------------


def selector_matches(selector, labels, known=True):
    """Whether `selector` selects `labels`. With known=False the labels are
    only partly known (another namespace's pod): unknown keys may match, so
    the answer is "could it match"."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if key in labels:
            if labels[key] != value:
                return False
        elif known:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if not present and not known:
            continue  # the unknown label could satisfy any operator
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# --- workloads and ports -------------------------------------------------------


class Workload:
    """A Deployment's pods: labels and container ports."""

    def __init__(self, doc):
        self.doc = doc
        self.name = name_of(doc)
        self.namespace = namespace_of(doc)
        template = doc["spec"]["template"]
        self.labels = template.get("metadata", {}).get("labels", {})
        self.containers = template["spec"].get("containers", [])
        self.ports = []  # (number, name)
        for container in self.containers:
            for port in container.get("ports") or []:
                if port.get("protocol", "TCP") == "TCP":
                    self.ports.append((port["containerPort"], port.get("name")))

    def resolve(self, target):
        """A Service targetPort (number or name) as a container port number."""
        if isinstance(target, int):
            return target
        for number, name in self.ports:
            if name == target:
                return number
        return None

    def port_name(self, number):
        return next((name for n, name in self.ports if n == number), None)


def workloads(docs):
    return [Workload(d) for d in by_kind(docs, "Deployment")]


def service_targets(docs, service_name, port_ref):
    """(workload, container port) behind a Service port (number or name)."""
    out = []
    for svc in by_kind(docs, "Service"):
        if name_of(svc) != service_name:
            continue
        selector = svc["spec"].get("selector")
        for port in svc["spec"].get("ports", []):
            if port_ref is not None and port_ref not in (port.get("port"), port.get("name")):
                continue
            for wl in workloads(docs):
                if selector and wl.namespace == namespace_of(svc) and selector_matches(
                    {"matchLabels": selector}, wl.labels
                ):
                    number = wl.resolve(port.get("targetPort", port.get("port")))
                    if number is not None:
                        out.append((wl, number))
    return out


# --- NetworkPolicies -----------------------------------------------------------


def port_in(rule_ports, number, name):
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != "TCP":
            continue
        port = p.get("port")
        if port is None:
            return True
        if isinstance(port, str):
            if port == name:
                return True
            continue
        if port == number or (p.get("endPort") and port <= number <= p["endPort"]):
            return True
    return False


def admitted(docs, wl, number, peer_namespace, peer_labels, peer_known):
    """NetworkPolicies that let a pod of `peer_namespace` (labels
    `peer_labels`, partly known unless peer_known) reach `wl`:`number`.
    Returns the names of the admitting policies, [] if none, or None if no
    policy isolates the pod for ingress (everything is admitted)."""
    ns_labels = {"kubernetes.io/metadata.name": peer_namespace}
    isolating, admitting = False, []
    for np in by_kind(docs, "NetworkPolicy"):
        if namespace_of(np) != wl.namespace:
            continue
        spec = np.get("spec", {})
        if not selector_matches(spec.get("podSelector") or {}, wl.labels):
            continue
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" not in types:
            continue
        isolating = True
        for rule in spec.get("ingress") or []:
            if not port_in(rule.get("ports"), number, wl.port_name(number)):
                continue
            peers = rule.get("from")
            if not peers:
                admitting.append(name_of(np))
                continue
            for peer in peers:
                if "ipBlock" in peer:
                    # Pod addresses may fall in it: possible, never certain.
                    if not peer_known:
                        admitting.append(name_of(np))
                    continue
                ns_sel = peer.get("namespaceSelector")
                if ns_sel is None:
                    same = peer_namespace == wl.namespace
                    if same and selector_matches(peer.get("podSelector") or {}, peer_labels, peer_known):
                        admitting.append(name_of(np))
                    continue
                if selector_matches(ns_sel, ns_labels, peer_known) and selector_matches(
                    peer.get("podSelector") or {}, peer_labels, peer_known
                ):
                    admitting.append(name_of(np))
    return admitting if isolating else None


# --- Istio AuthorizationPolicies -----------------------------------------------


def pattern_matches(pattern, value):
    """Istio's string match: exact, `prefix*`, `*suffix`, `*`."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def path_pattern_within_api(pattern):
    """Whether every path the pattern matches starts with /api/."""
    if pattern.startswith("*"):
        return False
    return pattern.rstrip("*").startswith(API_PREFIX)


def ingress_principal_may_match(pattern):
    """Whether a principal pattern may match the ingress gateway's
    `<trust domain>/ns/istio-ingress/sa/<name>` (the name is site-specific)."""
    if pattern == "*" or pattern.startswith("*"):
        return True
    if pattern.endswith("*"):
        stem = pattern[:-1]
        principal = f"{stem.split('/')[0]}/ns/{INGRESS_NAMESPACE}/sa/"
        return principal.startswith(stem) or stem.startswith(principal)
    return re.fullmatch(rf"[^/]+/ns/{re.escape(INGRESS_NAMESPACE)}/sa/[^/]+", pattern) is not None


class Source:
    """A caller: its namespace and principal (None: the principal may be
    anything of that namespace)."""

    def __init__(self, namespace, principal=None):
        self.namespace = namespace
        self.principal = principal

    def principal_may(self, pattern):
        if self.principal is None:
            return ingress_principal_may_match(pattern)
        return pattern_matches(pattern, self.principal)

    def source_may_match(self, src):
        """Whether a rule's `from.source` may match this caller."""
        for pattern in src.get("notNamespaces") or []:
            if pattern_matches(pattern, self.namespace):
                return False
        if self.principal is not None:
            for pattern in src.get("notPrincipals") or []:
                if pattern_matches(pattern, self.principal):
                    return False
        if "namespaces" in src and not any(pattern_matches(p, self.namespace) for p in src["namespaces"]):
            return False
        if "principals" in src and not any(self.principal_may(p) for p in src["principals"]):
            return False
        return True  # ipBlocks, requestPrincipals...: may match

    def source_certainly_matches(self, src):
        """Whether a rule's `from.source` matches this caller whatever else
        the request carries."""
        keys = set(src) - {"namespaces", "principals"}
        if keys:
            return False
        if "namespaces" in src and not any(pattern_matches(p, self.namespace) for p in src["namespaces"]):
            return False
        if "principals" in src:
            if self.principal is None:
                return False
            if not any(pattern_matches(p, self.principal) for p in src["principals"]):
                return False
        return True


def rule_from_may(rule, source):
    peers = rule.get("from")
    if not peers:
        return True
    return any(source.source_may_match(p.get("source") or {}) for p in peers)


def rule_from_certain(rule, source):
    peers = rule.get("from")
    if not peers:
        return True
    return any(source.source_certainly_matches(p.get("source") or {}) for p in peers)


def operation_port_may(op, port):
    if "ports" in op and str(port) not in [str(p) for p in op["ports"]]:
        return False
    return str(port) not in [str(p) for p in op.get("notPorts") or []]


def applicable_policies(docs, wl):
    out = []
    for ap in by_kind(docs, "AuthorizationPolicy"):
        if namespace_of(ap) != wl.namespace:
            continue
        spec = ap.get("spec") or {}
        if spec.get("targetRef") or spec.get("targetRefs"):
            continue  # waypoints and gateways, not sidecars
        if not selector_matches(spec.get("selector") or {}, wl.labels):
            continue
        out.append(ap)
    return out


def leaks_outside_api(docs, wl, port, source):
    """Why `source` may reach a path outside /api/ on wl:port, or None."""
    policies = applicable_policies(docs, wl)
    for ap in policies:
        spec = ap.get("spec") or {}
        if spec.get("action", "ALLOW") != "DENY":
            continue
        for rule in spec.get("rules") or []:
            if rule.get("when") or not rule_from_certain(rule, source):
                continue
            ops = [t.get("operation") or {} for t in rule.get("to") or []] or [{}]
            for op in ops:
                if set(op) - {"ports", "notPaths"} or not operation_port_may(op, port):
                    continue
                if all(path_pattern_within_api(p) for p in op.get("notPaths") or []):
                    return None  # everything outside /api/ is denied
    allows = [ap for ap in policies if (ap.get("spec") or {}).get("action", "ALLOW") == "ALLOW"]
    if not allows:
        return "no ALLOW AuthorizationPolicy selects it: every path is allowed"
    for ap in allows:
        for i, rule in enumerate((ap.get("spec") or {}).get("rules") or []):
            if not rule_from_may(rule, source):
                continue
            ops = [t.get("operation") or {} for t in rule.get("to") or []] or [{}]
            for op in ops:
                if not operation_port_may(op, port):
                    continue
                paths = op.get("paths")
                if paths is None:
                    if "*" in (op.get("notPaths") or []):
                        continue
                    return f"AuthorizationPolicy {name_of(ap)} rules[{i}] allows it any path"
                outside = [p for p in paths if not path_pattern_within_api(p)]
                if outside:
                    return f"AuthorizationPolicy {name_of(ap)} rules[{i}] allows it {outside}"
    return None


def allowed_get(docs, wl, port, path, source):
    """Why `source` is not certainly allowed GET `path` on wl:port, or None."""
    policies = applicable_policies(docs, wl)
    for ap in policies:
        spec = ap.get("spec") or {}
        if spec.get("action", "ALLOW") != "DENY":
            continue
        for i, rule in enumerate(spec.get("rules") or []):
            if not rule_from_may(rule, source):
                continue
            for t in rule.get("to") or [{}]:
                op = t.get("operation") or {}
                if not operation_port_may(op, port):
                    continue
                if "methods" in op and "GET" not in op["methods"]:
                    continue
                if "paths" in op and not any(pattern_matches(p, path) for p in op["paths"]):
                    continue
                if any(pattern_matches(p, path) for p in op.get("notPaths") or []):
                    continue
                return f"AuthorizationPolicy {name_of(ap)} (DENY) rules[{i}] may deny it"
    allows = [ap for ap in policies if (ap.get("spec") or {}).get("action", "ALLOW") == "ALLOW"]
    if not allows:
        return None
    for ap in allows:
        for rule in (ap.get("spec") or {}).get("rules") or []:
            if rule.get("when") or not rule_from_certain(rule, source):
                continue
            for t in rule.get("to") or [{}]:
                op = t.get("operation") or {}
                if set(op) - {"ports", "methods", "paths", "notPaths", "notPorts", "notMethods"}:
                    continue
                if "ports" in op and str(port) not in [str(p) for p in op["ports"]]:
                    continue
                if str(port) in [str(p) for p in op.get("notPorts") or []]:
                    continue
                if "methods" in op and "GET" not in op["methods"]:
                    continue
                if "GET" in (op.get("notMethods") or []):
                    continue
                if "paths" in op and not any(pattern_matches(p, path) for p in op["paths"]):
                    continue
                if any(pattern_matches(p, path) for p in op.get("notPaths") or []):
                    continue
                return None
    return "no ALLOW rule of the AuthorizationPolicies selecting it certainly allows it"


# --- the checks ------------------------------------------------------------------


def gateway_workload(docs):
    return next((wl for wl in workloads(docs) if wl.name == "gateway"), None)


def gateway_toml(docs, wl):
    """The gateway's configuration file, parsed, from the ConfigMap its
    Deployment mounts (the one holding gateway.toml)."""
    volumes = wl.doc["spec"]["template"]["spec"].get("volumes") or []
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    for cm in by_kind(docs, "ConfigMap"):
        if name_of(cm) in names and "gateway.toml" in (cm.get("data") or {}):
            return tomllib.loads(cm["data"]["gateway.toml"])
    return None


def check_virtual_service(vs):
    """Failures of one VirtualService bound to an ingress gateway."""
    failures, notes = [], []
    spec = vs.get("spec") or {}
    where = f"VirtualService {name_of(vs)}"
    for kind in ("tcp", "tls"):
        if spec.get(kind):
            failures.append(f"{where}: {kind} routes pass every path through")
    for i, route in enumerate(spec.get("http") or []):
        label = f"{where} http[{i}]" + (f" ({route['name']})" if route.get("name") else "")
        if route.get("delegate"):
            failures.append(f"{label}: delegates to another VirtualService (not checked)")
            continue
        if not (route.get("route") or route.get("mirror") or route.get("mirrors")):
            continue  # redirect or direct response: reaches no workload
        matches = route.get("match")
        if not matches:
            failures.append(f"{label}: no match: every path (/metrics, /ready, /health...) is routed")
            continue
        bad = False
        for j, match in enumerate(matches):
            uri = match.get("uri")
            if not uri:
                failures.append(f"{label} match[{j}]: no uri: every path is routed")
                bad = True
            elif "regex" in uri:
                failures.append(f"{label} match[{j}]: uri regex {uri['regex']!r} (only prefix/exact under {API_PREFIX})")
                bad = True
            elif match.get("ignoreUriCase"):
                failures.append(f"{label} match[{j}]: ignoreUriCase")
                bad = True
            else:
                value = uri.get("prefix", uri.get("exact", ""))
                if not value.startswith(API_PREFIX):
                    kind = "prefix" if "prefix" in uri else "exact"
                    failures.append(f"{label} match[{j}]: uri {kind} {value!r} reaches paths outside {API_PREFIX}")
                    bad = True
        rewrite = route.get("rewrite") or {}
        if "uriRegexRewrite" in rewrite or (
            "uri" in rewrite and not rewrite["uri"].startswith(API_PREFIX)
        ):
            failures.append(f"{label}: rewrites the path outside {API_PREFIX}")
            bad = True
        if not bad:
            dests = ", ".join(
                f"{d['destination']['host']}:{d['destination'].get('port', {}).get('number', '?')}"
                for d in route.get("route") or []
            )
            prefixes = ", ".join(
                f"{'prefix' if 'prefix' in m['uri'] else 'exact'} {m['uri'].get('prefix', m['uri'].get('exact'))}"
                for m in matches
            )
            notes.append(f"public route {label}: {prefixes} -> {dests}")
    return failures, notes


def public_routes(docs):
    failures, notes = [], []
    ingress = Source(INGRESS_NAMESPACE)
    prometheus = Source(MONITORING_NAMESPACE, PROMETHEUS_PRINCIPAL)

    # 1. Public routes: VirtualServices bound to an ingress Gateway.
    public = 0
    for vs in by_kind(docs, "VirtualService"):
        gateways = (vs.get("spec") or {}).get("gateways") or ["mesh"]
        if all(g == "mesh" for g in gateways):
            continue
        public += 1
        f, n = check_virtual_service(vs)
        failures += f
        notes += n
    if not public:
        notes.append("no VirtualService bound to an ingress Gateway in the overlay")
    for gw in by_kind(docs, "Gateway"):
        for server in (gw.get("spec") or {}).get("servers") or []:
            protocol = (server.get("port") or {}).get("protocol", "").upper()
            mode = (server.get("tls") or {}).get("mode", "")
            if protocol in ("TCP", "TLS", "MONGO") or mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
                failures.append(f"Gateway {name_of(gw)}: server {protocol} {mode} passes every path through")

    # 2. Other public entries.
    for svc in by_kind(docs, "Service"):
        spec = svc.get("spec") or {}
        if spec.get("type") in ("LoadBalancer", "NodePort") or spec.get("externalIPs"):
            failures.append(
                f"Service {name_of(svc)}: type {spec.get('type')} / externalIPs is a public entry "
                f"around the ingress's /api/ route"
            )
    for ing in by_kind(docs, "Ingress"):
        failures.append(f"Ingress {name_of(ing)}: a public entry this check does not follow (use the Istio route)")

    # 3. What the ingress gateway may reach, whatever its routes.
    for wl in workloads(docs):
        for number, port_name in wl.ports:
            policies = admitted(docs, wl, number, INGRESS_NAMESPACE, INGRESS_POD_LABELS, False)
            if policies == []:
                continue
            via = "no NetworkPolicy isolates it" if policies is None else f"NetworkPolicy {', '.join(sorted(set(policies)))}"
            why = leaks_outside_api(docs, wl, number, ingress)
            if why:
                failures.append(
                    f"{wl.name}:{number} is reachable from the ingress gateway ({INGRESS_NAMESPACE}; {via}) "
                    f"on paths outside {API_PREFIX} (/metrics, /ready, /health): {why}"
                )
            else:
                notes.append(
                    f"{wl.name}:{number}: the ingress gateway may reach it ({via}), "
                    f"the AuthorizationPolicies limit it to {API_PREFIX}*"
                )

    # 4. The gateway forwards /api/ prefixes only, with their path unchanged.
    wl = gateway_workload(docs)
    if wl is None:
        failures.append("no gateway Deployment")
    else:
        config = gateway_toml(docs, wl)
        if config is None:
            failures.append("the gateway Deployment mounts no ConfigMap with gateway.toml")
        else:
            routes = config.get("routes") or []
            prefixes = [r.get("prefix", "") for r in routes] or GATEWAY_DEFAULT_PREFIXES
            for prefix in prefixes:
                if not (prefix + "/").startswith(API_PREFIX):
                    failures.append(f"gateway.toml: route prefix {prefix!r} forwards paths outside {API_PREFIX}")
            upstreams = [r.get("upstream", "") for r in routes]
            upstreams += [v for v in (config.get("upstreams") or {}).values() if isinstance(v, str)]
            for container in wl.containers:
                for env in container.get("env") or []:
                    if env.get("name") in GATEWAY_UPSTREAM_ENVS and "value" in env:
                        upstreams.append(env["value"])
            for url in upstreams:
                if urlsplit(url).path not in ("", "/"):
                    failures.append(f"gateway: upstream {url!r} has a path: forwarded paths leave {API_PREFIX}")
            notes.append(
                f"gateway forwards {', '.join(prefixes)}{' (default route)' if not routes else ''} "
                f"to path-less upstreams"
            )

    # 5. Prometheus still scrapes every ServiceMonitor endpoint.
    for sm in by_kind(docs, "ServiceMonitor"):
        selector = (sm.get("spec") or {}).get("selector") or {}
        for svc in by_kind(docs, "Service"):
            if namespace_of(svc) != namespace_of(sm) or not selector_matches(selector, svc.get("metadata", {}).get("labels", {})):
                continue
            for endpoint in sm["spec"].get("endpoints") or []:
                path = endpoint.get("path", "/metrics")
                targets = service_targets(docs, name_of(svc), endpoint.get("port", endpoint.get("targetPort")))
                if not targets:
                    failures.append(f"ServiceMonitor {name_of(sm)}: port {endpoint.get('port')} of Service {name_of(svc)} leads to no pod")
                for twl, number in targets:
                    policies = admitted(docs, twl, number, MONITORING_NAMESPACE, {}, True)
                    if policies == []:
                        failures.append(
                            f"ServiceMonitor {name_of(sm)}: no NetworkPolicy admits {MONITORING_NAMESPACE} to {twl.name}:{number}"
                        )
                        continue
                    why = allowed_get(docs, twl, number, path, prometheus)
                    if why:
                        failures.append(
                            f"ServiceMonitor {name_of(sm)}: Prometheus ({PROMETHEUS_PRINCIPAL}) may not GET "
                            f"{twl.name}:{number}{path}: {why}"
                        )
                    else:
                        notes.append(f"Prometheus scrapes {twl.name}:{number}{path} (NetworkPolicy and AuthorizationPolicy allow it)")
    return failures, notes


def queue_key(docs):
    failures, notes = [], []
    wl = gateway_workload(docs)
    if wl is None:
        return ["no gateway Deployment"], notes
    container = next((c for c in wl.containers if c.get("name") == "gateway"), None)
    if container is None:
        return ["the gateway Deployment has no container `gateway`"], notes
    envs = [e for e in container.get("env") or [] if e.get("name") == QUEUE_KEY_ENV]
    if not envs:
        failures.append(f"gateway: {QUEUE_KEY_ENV} is missing (the queue would be sealed with a key file beside it)")
    elif len(envs) > 1:
        failures.append(f"gateway: {QUEUE_KEY_ENV} is set {len(envs)} times")
    else:
        env = envs[0]
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if "value" in env:
            failures.append(f"gateway: {QUEUE_KEY_ENV} is a literal in the manifest, not a Secret")
        elif ref is None:
            failures.append(f"gateway: {QUEUE_KEY_ENV} does not come from a Secret (secretKeyRef)")
        elif ref.get("optional", False):
            failures.append(
                f"gateway: {QUEUE_KEY_ENV} comes from Secret {ref.get('name')} with optional: true "
                f"(without it the gateway creates a key file beside the queue)"
            )
        else:
            notes.append(f"gateway: {QUEUE_KEY_ENV} from Secret {ref.get('name')}, key {ref.get('key')}, required")
    config = gateway_toml(docs, wl)
    if config is None:
        failures.append("the gateway Deployment mounts no ConfigMap with gateway.toml")
    else:
        source = (config.get("degraded") or {}).get("queue_key_source", "file")
        if source != "env":
            failures.append(
                f'gateway.toml: [degraded] queue_key_source is "{source}", not "env" '
                f"(the gateway would start without {QUEUE_KEY_ENV} and write a key file)"
            )
        else:
            notes.append('gateway.toml: [degraded] queue_key_source = "env"')
    return failures, notes


def egress_admitted(docs, wl, namespace, labels, number):
    """NetworkPolicies that let `wl`'s pods open a connection to a pod of
    `namespace` with `labels` on port `number`; None if none isolates the
    pods for egress (everything is allowed)."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    isolating, admitting = False, []
    for np in by_kind(docs, "NetworkPolicy"):
        if namespace_of(np) != wl.namespace:
            continue
        spec = np.get("spec", {})
        if not selector_matches(spec.get("podSelector") or {}, wl.labels):
            continue
        if "Egress" not in (spec.get("policyTypes") or []):
            continue
        isolating = True
        for rule in spec.get("egress") or []:
            if not port_in(rule.get("ports"), number, None):
                continue
            peers = rule.get("to")
            if not peers:
                admitting.append(name_of(np))
                continue
            for peer in peers:
                if "ipBlock" in peer:
                    continue  # pod addresses: not relied upon
                ns_sel = peer.get("namespaceSelector")
                if ns_sel is None:
                    if namespace != wl.namespace:
                        continue
                elif not selector_matches(ns_sel, ns_labels):
                    continue
                if selector_matches(peer.get("podSelector") or {}, labels):
                    admitting.append(name_of(np))
    return admitting if isolating else None


def queue_backend(docs, overlay=None):
    failures, notes = [], []
    wl = gateway_workload(docs)
    if wl is None:
        return ["no gateway Deployment"], notes
    container = next((c for c in wl.containers if c.get("name") == "gateway"), None)
    config = gateway_toml(docs, wl)
    if container is None or config is None:
        return ["the gateway Deployment has no container `gateway` or no gateway.toml"], notes
    degraded = config.get("degraded") or {}
    backend = degraded.get("queue_backend", "redb")
    mounts = container.get("volumeMounts") or []
    volumes = {v["name"]: v for v in wl.doc["spec"]["template"]["spec"].get("volumes") or []}
    read_only_root = (container.get("securityContext") or {}).get("readOnlyRootFilesystem") is True
    if not read_only_root:
        failures.append("gateway: the root filesystem is not read-only")
    if overlay in JETSTREAM_OVERLAYS and backend != "jetstream":
        failures.append(
            f'gateway.toml: queue_backend is "{backend}" in {overlay}: its accepted writes would be lost '
            f"with a pod (the overlay must use the JetStream queue, components/jetstream-queue)"
        )
    if backend == "redb":
        path = degraded.get("queue_path", "gateway-queue.redb")
        mount = next(
            (m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/") and not m.get("readOnly")),
            None,
        )
        if mount is None:
            failures.append(f"gateway.toml: queue_path {path!r} is on no writable volume of the gateway container")
        else:
            kind = next((k for k in volumes.get(mount["name"], {}) if k != "name"), "?")
            notes.append(f"gateway: redb queue {path} on volume {mount['name']} ({kind}: lost with the pod)")
        return failures, notes
    if backend != "jetstream":
        return failures + [f'gateway.toml: unknown queue_backend "{backend}"'], notes
    js = degraded.get("jetstream") or {}
    urls = js.get("urls") or []
    if not urls or not all(urlsplit(u).scheme in ("nats", "tls") and urlsplit(u).hostname for u in urls):
        failures.append(f"gateway.toml: [degraded.jetstream] urls {urls!r}: NATS URLs (nats:// or tls://) needed")
    replicas = js.get("replicas", 3)
    if replicas not in (3, 5):
        failures.append(
            f"gateway.toml: [degraded.jetstream] replicas = {replicas}: a 202 must survive the loss of a NATS server (3 or 5)"
        )
    if "queue_path" in degraded:
        failures.append("gateway.toml: queue_path is set with the jetstream backend (unused: misleading)")
    writable = [m["mountPath"] for m in mounts if not m.get("readOnly")]
    if writable:
        failures.append(f"gateway: writable volumes {writable} with the jetstream backend: the pod must keep nothing of the queue")
    envs = [e for e in container.get("env") or [] if e.get("name") == NATS_TOKEN_ENV]
    ref = (envs[0].get("valueFrom") or {}).get("secretKeyRef") if len(envs) == 1 else None
    if len(envs) != 1 or "value" in envs[0] or ref is None or ref.get("optional", False):
        failures.append(f"gateway: {NATS_TOKEN_ENV} must come once from a required Secret (secretKeyRef, not optional)")
    policies = egress_admitted(docs, wl, NATS_NAMESPACE, NATS_POD_LABELS, NATS_CLIENT_PORT)
    if policies == []:
        failures.append(f"gateway: no NetworkPolicy lets it reach the NATS servers ({NATS_NAMESPACE}) on {NATS_CLIENT_PORT}")
    if not failures:
        notes.append(
            f"gateway: JetStream queue, R{replicas}, {', '.join(urls)}, no volume, read-only root, "
            f"{NATS_TOKEN_ENV} from Secret {ref.get('name')}, egress to NATS:{NATS_CLIENT_PORT} "
            f"({'no egress isolation' if policies is None else 'NetworkPolicy ' + ', '.join(sorted(set(policies)))})"
        )
    return failures, notes


def nats_workload():
    """The NATS servers of the Helm release `nats` (deploy/k8s/nats/values.yaml),
    as the chart labels them and names their ports."""
    return Workload({
        "kind": "StatefulSet",
        "metadata": {"name": "nats", "namespace": NATS_NAMESPACE},
        "spec": {"template": {
            "metadata": {"labels": dict(NATS_POD_LABELS, **{"app.kubernetes.io/component": "nats"})},
            "spec": {"containers": [{"name": "nats", "ports": [
                {"containerPort": NATS_CLIENT_PORT, "name": "nats"},
                {"containerPort": NATS_ROUTE_PORT, "name": "cluster"},
                {"containerPort": NATS_MONITOR_PORT, "name": "monitor"},
            ]}]},
        }},
    })


def istio_may_allow(docs, wl, port, source):
    """Whether the ALLOW AuthorizationPolicies selecting wl may let `source`
    connect to `port` (DENY policies are not credited)."""
    allows = [ap for ap in applicable_policies(docs, wl) if (ap.get("spec") or {}).get("action", "ALLOW") == "ALLOW"]
    if not allows:
        return True
    for ap in allows:
        for rule in (ap.get("spec") or {}).get("rules") or []:
            if not rule_from_may(rule, source):
                continue
            ops = [t.get("operation") or {} for t in rule.get("to") or []] or [{}]
            if any(operation_port_may(op, port) for op in ops):
                return True
    return False


def nats_access(docs):
    failures, notes = [], []
    wl = nats_workload()
    strict = any(
        namespace_of(pa) == NATS_NAMESPACE and ((pa.get("spec") or {}).get("mtls") or {}).get("mode") == "STRICT"
        and not (pa.get("spec") or {}).get("selector")
        for pa in by_kind(docs, "PeerAuthentication")
    )
    if not strict:
        failures.append(f"no namespace-wide STRICT PeerAuthentication in {NATS_NAMESPACE}: callers are not authenticated")
    # (who, namespace, labels, labels fully known, principal, ports it may reach)
    gateway_sa = GATEWAY_PRINCIPAL
    callers = [
        ("the gateway", PLATFORM_NAMESPACE, GATEWAY_LABELS, True, gateway_sa, {NATS_CLIENT_PORT}),
        ("another NATS server", NATS_NAMESPACE, wl.labels, True, NATS_PRINCIPAL, {NATS_ROUTE_PORT}),
        ("store-service", PLATFORM_NAMESPACE, {"app.kubernetes.io/name": "store-service"}, True,
         f"cluster.local/ns/{PLATFORM_NAMESPACE}/sa/store-service", set()),
        ("another pod of nats (nats-box)", NATS_NAMESPACE, {"app.kubernetes.io/name": "nats-box"}, True,
         f"cluster.local/ns/{NATS_NAMESPACE}/sa/nats-box", set()),
        ("any pod of namespace default", "default", {}, False, "cluster.local/ns/default/sa/default", set()),
        ("the ingress gateway", INGRESS_NAMESPACE, INGRESS_POD_LABELS, False, None, set()),
        ("a pod of store-platform with another account", PLATFORM_NAMESPACE, {"app.kubernetes.io/name": "store-migrate"},
         True, f"cluster.local/ns/{PLATFORM_NAMESPACE}/sa/default", set()),
        ("Prometheus", MONITORING_NAMESPACE, {}, False, PROMETHEUS_PRINCIPAL, set()),
    ]
    for who, namespace, labels, known, principal, expected in callers:
        source = Source(namespace, principal)
        for port in (NATS_CLIENT_PORT, NATS_ROUTE_PORT, NATS_MONITOR_PORT):
            policies = admitted(docs, wl, port, namespace, labels, known)
            network = policies is None or policies != []
            mesh = istio_may_allow(docs, wl, port, source)
            if port in expected:
                if not network:
                    failures.append(f"{who} may not reach NATS:{port}: no NetworkPolicy of {NATS_NAMESPACE} admits it")
                elif not mesh:
                    failures.append(f"{who} may not reach NATS:{port}: no AuthorizationPolicy rule allows {principal}")
                else:
                    notes.append(f"{who} reaches NATS:{port} (NetworkPolicy and AuthorizationPolicy)")
            else:
                # Each layer alone must refuse it.
                if network:
                    via = "no NetworkPolicy isolates it" if policies is None else f"NetworkPolicy {', '.join(sorted(set(policies)))}"
                    failures.append(f"{who} may reach NATS:{port} through the network ({via})")
                if mesh:
                    failures.append(f"{who} may connect to NATS:{port}: an AuthorizationPolicy of {NATS_NAMESPACE} may allow it")
    if not failures:
        notes.append(
            f"NATS: only the gateway reaches {NATS_CLIENT_PORT}, only NATS servers {NATS_ROUTE_PORT}, "
            f"nobody {NATS_MONITOR_PORT} (NetworkPolicies and AuthorizationPolicies, STRICT mTLS)"
        )
    return failures, notes


def nats_values(values):
    """The Helm values of the NATS release (k8s/nats/values.yaml): what the
    policies and the gateway's configuration rely on."""
    failures, notes = [], []

    def get(*path):
        node = values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    expect = [
        (("config", "cluster", "enabled"), True, "a NATS cluster"),
        (("config", "cluster", "replicas"), 3, "3 servers (R3 streams)"),
        (("config", "jetstream", "enabled"), True, "JetStream"),
        (("config", "jetstream", "fileStore", "enabled"), True, "file storage"),
        (("config", "jetstream", "fileStore", "pvc", "enabled"), True, "a PersistentVolumeClaim per server"),
        (("config", "cluster", "merge", "no_advertise"), True, "no pod addresses advertised to clients"),
        (("config", "merge", "authorization", "token"), "<< $NATS_TOKEN >>", "token authentication"),
        (("serviceAccount", "enabled"), True, "its own service account"),
        (("serviceAccount", "name"), NATS_PRINCIPAL.rsplit("/", 1)[1], "the account the AuthorizationPolicy names"),
        (("natsBox", "enabled"), False, "no client pod beside the servers"),
    ]
    for path, want, why in expect:
        got = get(*path)
        if got != want:
            failures.append(f"values.yaml: {'.'.join(path)} is {got!r}, not {want!r} ({why})")
    if not (get("container", "env", "NATS_TOKEN", "valueFrom", "secretKeyRef") or {}).get("name"):
        failures.append("values.yaml: container.env.NATS_TOKEN does not come from a Secret")
    if not failures:
        notes.append("values.yaml: 3 servers, JetStream on PVCs, token from a Secret, no_advertise, service account "
                     f"{get('serviceAccount', 'name')}, no nats-box")
    return failures, notes


# --- the self-test: each check fails on a broken copy ------------------------------


def _find(docs, kind, name):
    return next(d for d in docs if d.get("kind") == kind and name_of(d) == name)


def _gateway_env(docs):
    return gateway_workload(docs).containers[0]["env"]


def _queue_env(docs):
    return next(e for e in _gateway_env(docs) if e["name"] == QUEUE_KEY_ENV)


def _set_toml(docs, old, new):
    wl = gateway_workload(docs)
    volumes = wl.doc["spec"]["template"]["spec"]["volumes"]
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    for cm in by_kind(docs, "ConfigMap"):
        if name_of(cm) in names and "gateway.toml" in (cm.get("data") or {}):
            assert old in cm["data"]["gateway.toml"], old
            cm["data"]["gateway.toml"] = cm["data"]["gateway.toml"].replace(old, new)


def _ingress_rule(docs):
    return next(
        r for r in _find(docs, "AuthorizationPolicy", "gateway")["spec"]["rules"]
        if INGRESS_NAMESPACE in str(r.get("from"))
    )


def _http0(docs):
    return _find(docs, "VirtualService", "gateway")["spec"]["http"][0]


MUTATIONS = [
    # (what, which check, how)
    ("no AuthorizationPolicy on the gateway (the manifests before issue 13)", public_routes,
     lambda d: d.remove(_find(d, "AuthorizationPolicy", "gateway"))),
    ("the ingress rule allows every path", public_routes,
     lambda d: _ingress_rule(d)["to"][0]["operation"].pop("paths")),
    ("the ingress rule allows /metrics too", public_routes,
     lambda d: _ingress_rule(d)["to"][0]["operation"]["paths"].append("/metrics")),
    ("the ingress rule allows /api* (also /apix, /api)", public_routes,
     lambda d: _ingress_rule(d)["to"][0]["operation"].update(paths=["/api*"])),
    ("the route has no match (deploy/README.md step 6 before issue 13)", public_routes,
     lambda d: _http0(d).pop("match")),
    ("the route matches prefix /", public_routes,
     lambda d: _http0(d).update(match=[{"uri": {"prefix": "/"}}])),
    ("the route matches prefix /api (also /api-internal)", public_routes,
     lambda d: _http0(d).update(match=[{"uri": {"prefix": "/api"}}])),
    ("the route matches a regex", public_routes,
     lambda d: _http0(d).update(match=[{"uri": {"regex": "/api/.*"}}])),
    ("the route matches a header only", public_routes,
     lambda d: _http0(d).update(match=[{"headers": {"x-a": {"exact": "1"}}}])),
    ("the route rewrites /api/ to /", public_routes,
     lambda d: _http0(d).update(rewrite={"uri": "/"})),
    ("a second route without match", public_routes,
     lambda d: _find(d, "VirtualService", "gateway")["spec"]["http"].append(
         {"route": [{"destination": {"host": "store-service", "port": {"number": 3000}}}]})),
    ("the gateway Service is a LoadBalancer", public_routes,
     lambda d: _find(d, "Service", "gateway")["spec"].update(type="LoadBalancer")),
    ("store-service admits the ingress gateway and has no AuthorizationPolicy", public_routes,
     lambda d: _find(d, "NetworkPolicy", "store-service")["spec"]["ingress"][0]["from"].append(
         {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": INGRESS_NAMESPACE}}})
     or d.remove(_find(d, "AuthorizationPolicy", "store-service"))),
    ("a gateway route /metrics", public_routes,
     lambda d: _set_toml(d, "[degraded]", '[[routes]]\nprefix = "/metrics"\nupstream = "http://store-service:3000"\n'
                         'scopes = { GET = ["x"] }\n\n[degraded]')),
    ("STORE_SERVICE_URL with a path", public_routes,
     lambda d: next(e for e in _gateway_env(d) if e["name"] == "STORE_SERVICE_URL").update(
         value="http://store-service:3000/internal")),
    ("Prometheus may not GET the gateway's /metrics", public_routes,
     lambda d: _find(d, "AuthorizationPolicy", "gateway")["spec"]["rules"].remove(
         next(r for r in _find(d, "AuthorizationPolicy", "gateway")["spec"]["rules"] if "prometheus" in str(r)))),
    ("the NetworkPolicy no longer admits Prometheus to the gateway", public_routes,
     lambda d: _find(d, "NetworkPolicy", "gateway")["spec"]["ingress"][0]["from"].pop()),
    ("GATEWAY_QUEUE_KEY optional (the manifests before issue 13)", queue_key,
     lambda d: _queue_env(d)["valueFrom"]["secretKeyRef"].update(optional=True)),
    ("GATEWAY_QUEUE_KEY missing", queue_key,
     lambda d: _gateway_env(d).remove(_queue_env(d))),
    ("GATEWAY_QUEUE_KEY a literal", queue_key,
     lambda d: _queue_env(d).update(value="AAAA") or _queue_env(d).pop("valueFrom")),
    ("GATEWAY_QUEUE_KEY from a ConfigMap", queue_key,
     lambda d: _queue_env(d).update(valueFrom={"configMapKeyRef": {"name": "x", "key": "k"}})),
    ('queue_key_source = "file"', queue_key,
     lambda d: _set_toml(d, 'queue_key_source = "env"', 'queue_key_source = "file"')),
    ("queue_key_source unset", queue_key,
     lambda d: _set_toml(d, 'queue_key_source = "env"', "")),
]


def _uses_jetstream(docs):
    config = gateway_toml(docs, gateway_workload(docs)) or {}
    return (config.get("degraded") or {}).get("queue_backend", "redb") == "jetstream"


def _nats_token_env(docs):
    return next(e for e in _gateway_env(docs) if e["name"] == NATS_TOKEN_ENV)


def _gateway_container(docs):
    return gateway_workload(docs).containers[0]


def _add_queue_volume(docs):
    spec = gateway_workload(docs).doc["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "queue", "emptyDir": {"sizeLimit": "1Gi"}})
    spec["containers"][0]["volumeMounts"].append({"name": "queue", "mountPath": "/var/lib/gateway"})


# Mutations of the queue backend, for the overlays on that backend:
# (what, applies to overlays on "jetstream" or "redb", how).
QUEUE_MUTATIONS = [
    ("the JetStream overlay back on redb (writes lost with a pod)", "jetstream",
     lambda d: _set_toml(d, 'queue_backend = "jetstream"', 'queue_backend = "redb"\nqueue_path = "/var/lib/gateway/queue.redb"')
     or _add_queue_volume(d)),
    ("JetStream with 1 replica", "jetstream",
     lambda d: _set_toml(d, "replicas = 3", "replicas = 1")),
    ("JetStream without URLs", "jetstream",
     lambda d: _set_toml(d, 'urls = ["nats://nats.nats.svc.cluster.local:4222"]', "urls = []")),
    ("an emptyDir queue volume left beside JetStream", "jetstream", _add_queue_volume),
    ("GATEWAY_NATS_TOKEN a literal", "jetstream",
     lambda d: _nats_token_env(d).update(value="t") or _nats_token_env(d).pop("valueFrom")),
    ("GATEWAY_NATS_TOKEN optional", "jetstream",
     lambda d: _nats_token_env(d)["valueFrom"]["secretKeyRef"].update(optional=True)),
    ("GATEWAY_NATS_TOKEN missing", "jetstream",
     lambda d: _gateway_env(d).remove(_nats_token_env(d))),
    ("no NetworkPolicy lets the gateway reach NATS", "jetstream",
     lambda d: d.remove(_find(d, "NetworkPolicy", "gateway-to-nats"))),
    ("the root filesystem writable", "jetstream",
     lambda d: _gateway_container(d)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("the redb queue on no volume (read-only root)", "redb",
     lambda d: _gateway_container(d).update(
         volumeMounts=[m for m in _gateway_container(d)["volumeMounts"] if m["mountPath"] != "/var/lib/gateway"])),
]


def _nats_policy(docs):
    return _find(docs, "NetworkPolicy", "nats")


def _nats_authz(docs):
    return _find(docs, "AuthorizationPolicy", "nats")


NATS_MUTATIONS = [
    ("no NetworkPolicy in nats", lambda d: d.remove(_nats_policy(d)) or d.remove(_find(d, "NetworkPolicy", "default-deny"))),
    ("the client port admits every pod of store-platform", lambda d: _nats_policy(d)["spec"]["ingress"][0]["from"][0].pop("podSelector")),
    ("the client port admits every namespace", lambda d: _nats_policy(d)["spec"]["ingress"][0].update(
        {"from": [{"namespaceSelector": {}}]})),
    ("the client port admits anyone (no from)", lambda d: _nats_policy(d)["spec"]["ingress"][0].pop("from")),
    ("the route port admits anyone", lambda d: _nats_policy(d)["spec"]["ingress"][1].pop("from")),
    ("the monitoring port admitted from monitoring", lambda d: _nats_policy(d)["spec"]["ingress"].append(
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}],
         "ports": [{"protocol": "TCP", "port": NATS_MONITOR_PORT}]})),
    ("no AuthorizationPolicy on NATS", lambda d: d.remove(_nats_authz(d))),
    ("the client rule allows any principal", lambda d: _nats_authz(d)["spec"]["rules"][0].pop("from")),
    ("the client rule allows every account of store-platform", lambda d: _nats_authz(d)["spec"]["rules"][0].update(
        {"from": [{"source": {"namespaces": [PLATFORM_NAMESPACE]}}]})),
    ("the route rule allows any port", lambda d: _nats_authz(d)["spec"]["rules"][1].pop("to")),
    ("mTLS PERMISSIVE in nats", lambda d: _find(d, "PeerAuthentication", "default")["spec"]["mtls"].update(mode="PERMISSIVE")),
    ("the gateway no longer admitted on 4222", lambda d: _nats_policy(d)["spec"]["ingress"].pop(0)),
]


def nats_self_test(docs):
    """Every NATS mutation must be caught. Returns the number of problems."""
    problems = 0
    failures, _ = nats_access(docs)
    if failures:
        print(f"SELF-TEST the unmutated nats manifests fail: {failures}")
        problems += 1
    for what, mutate in NATS_MUTATIONS:
        broken = copy.deepcopy(docs)
        mutate(broken)
        failures, _ = nats_access(broken)
        if failures:
            print(f"self-test: caught: {what}: {failures[0]}")
        else:
            print(f"SELF-TEST MISSED: {what}")
            problems += 1
    return problems


def self_test(docs, overlay=None):
    """Every mutation must be caught; the unmutated documents must pass.
    Returns (the number of problems, the number of broken copies)."""
    problems = 0
    backend_check = lambda d: queue_backend(d, overlay)
    backend_check.__name__ = "queue_backend"
    for check in (public_routes, queue_key, backend_check):
        failures, _ = check(docs)
        if failures:
            print(f"SELF-TEST the unmutated overlay fails {check.__name__}: {failures}")
            problems += 1
    backend = "jetstream" if _uses_jetstream(docs) else "redb"
    mutations = list(MUTATIONS) + [(w, backend_check, m) for w, b, m in QUEUE_MUTATIONS if b == backend]
    for what, check, mutate in mutations:
        broken = copy.deepcopy(docs)
        mutate(broken)
        failures, _ = check(broken)
        if failures:
            print(f"self-test: caught: {what}: {failures[0]}")
        else:
            print(f"SELF-TEST MISSED: {what}")
            problems += 1
    return problems, len(mutations)
