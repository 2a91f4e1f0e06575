// Offline checks of deploy/k8s: every overlay rendered with a real kustomize, every rendered
// object validated against the Kubernetes API schemas (and the Prometheus Operator's CRD
// schemas), then asserts over the rendered objects for the settings deploy/README.md
// promises. Run by scripts/test-deploy after `npm ci` here.
//
// Schemas: kubernetes-models (generated from the Kubernetes OpenAPI spec, v1.3x) and
// @kubernetes-models/prometheus-operator, versions pinned in package-lock.json. Two passes:
//   1. the models' own validate(): types, formats, enums, required fields (ajv, compiled
//      from the OpenAPI schemas);
//   2. unknown fields: the OpenAPI schemas do not forbid extra properties, so a typo such as
//      `readinesProbe` would pass (1) and be silently dropped by the API server. Every
//      object is type-checked by the TypeScript compiler against the same package's
//      declarations, whose excess-property check rejects any field the schema lacks.
// A self-test at the end mutates rendered objects and requires each check to catch it.
//
// Usage: node check-manifests.mjs   (KUSTOMIZE="kustomize build" to use a standalone
// kustomize; default `kubectl kustomize`). Prints one line per check and a summary line.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { parser as promqlParser } from "@prometheus-io/lezer-promql";
import ts from "typescript";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "..", "..");
const K8S = path.join(REPO, "deploy", "k8s");
const OVERLAYS = fs.readdirSync(path.join(K8S, "overlays")).sort();

// Flags the contract (shared/DESIGN.md) names that may not be merged into service/config.c
// yet; a note is printed for each one missing. Every other PGW_* must be in config.c.
const PENDING_FLAGS = new Set([
  "redis_password_file", "redis_ca_file", "redis_cert", "redis_key", "redis_lease_ms",
  "upstream_max_in_flight", "upstream_max_queued", "upstream_max_connections",
]);
// Metrics being added alongside (the "shed load" alert); likewise noted while absent.
const PENDING_METRICS = new Set(["pgw_rejected_total"]);
const AWS_ENV = new Set([
  "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
  "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
  "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
  "AWS_EC2_METADATA_DISABLED", "AWS_ENDPOINT_URL_PERSONALIZE", "AWS_ENDPOINT_URL_STS",
  "AWS_ENDPOINT_URL",
]);
// Secrets the overlays reference; deploy/README.md tells how to create each.
const DOCUMENTED_SECRETS = new Set(["personalize-gateway-redis", "personalize-gateway-tls"]);
const GATEWAY = "personalize-gateway";

// --- rendering -------------------------------------------------------------------------------

