"""deploy/check's Python part: validates rendered overlays and extracts the
metric names of the alert rules and the dashboard.

  validate.py render-check OUT_DIR KUBE_VERSION... -- OVERLAY...
      validates every rendered overlay (OUT_DIR/<overlay>.yaml): built-in
      kinds with kubernetes-validate (strict), custom resources with the
      CRD schemas (tools/validate-crds.mjs), and fails on any kind that is
      neither built in, nor has a schema, nor is listed as unchecked.
  validate.py front-door OUT_DIR [--nats NAME] [--base-toml FILE] -- OVERLAY...
      on every rendered overlay: only `/api/` is public (the public routes,
      what the ingress gateway may reach, the gateway's own routes) while
      Prometheus still scrapes /metrics; the gateway's write queue key is a
      required Secret and gateway.toml asks for it; the queue backend
      (prod on JetStream: no volume, NATS token from a Secret, egress to
      NATS); every overlay's gateway.toml equals FILE outside [degraded];
      on OUT_DIR/NAME.yaml (deploy/k8s/nats) only the gateways reach the
      NATS client port (tools/front_door.py). When they pass, broken copies
      of each must each fail (self-test).
  validate.py metrics RULES_YAML DASHBOARD_JSON METRICS_TXT [--update]
      extracts every metric name used by the PrometheusRule expressions and
      the dashboard queries; fails if METRICS_TXT differs (--update
      rewrites it).
"""

import json
import os
import re
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

