// Validates custom resources against their CRD schemas, as compiled into
// the @kubernetes-models packages of the npm registry (Istio and the
// Prometheus Operator; versions pinned in deploy/check). Reads a JSON
// array of objects on stdin; prints one line per object; exits 1 if any
// is invalid and 2 if one has no known schema.
//
// The schemas check types, enums, required fields and formats; like the
// API server with these CRDs, they do not reject unknown fields.
const MODELS = {
  "security.istio.io/v1": {
    PeerAuthentication: "@kubernetes-models/istio/security.istio.io/v1/PeerAuthentication",
    AuthorizationPolicy: "@kubernetes-models/istio/security.istio.io/v1/AuthorizationPolicy",
  },
  "networking.istio.io/v1": {
    DestinationRule: "@kubernetes-models/istio/networking.istio.io/v1/DestinationRule",
    VirtualService: "@kubernetes-models/istio/networking.istio.io/v1/VirtualService",
    Gateway: "@kubernetes-models/istio/networking.istio.io/v1/Gateway",
  },
  "monitoring.coreos.com/v1": {
    ServiceMonitor: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
    PrometheusRule: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
  },
};

import { join } from "node:path";
import { pathToFileURL } from "node:url";

// The packages are installed under DEPLOY_NPM_DIR (deploy/check does it).
const root = join(process.env.DEPLOY_NPM_DIR ?? ".", "node_modules");

let input = "";
for await (const chunk of process.stdin) input += chunk;
const objects = JSON.parse(input);
let status = 0;
for (const { source, object } of objects) {
  const name = `${source}: ${object.kind}/${object.metadata?.name}`;
  const module = MODELS[object.apiVersion]?.[object.kind];
  if (!module) {
    console.log(`NO SCHEMA ${name} (${object.apiVersion})`);
    status = Math.max(status, 2);
    continue;
  }
  const Model = (await import(pathToFileURL(join(root, `${module}.js`)).href))[object.kind];
  try {
    new Model(object).validate();
    console.log(`ok   ${name}`);
  } catch (error) {
    console.log(`FAIL ${name}: ${error.message}`);
    status = Math.max(status, 1);
  }
}
process.exit(status);