function render(dir) {
  const cmd = (process.env.KUSTOMIZE || "kubectl kustomize").split(/\s+/);
  const out = execFileSync(cmd[0], [...cmd.slice(1), dir], { encoding: "utf8", maxBuffer: 1 << 26 });
  const docs = YAML.parseAllDocuments(out, { uniqueKeys: true, strict: true });
  const objs = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${dir}: YAML: ${d.errors[0].message}`);
    const o = d.toJS();
    if (o !== null) objs.push(o);
  }
  return objs;
}

// --- pass 1: the models' schema validation -------------------------------------------------

function modelPath(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/"))
    return { pkg: "@kubernetes-models/prometheus-operator", sub: `${apiVersion}/${kind}` };
  return { pkg: "kubernetes-models", sub: `${apiVersion}/${kind}` };
}

async function schemaErrors(objs) {
  const errors = [];
  for (const o of objs) {
    const id = `${o.kind}/${o.metadata?.name}`;
    const { pkg, sub } = modelPath(o.apiVersion, o.kind);
    let mod;
    try {
      mod = await import(`${pkg}/${sub}`);
    } catch {
      errors.push(`${id}: no schema for apiVersion ${o.apiVersion} kind ${o.kind}`);
      continue;
    }
    try {
      new mod[o.kind](structuredClone(o)).validate();
    } catch (e) {
      const detail = (e.errors || []).map((x) => `${x.instancePath} ${x.message}`).join("; ");
      errors.push(`${id}: ${detail || e.message}`);
    }
  }
  return errors;
}

// --- pass 2: unknown fields, by the TypeScript compiler's excess-property check ------------

function strictErrors(objs) {
  const dir = fs.mkdtempSync(path.join(HERE, ".strict-"));
  try {
    const lines = [];
    const owner = []; // line index -> object id
    objs.forEach((o, i) => {
      const { pkg, sub } = modelPath(o.apiVersion, o.kind);
      const id = `${o.kind}/${o.metadata?.name}`;
      const body = JSON.stringify(o, null, 1).split("\n");
      lines.push(`import type { I${o.kind} as T${i} } from "${pkg}/${sub}";`);
      owner.push(id);
      lines.push(`export const o${i}: T${i} = ${body[0]}`);
      owner.push(id);
      for (const l of body.slice(1)) {
        lines.push(l);
        owner.push(id);
      }
      lines[lines.length - 1] += ";";
    });
    const file = path.join(dir, "objects.mts");
    fs.writeFileSync(file, lines.join("\n") + "\n");
    const program = ts.createProgram([file], {
      strict: true, noEmit: true, skipLibCheck: true, types: [],
      module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
    });
    return ts.getPreEmitDiagnostics(program).map((d) => {
      const msg = ts.flattenDiagnosticMessageText(d.messageText, " ");
      if (!d.file) return msg;
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      return `${owner[line] ?? "?"}: ${msg.replace(/ in type '.*$/, "")}`;
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// --- what the gateway understands ----------------------------------------------------------

function gatewayFlags() {
  const src = fs.readFileSync(path.join(REPO, "service", "config.c"), "utf8");
  return new Set([...src.matchAll(/\b(?:STR|INT)_OPT\(\s*([a-z0-9_]+)\s*,/g)].map((m) => m[1]));
}

function gatewayMetrics() {
  const src = fs.readFileSync(path.join(REPO, "service", "metrics.c"), "utf8");
  const names = new Set();
  for (const m of src.matchAll(/"(pgw_[a-z0-9_]+)/g)) {
    names.add(m[1]);
    for (const s of ["_bucket", "_sum", "_count"]) names.add(m[1] + s);
  }
  return names;
}

const notes = new Set();

// --- asserts over the rendered objects -----------------------------------------------------

function byKind(objs, kind) {
  return objs.filter((o) => o.kind === kind);
}

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels?.[k] === v);
}

function securityErrors(objs, overlay, flags, metrics) {
  const errs = [];
  const check = (ok, msg) => { if (!ok) errs.push(msg); };

  for (const o of objs) {
    const id = `${o.kind}/${o.metadata?.name}`;
    check(o.kind !== "Secret", `${id}: a Secret in the rendered output (secrets are created outside git)`);
    if (o.kind === "Namespace")
      check(o.metadata?.labels?.["pod-security.kubernetes.io/enforce"] === "restricted",
        `${id}: not labelled for the restricted Pod Security Standard`);
  }
  check(byKind(objs, "Namespace").length === 1, `${overlay}: expected its own Namespace`);

  // Every workload: the restricted profile, resources, no host access.
  for (const d of byKind(objs, "Deployment")) {
    const id = `Deployment/${d.metadata.name}`;
    const pod = d.spec.template.spec;
    const psc = pod.securityContext || {};
    check(psc.runAsNonRoot === true, `${id}: pod runAsNonRoot is not true`);
    check(psc.seccompProfile?.type === "RuntimeDefault", `${id}: pod seccomp is not RuntimeDefault`);
    check(!pod.hostNetwork && !pod.hostPID && !pod.hostIPC, `${id}: uses host namespaces`);
    check(pod.automountServiceAccountToken === false, `${id}: mounts a Kubernetes API token`);
    check(!(pod.volumes || []).some((v) => v.hostPath), `${id}: hostPath volume`);
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
      const cid = `${id} container ${c.name}`;
      const sc = c.securityContext || {};
      check(sc.readOnlyRootFilesystem === true, `${cid}: readOnlyRootFilesystem is not true`);
      check(sc.allowPrivilegeEscalation === false, `${cid}: allowPrivilegeEscalation is not false`);
      check(sc.privileged !== true, `${cid}: privileged`);
      check((sc.capabilities?.drop || []).includes("ALL"), `${cid}: capabilities do not drop ALL`);
      check(!(sc.capabilities?.add || []).length, `${cid}: adds capabilities`);
      check(sc.runAsNonRoot !== false && (sc.runAsNonRoot === true || psc.runAsNonRoot === true),
        `${cid}: may run as root`);
      check(sc.runAsUser !== 0 && psc.runAsUser !== 0, `${cid}: runs as uid 0`);
      for (const r of ["cpu", "memory"]) {
        check(c.resources?.requests?.[r], `${cid}: no ${r} request`);
        check(c.resources?.limits?.[r], `${cid}: no ${r} limit`);
      }
      for (const m of c.volumeMounts || []) {
        const v = (pod.volumes || []).find((x) => x.name === m.name);
        if (v?.secret || v?.configMap)
          check(m.readOnly === true, `${cid}: ${m.name} (Secret/ConfigMap) mounted writable`);
      }
      for (const e of c.env || []) {
        if (/PASSWORD|SECRET|TOKEN|_KEY$|_URL$/.test(e.name) && !e.name.endsWith("_FILE"))
          check(e.value === undefined, `${cid}: ${e.name} set inline (must come from a Secret)`);
        const ref = e.valueFrom?.secretKeyRef?.name;
        if (ref) check(DOCUMENTED_SECRETS.has(ref), `${cid}: undocumented Secret ${ref}`);
      }
    }
    for (const v of pod.volumes || [])
      if (v.secret) check(DOCUMENTED_SECRETS.has(v.secret.secretName), `${id}: undocumented Secret ${v.secret.secretName}`);
  }

  // The gateway itself.
  const gw = byKind(objs, "Deployment").find((d) => d.metadata.name === GATEWAY);
  check(gw, `${overlay}: no ${GATEWAY} Deployment`);
  if (!gw) return errs;
  const pod = gw.spec.template.spec;
  const podLabels = gw.spec.template.metadata.labels;
  check(matches(gw.spec.selector.matchLabels, podLabels), "Deployment selector does not match its pods");
  const c = pod.containers.find((x) => x.name === "gateway");
  check(c, "no gateway container");
  if (!c) return errs;
  check(/(^|\/)personalize-gateway(:[\w.-]+|@sha256:[0-9a-f]{64})$/.test(c.image), `gateway image ${c.image}`);
  check(pod.serviceAccountName === GATEWAY, "gateway does not use its ServiceAccount");

  // Its configuration: a ConfigMap of PGW_* / AWS_* keys the gateway knows.
  const cmRef = (c.envFrom || []).map((e) => e.configMapRef?.name).filter(Boolean);
  check(cmRef.length === 1, "gateway config is not from exactly one ConfigMap");
  const cm = byKind(objs, "ConfigMap").find((x) => x.metadata.name === cmRef[0]);
  check(cm, `ConfigMap ${cmRef[0]} not rendered`);
  const config = { ...(cm?.data || {}) };
  for (const e of c.env || []) config[e.name] = e.value ?? "<from secret>";
  for (const k of Object.keys(config)) {
    if (k.startsWith("AWS_")) {
      check(AWS_ENV.has(k), `config key ${k} is not an AWS SDK variable the gateway reads`);
      continue;
    }
    check(k.startsWith("PGW_"), `config key ${k} is neither PGW_* nor AWS_*`);
    const flag = k.slice(4).toLowerCase();
    if (flags.has(flag)) continue;
    if (PENDING_FLAGS.has(flag)) notes.add(`--${flag.replaceAll("_", "-")} (${k}) is in the contract but not yet in service/config.c`);
    else errs.push(`config key ${k}: no --${flag.replaceAll("_", "-")} in service/config.c`);
  }
  for (const [k, v] of Object.entries(cm?.data || {})) {
    check(!/:\/\/[^/@]*:[^/@]*@/.test(v), `ConfigMap key ${k} holds a URL with a password (use a Secret)`);
    check(!/PASSWORD|SECRET|TOKEN$/.test(k) || k.endsWith("_FILE"), `ConfigMap key ${k} looks like a secret`);
  }
  check(config.AWS_EC2_METADATA_DISABLED === "true", "IMDS not disabled (credentials must come from IRSA/Pod Identity)");
  // Files named in the config are inside read-only mounts of this container.
  for (const [k, v] of Object.entries(config)) {
    if (!/_(FILE|CERT|KEY|CA)$/.test(k) || !v.startsWith("/")) continue;
    const m = (c.volumeMounts || []).find((x) => v.startsWith(x.mountPath.replace(/\/?$/, "/")));
    check(m && m.readOnly === true, `${k}=${v} is not inside a read-only volume mount`);
  }

  // Probes: native gRPC readiness unless the gRPC port requires TLS (kubelet's gRPC probe is
  // plaintext only), then /readyz; liveness on /healthz.
  const tls = Boolean(config.PGW_TLS_CERT);
  const rp = c.readinessProbe || {};
  if (tls) check(rp.httpGet?.path === "/readyz" && !rp.grpc, "TLS on gRPC: readiness must be httpGet /readyz");
  else check(rp.grpc?.port === 50051 && !rp.httpGet, "readiness is not the native gRPC probe on 50051");
  check(c.livenessProbe?.httpGet?.path === "/healthz", "liveness is not httpGet /healthz");
  const portNames = new Set((c.ports || []).map((p) => p.name));
  check(portNames.has("grpc") && portNames.has("http"), "container ports grpc/http missing");

  // Drain: preStop sleep + shutdown grace + margin fits the termination grace period.
  const sleepS = c.lifecycle?.preStop?.sleep?.seconds;
  const graceMs = Number(config.PGW_SHUTDOWN_GRACE_MS ?? 10000);
  check(sleepS >= 3, "no preStop sleep (endpoints need a moment to drop the pod)");
  check(pod.terminationGracePeriodSeconds >= (sleepS || 0) + graceMs / 1000 + 3,
    `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < preStop ${sleepS}s + drain ${graceMs / 1000}s + 3s`);

  // Spread: exactly one constraint per topology key, zones included, selecting these pods.
  const tsc = pod.topologySpreadConstraints || [];
  const keys = tsc.map((t) => t.topologyKey);
  check(keys.includes("topology.kubernetes.io/zone"), "no zone topology spread");
  check(new Set(keys).size === keys.length, `duplicate topology spread keys: ${keys}`);
  for (const t of tsc) check(matches(t.labelSelector?.matchLabels, podLabels), `spread on ${t.topologyKey} does not select the pods`);

  // Identity: the ServiceAccount with an IRSA role, no API token.
  const sa = byKind(objs, "ServiceAccount").find((x) => x.metadata.name === GATEWAY);
  check(sa, "no ServiceAccount");
  check(/^arn:aws[\w-]*:iam::\d{12}:role\/[\w+=,.@\/-]+$/.test(sa?.metadata?.annotations?.["eks.amazonaws.com/role-arn"] || ""),
    "ServiceAccount has no IRSA role-arn annotation");
  check(sa?.automountServiceAccountToken === false, "ServiceAccount automounts an API token");

  // Services: a ClusterIP one and a headless one, both on the gateway's pods and ports.
  const svcs = byKind(objs, "Service").filter((s) => s.metadata.name.startsWith(GATEWAY) && matches(s.spec.selector, podLabels) && s.spec.selector);
  const headless = svcs.filter((s) => s.spec.clusterIP === "None");
  check(svcs.length - headless.length === 1 && headless.length === 1, "expected one ClusterIP and one headless gateway Service");
  for (const s of svcs) {
    const names = new Set(s.spec.ports.map((p) => p.targetPort));
    check(names.has("grpc") && names.has("http"), `Service/${s.metadata.name}: ports grpc/http missing`);
    check(s.spec.ports.find((p) => p.targetPort === "grpc")?.appProtocol === "kubernetes.io/h2c", `Service/${s.metadata.name}: gRPC port not marked h2c`);
  }
  check(headless.every((s) => s.spec.publishNotReadyAddresses !== true), "headless Service publishes unready pods");

  // Scaling and disruption.
  const hpa = byKind(objs, "HorizontalPodAutoscaler");
  const pdb = byKind(objs, "PodDisruptionBudget");
  if (overlay === "dev") {
    check(gw.spec.replicas === 1 && hpa.length === 0 && pdb.length === 0, "dev: one replica, no HPA, no PDB");
  } else {
    check(gw.spec.replicas === undefined, "replicas set next to an HPA (every apply would reset the count)");
    check(hpa.length === 1 && hpa[0].spec.scaleTargetRef.name === GATEWAY && hpa[0].spec.scaleTargetRef.kind === "Deployment", "HPA does not target the gateway");
    check(hpa[0]?.spec.minReplicas >= (overlay === "prod" ? 3 : 2), "too few minimum replicas");
    check(hpa[0]?.spec.minReplicas <= hpa[0]?.spec.maxReplicas, "HPA min > max");
    check(pdb.length === 1 && matches(pdb[0].spec.selector.matchLabels, podLabels), "PDB does not select the gateway pods");
  }

  // NetworkPolicy: ingress only from labelled namespaces on the named ports; egress only
  // DNS, HTTPS, Redis and the Pod Identity agent.
  const np = byKind(objs, "NetworkPolicy").find((x) => x.metadata.name === GATEWAY);
  check(np && matches(np.spec.podSelector.matchLabels, podLabels), "no NetworkPolicy for the gateway pods");
  if (np) {
    check(np.spec.policyTypes.includes("Ingress") && np.spec.policyTypes.includes("Egress"), "NetworkPolicy must cover ingress and egress");
    for (const r of np.spec.ingress || []) {
      check(r.from?.length && r.from.every((f) => f.namespaceSelector?.matchLabels && !f.ipBlock),
        "an ingress rule admits more than labelled namespaces");
      const ports = (r.ports || []).map((p) => p.port);
      check(ports.length && ports.every((p) => p === "grpc" || p === "http"), `ingress on ports ${ports}`);
      if (r.from?.some((f) => f.namespaceSelector.matchLabels["kubernetes.io/metadata.name"] === "monitoring"))
        check(ports.length === 1 && ports[0] === "http", "monitoring may reach more than the metrics port");
    }
    const allowed = new Set([53, 443, 6379, 80]);
    for (const r of np.spec.egress || []) {
      const ports = (r.ports || []).map((p) => p.port);
      check(ports.length && ports.every((p) => allowed.has(p)), `egress on ports ${ports.length ? ports : "any"}`);
      if (ports.includes(80))
        check(r.to?.length === 1 && r.to[0].ipBlock?.cidr === "169.254.170.23/32", "port 80 egress beyond the Pod Identity agent");
      if (ports.includes(53))
        check(r.to?.every((t) => t.podSelector?.matchLabels?.["k8s-app"] === "kube-dns"), "DNS egress beyond kube-dns");
    }
  }
  const ann = gw.spec.template.metadata.annotations || {};
  check(ann["prometheus.io/scrape"] === "true" && ann["prometheus.io/port"] === "8080", "no Prometheus scrape annotations");

  // Monitoring component, where included.
  const sms = byKind(objs, "ServiceMonitor");
  const rules = byKind(objs, "PrometheusRule");
  if (overlay === "prod") check(sms.length === 1 && rules.length === 1, "prod: monitoring component missing");
  for (const sm of sms) {
    const selected = byKind(objs, "Service").filter((s) => matches(sm.spec.selector.matchLabels, s.metadata.labels));
    check(selected.length === 1 && selected[0].spec.clusterIP !== "None", "ServiceMonitor must select exactly the ClusterIP Service");
    check(sm.spec.endpoints.every((e) => e.port === "http" && e.path === "/metrics"), "ServiceMonitor endpoint is not http /metrics");
  }
  for (const r of rules) {
    const alerts = r.spec.groups.flatMap((g) => g.rules).filter((x) => x.alert);
    check(alerts.length >= 4, "fewer than four alerts");
    for (const a of alerts) errs.push(...promqlErrors(a.alert, a.expr, metrics));
    const used = new Set(alerts.flatMap((a) => metricNames(a.expr)));
    for (const m of ["pgw_credentials_expiry_timestamp_seconds", "pgw_upstream_requests_total", "pgw_redis_breaker_state", "pgw_rejected_total"])
      check(used.has(m), `no alert on ${m}`);
  }
  return errs;
}

function metricNames(expr) {
  const names = [];
  promqlParser.parse(expr).iterate({
    enter(n) {
      if (n.name === "Identifier" && n.node.parent?.name === "VectorSelector") names.push(expr.slice(n.from, n.to));
    },
  });
  return names;
}

function promqlErrors(alert, expr, metrics) {
  const errs = [];
  promqlParser.parse(expr).iterate({
    enter(n) {
      if (n.type.isError) errs.push(`alert ${alert}: PromQL syntax error at ${n.from}: ${JSON.stringify(expr.slice(Math.max(0, n.from - 20), n.from + 10))}`);
    },
  });
  for (const m of metricNames(expr)) {
    if (metrics.has(m)) continue;
    if (PENDING_METRICS.has(m)) notes.add(`metric ${m} (alert ${alert}) is not yet in service/metrics.c`);
    else errs.push(`alert ${alert}: no metric ${m} in service/metrics.c`);
  }
  return errs;
}

// --- deploy/iam ----------------------------------------------------------------------------

// The permission policy grants exactly one action on batch inference job ARNs; each trust
// policy admits exactly the prod overlay's service account.
function readIam() {
  const read = (f) => JSON.parse(fs.readFileSync(path.join(REPO, "deploy", "iam", f), "utf8"));
  return { perm: read("permissions-policy.json"), irsa: read("trust-policy-irsa.json"), pid: read("trust-policy-pod-identity.json") };
}

function iamErrors(prodObjs, { perm, irsa, pid } = readIam()) {
  const errs = [];
  const check = (ok, msg) => { if (!ok) errs.push(msg); };
  const list = (x) => (Array.isArray(x) ? x : [x]);
  const sa = prodObjs.find((o) => o.kind === "ServiceAccount" && o.metadata.name === GATEWAY);
  const ns = sa?.metadata?.namespace;
  check(ns && sa, "prod overlay has no namespaced ServiceAccount");
  const subject = `system:serviceaccount:${ns}:${GATEWAY}`;

  check(perm.Version === "2012-10-17", "permissions: Version");
  for (const st of perm.Statement) {
    check(st.Effect === "Allow", "permissions: only Allow statements");
    check(!st.NotAction && !st.NotResource, "permissions: NotAction/NotResource");
    check(list(st.Action).length === 1 && list(st.Action)[0] === "personalize:DescribeBatchInferenceJob",
      `permissions: actions ${list(st.Action)}`);
    for (const r of list(st.Resource))
      check(/^arn:aws[\w-]*:personalize:[a-z0-9-]+:\d{12}:batch-inference-job\/[\w*-]+$/.test(r),
        `permissions: resource ${r} is not a batch-inference-job ARN pattern in one account and region`);
  }

  for (const st of irsa.Statement) {
    const provider = st.Principal?.Federated || "";
    const issuer = provider.replace(/^arn:aws[\w-]*:iam::\d{12}:oidc-provider\//, "");
    check(issuer !== provider && issuer, "IRSA: principal is not an OIDC provider");
    check(list(st.Action).length === 1 && st.Action === "sts:AssumeRoleWithWebIdentity", "IRSA: action");
    const eq = st.Condition?.StringEquals || {};
    check(eq[`${issuer}:sub`] === subject, `IRSA: sub condition is not ${subject}`);
    check(eq[`${issuer}:aud`] === "sts.amazonaws.com", "IRSA: aud condition");
    check(Object.keys(st.Condition).length === 1, "IRSA: only exact (StringEquals) conditions");
  }

  for (const st of pid.Statement) {
    check(st.Principal?.Service === "pods.eks.amazonaws.com" && Object.keys(st.Principal).length === 1, "Pod Identity: principal");
    check(JSON.stringify(list(st.Action).sort()) === JSON.stringify(["sts:AssumeRole", "sts:TagSession"]), "Pod Identity: actions");
    const eq = st.Condition?.StringEquals || {};
    check(eq["aws:RequestTag/kubernetes-namespace"] === ns, `Pod Identity: namespace tag is not ${ns}`);
    check(eq["aws:RequestTag/kubernetes-service-account"] === GATEWAY, "Pod Identity: service account tag");
    check(/^arn:aws[\w-]*:eks:[a-z0-9-]+:\d{12}:cluster\/[\w-]+$/.test(eq["aws:RequestTag/eks-cluster-arn"] || ""), "Pod Identity: cluster tag");
  }
  return errs;
}

// --- driver ---------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
function report(name, errors) {
  if (errors.length === 0) {
    passed++;
    console.log(`ok    ${name}`);
  } else {
    failed++;
    console.log(`FAIL  ${name}`);
    for (const e of errors.slice(0, 30)) console.log(`        ${e}`);
  }
}

const flags = gatewayFlags();
const metrics = gatewayMetrics();
const rendered = {};
for (const overlay of OVERLAYS) {
  let objs;
  try {
    objs = render(path.join(K8S, "overlays", overlay));
    rendered[overlay] = objs;
    report(`${overlay}: renders (${objs.length} objects: ${[...new Set(objs.map((o) => o.kind))].join(", ")})`, []);
  } catch (e) {
    report(`${overlay}: renders`, [String(e.message || e).split("\n").slice(0, 5).join(" ")]);
    continue;
  }
  report(`${overlay}: every object valid against the API schema`, await schemaErrors(objs));
  report(`${overlay}: no unknown fields`, strictErrors(objs));
  report(`${overlay}: security and wiring asserts`, securityErrors(objs, overlay, flags, metrics));
}
if (rendered.prod) report("deploy/iam: least privilege, trust only the prod service account", iamErrors(rendered.prod));
report("every overlay directory rendered", OVERLAYS.length >= 2 && OVERLAYS.every((o) => rendered[o]) ? [] : ["an overlay did not render"]);

// Self-test: each kind of mistake must be caught by the check meant for it.
if (rendered.prod) {
  const gwOf = (objs) => objs.find((o) => o.kind === "Deployment" && o.metadata.name === GATEWAY);
  const mutate = (fn) => { const objs = structuredClone(rendered.prod); fn(objs, gwOf(objs)); return objs; };
  const cases = [
    ["a misspelt field is rejected", () => strictErrors(mutate((_, d) => { d.spec.template.spec.containers[0].readinesProbe = d.spec.template.spec.containers[0].readinessProbe; }))],
    ["a wrong type is rejected", async () => schemaErrors(mutate((_, d) => { d.spec.replicas = "three"; }))],
    ["a missing required field is rejected", async () => schemaErrors(mutate((_, d) => { delete d.spec.selector; }))],
    ["a writable root filesystem is rejected", () => securityErrors(mutate((_, d) => { delete d.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem; }), "prod", flags, metrics)],
    ["an unknown flag is rejected", () => securityErrors(mutate((objs) => { objs.find((o) => o.kind === "ConfigMap" && o.data?.PGW_LOG_LEVEL).data.PGW_LOG_LEVLE = "info"; }), "prod", flags, metrics)],
    ["a short termination grace is rejected", () => securityErrors(mutate((_, d) => { d.spec.template.spec.terminationGracePeriodSeconds = 10; }), "prod", flags, metrics)],
    ["a second IAM action is rejected", () => {
      const docs = readIam();
      docs.perm.Statement[0].Action = ["personalize:DescribeBatchInferenceJob", "personalize:ListBatchInferenceJobs"];
      return iamErrors(rendered.prod, docs);
    }],
    ["an IRSA trust for another service account is rejected", () => {
      const docs = readIam();
      const eq = docs.irsa.Statement[0].Condition.StringEquals;
      for (const k of Object.keys(eq)) if (k.endsWith(":sub")) eq[k] = "system:serviceaccount:default:default";
      return iamErrors(rendered.prod, docs);
    }],
    ["a password in the ConfigMap is rejected", () => securityErrors(mutate((objs) => { objs.find((o) => o.kind === "ConfigMap" && o.data?.PGW_LOG_LEVEL).data.PGW_REDIS_URL = "rediss://u:hunter2@redis:6379"; }), "prod", flags, metrics)],
    ["a PromQL syntax error is rejected", () => securityErrors(mutate((objs) => { const r = objs.find((o) => o.kind === "PrometheusRule"); r.spec.groups[0].rules[0].expr += " and rate(pgw_upstream_requests_total[5m]"; }), "prod", flags, metrics)],
  ];
  for (const [name, run] of cases) {
    const errs = await run();
    if (process.env.PGW_CHECK_VERBOSE) console.log(`        caught: ${errs[0]}`);
    report(`self-test: ${name}`, errs.length ? [] : ["the mutation passed every check"]);
  }
}

for (const n of notes) console.log(`note  ${n}`);
console.log(`manifests: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