# Custom resources whose CRD schema no reachable registry package ships:
# checked by nothing but kubectl's rendering (deploy/README.md says so).
UNCHECKED = {("postgresql.cnpg.io/v1", "Cluster")}
# Custom resources validated by tools/validate-crds.mjs.
CRD_SCHEMAS = {
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "Gateway"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def is_builtin(api_version):
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group == "" or group.endswith(".k8s.io") or "." not in group


def render_check(out_dir, versions, overlays):
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError, SchemaNotFoundError

    failures = 0
    custom = []
    seen_unchecked = set()
    for overlay in overlays:
        path = os.path.join(out_dir, overlay + ".yaml")
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        counts = {"builtin": 0, "crd": 0, "unchecked": 0}
        for doc in docs:
            key = (doc.get("apiVersion", ""), doc.get("kind", ""))
            name = f"{overlay}: {key[1]}/{doc.get('metadata', {}).get('name')}"
            if key in CRD_SCHEMAS:
                custom.append({"source": overlay, "object": doc})
                counts["crd"] += 1
            elif key in UNCHECKED:
                seen_unchecked.add(key)
                counts["unchecked"] += 1
            elif is_builtin(key[0]):
                counts["builtin"] += 1
                for version in versions:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except ValidationError as error:
                        failures += 1
                        print(f"FAIL {name} (Kubernetes {version}): {error.message} at {'/'.join(map(str, error.path))}")
                    except SchemaNotFoundError as error:
                        failures += 1
                        print(f"FAIL {name} (Kubernetes {version}): no schema: {error}")
            else:
                failures += 1
                print(f"FAIL {name}: {key[0]} {key[1]} is neither built in, nor has a CRD schema, nor is listed as unchecked")
        print(
            f"{overlay}: {len(docs)} objects: {counts['builtin']} built-in validated against "
            f"Kubernetes {', '.join(versions)} (strict), {counts['crd']} custom resources against "
            f"their CRD schemas, {counts['unchecked']} unchecked "
            f"({', '.join(sorted(k for _, k in UNCHECKED))})"
        )
    result = subprocess.run(
        ["node", os.path.join(HERE, "validate-crds.mjs")],
        input=json.dumps(custom),
        text=True,
        capture_output=True,
    )
    for line in result.stdout.splitlines():
        if not line.startswith("ok "):
            print(line)
    if result.returncode != 0:
        print(result.stderr, end="")
        failures += 1
    else:
        print(f"custom resources: {len(custom)} valid against their CRD schemas")
    return failures


# PromQL: words that are not metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "and", "or", "unless", "inf", "nan",
}
# Series Prometheus makes itself, not the services.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr):
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"\{[^}]*\}", "{}", s)
    s = re.sub(r"\[[^\]]*\]", "[]", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = m.group(0)
        if s[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if token.lower() in KEYWORDS or token in SYNTHETIC:
            continue
        names.add(token)
    return names


def used_metrics(rules_path, dashboard_path):
    used = {}

    def add(names, where):
        for name in names:
            used.setdefault(name, []).append(where)

    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            where = "alert " + rule.get("alert", rule.get("record", "?"))
            add(metric_names(rule["expr"]), where)
    with open(dashboard_path) as f:
        dashboard = json.load(f)

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                add(metric_names(target["expr"]), "panel " + repr(panel.get("title", "?")))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            m = re.match(r"\s*label_values\(\s*([^,)]+)", query)
            expr = m.group(1) if m else query
            add(metric_names(expr), "variable $" + variable["name"])
    return used


def metrics(rules_path, dashboard_path, out_path, update):
    used = used_metrics(rules_path, dashboard_path)
    lines = [
        "# Every metric name used by deploy/k8s/base/monitoring/prometheusrule.yaml",
        "# and dashboards/store-platform.json, with where it is used. Written by",
        "# `deploy/check --update`, checked by deploy/check; the integration test",
        "# bins/xtask/tests/deploy_metrics.rs asserts that the running services",
        "# export each one.",
    ]
    lines += [f"{name}\t{'; '.join(sorted(set(where)))}" for name, where in sorted(used.items())]
    text = "\n".join(lines) + "\n"
    current = open(out_path).read() if os.path.exists(out_path) else ""
    if update:
        with open(out_path, "w") as f:
            f.write(text)
        print(f"{out_path}: {len(used)} metric names written")
        return 0
    if current != text:
        print(f"FAIL {out_path} is out of date with the rules and the dashboard: run deploy/check --update")
        return 1
    print(f"metrics: {len(used)} names used by the rules and the dashboard, as listed in {os.path.basename(out_path)}")
    return 0


def front_door(out_dir, overlays, nats=None, base_toml=None):
    import front_door as fd

    failures = 0
    docs_of = {}
    for overlay in overlays:
        with open(os.path.join(out_dir, overlay + ".yaml")) as f:
            docs_of[overlay] = [d for d in yaml.safe_load_all(f) if d]
        checks = (fd.public_routes, fd.queue_key, lambda docs, o=overlay: fd.queue_backend(docs, o))
        for check in checks:
            bad, notes = check(docs_of[overlay])
            for note in notes:
                print(f"{overlay}: ok   {note}")
            for line in bad:
                print(f"{overlay}: FAIL {line}")
            failures += len(bad)
    # gateway.toml: one file per backend (the base's, components/jetstream-queue's);
    # outside [degraded] every overlay's must equal the base's.
    if base_toml:
        import tomllib

        with open(base_toml, "rb") as f:
            base = tomllib.load(f)
        base.pop("degraded", None)
        for overlay in overlays:
            wl = fd.gateway_workload(docs_of[overlay])
            config = fd.gateway_toml(docs_of[overlay], wl) if wl else None
            if config is None:
                continue
            config = dict(config)
            config.pop("degraded", None)
            if config != base:
                keys = sorted(k for k in set(config) | set(base) if config.get(k) != base.get(k))
                print(f"{overlay}: FAIL gateway.toml differs from {os.path.basename(base_toml)} outside [degraded]: {keys}")
                failures += 1
            else:
                print(f"{overlay}: ok   gateway.toml equals the base's outside [degraded]")
    nats_docs = None
    if nats:
        with open(os.path.join(out_dir, nats + ".yaml")) as f:
            nats_docs = [d for d in yaml.safe_load_all(f) if d]
        values_path = os.path.join(HERE, "..", "k8s", nats, "values.yaml")
        with open(values_path) as f:
            values = yaml.safe_load(f)
        for bad, notes in (fd.nats_access(nats_docs), fd.nats_values(values)):
            for note in notes:
                print(f"{nats}: ok   {note}")
            for line in bad:
                print(f"{nats}: FAIL {line}")
            failures += len(bad)
    if failures:
        print(f"front door: {failures} failures (self-test skipped)")
        return failures
    import contextlib
    import io

    for i, overlay in enumerate(overlays):
        if i == 0:
            problems, count = fd.self_test(docs_of[overlay], overlay)
        else:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                problems, count = fd.self_test(docs_of[overlay], overlay)
            print("".join(l + "\n" for l in out.getvalue().splitlines() if not l.startswith("self-test: caught")), end="")
        print(f"self-test {overlay}: {count} broken copies, {count - problems} caught")
        failures += problems
    if nats_docs is not None:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            problems = fd.nats_self_test(nats_docs)
        print("".join(l + "\n" for l in out.getvalue().splitlines() if not l.startswith("self-test: caught")), end="")
        print(f"self-test {nats}: {len(fd.NATS_MUTATIONS)} broken copies, {len(fd.NATS_MUTATIONS) - problems} caught")
        failures += problems
    return failures


def main(argv):
    if argv[0] == "front-door":
        split = argv.index("--")
        options = dict(zip(argv[2:split:2], argv[3:split:2]))
        return 1 if front_door(argv[1], argv[split + 1:], options.get("--nats"), options.get("--base-toml")) else 0
    if argv[0] == "render-check":
        split = argv.index("--")
        out_dir, versions, overlays = argv[1], argv[2:split], argv[split + 1:]
        return 1 if render_check(out_dir, versions, overlays) else 0
    if argv[0] == "metrics":
        return metrics(argv[1], argv[2], argv[3], "--update" in argv[4:])
    if argv[0] == "dashboard":
        with open(argv[1]) as f:
            dashboard = json.load(f)
        assert dashboard.get("panels"), "the dashboard has no panels"
        print(f"dashboard: {argv[1]} parses ({len(dashboard['panels'])} panels)")
        return 0
    raise SystemExit(f"unknown command {argv[0]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
