// Checks the Kubernetes manifests of deploy/k8s/ (run by `./dit test`: `npm ci` here, then `node validate.mjs`).
//
//  1. Schema: every object through kubernetes-models' validate() (the Kubernetes OpenAPI schemas compiled to
//     validators), looked up by apiVersion and kind; an object of a kind it has no model for is an error.
//  2. Unknown fields: kubernetes-models accepts any extra key (a typo such as `readinesProbe` passes validate()),
//     so each object is validated a second time through a proxy that records which keys the validator reads. The
//     compiled validator reads exactly the properties its schema declares (and every key of a map, which it
//     iterates), so a key it never read is not in the schema: an error, with its path.
//  3. Consistency with the server and between the objects: the server config's keys are keys of ServerConfig.java;
//     ports, config and token paths, labels and selectors, the image's uid (Dockerfile), the termination grace
//     against the preStop sleep and shutdown_grace_seconds, the autoscaler's metric against the adapter rule
//     (whose configuration is checked key by key) and against the server's metrics.
//  4. Negative cases: mutated copies of the manifests (a typo'd field, a wrong type, ...) must each be rejected.
//
// Usage: node validate.mjs [DIR]   (default: deploy/k8s of this repository; every *.yaml under it, sub-folders too)
// kubernetes-models 5.1.0 declares Node >= 22; it runs on the machines' Node 20 (these checks, the negative cases
// included, pass there), so `npm ci` in tools/test.sh hides npm's engine warning.
import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, parse as parseYaml } from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const DIR = path.resolve(process.argv[2] ?? path.join(REPO, "deploy/k8s"));
const SERVER_CONFIG = path.join(REPO, "server/src/main/java/io/ditserve/server/config/ServerConfig.java");
const SERVER_METRICS = path.join(REPO, "server/src/main/java/io/ditserve/server/observe/ServerMetrics.java");
const DOCKERFILE = path.join(REPO, "Dockerfile");
// the server's stop after the grace: up to 5 s for the streams' last events, then 5 s (+ 5 s) for the transport
// (DitServer.stop)
const STOP_AFTER_GRACE_S = 15;

// YAML 1.1, as the Kubernetes API machinery (sigs.k8s.io/yaml, go-yaml) reads it: 0440 is octal, `on` a boolean
const YAML_OPTIONS = { version: "1.1", prettyErrors: true };

// ---- loading ------------------------------------------------------------------------------------------------------
function yamlFiles(dir) {
  return readdirSync(dir).sort().flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

function load(dir) {
  const objects = [];
  const errors = [];
  for (const file of yamlFiles(dir)) {
    const rel = path.relative(REPO, file);
    parseAllDocuments(readFileSync(file, "utf8"), YAML_OPTIONS).forEach((doc, i) => {
      if (doc.errors.length) {
        errors.push(`${rel} (document ${i + 1}): ${doc.errors.map((e) => e.message).join("; ")}`);
        return;
      }
      const value = doc.toJS();
      if (value === null || value === undefined) return; // an empty document (a trailing ---)
      objects.push({ where: `${rel}#${i + 1}`, value });
    });
  }
  return { objects, errors };
}

async function modelClass(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9.\/]+$/.test(apiVersion + kind)) {
    return null;
  }
  try {
    const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
    return mod[kind] ?? null;
  } catch {
    return null;
  }
}

// ---- 1 + 2: schema and unknown fields -----------------------------------------------------------------------------
// A proxy over a plain JSON tree that records, per object, the keys read; nested objects are proxied on first read.
function tracked(value, path, log) {
  if (value === null || typeof value !== "object") return value;
  const read = new Set();
  log.push({ path, value, read });
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return v;
      read.add(key);
      if (v === null || typeof v !== "object" || !Object.prototype.hasOwnProperty.call(target, key)) return v;
      if (!children.has(key)) children.set(key, tracked(v, `${path}/${key}`, log));
      return children.get(key);
    },
  });
}

async function schemaErrors({ where, value }) {
  const name = `${value?.kind ?? "?"}/${value?.metadata?.name ?? "?"}`;
  const Model = await modelClass(value?.apiVersion, value?.kind);
  if (!Model) return [`${where} ${name}: no Kubernetes schema for apiVersion ${value?.apiVersion} kind ${value?.kind}`];
  try {
    new Model(value).validate();
  } catch (e) {
    return [`${where} ${name}: ${e.message}`];
  }
  const log = [];
  Model.prototype.validate.call(tracked(value, "", log)); // passed above: the same validator, now observed
  const errors = [];
  for (const { path: p, value: obj, read } of log) {
    if (Array.isArray(obj)) continue;
    for (const key of Object.keys(obj)) {
      if (!read.has(key)) errors.push(`${where} ${name}: unknown field ${p}/${key} (not in the ${value.kind} schema)`);
    }
  }
  return errors;
}

// ---- 3: consistency -----------------------------------------------------------------------------------------------
function serverConfigKeys() {
  const keys = [...readFileSync(SERVER_CONFIG, "utf8").matchAll(/@JsonProperty\("([^"]+)"\)/g)].map((m) => m[1]);
  if (keys.length < 10) throw new Error(`found only ${keys.length} @JsonProperty keys in ${SERVER_CONFIG}`);
  return new Set(keys);
}

function imageUser() {
  const m = readFileSync(DOCKERFILE, "utf8").match(/^USER\s+(\d+)(?::(\d+))?/m);
  if (!m) throw new Error(`no numeric USER in ${DOCKERFILE}`);
  return { uid: Number(m[1]), gid: m[2] === undefined ? undefined : Number(m[2]) };
}

// the prometheus-adapter configuration format (its `config.yaml`): every key the adapter knows, per level
const ADAPTER_KEYS = {
  top: ["rules", "externalRules", "resourceRules"],
  rule: ["seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"],
  resources: ["overrides", "template", "namespaced"],
  name: ["matches", "as"],
  seriesFilter: ["is", "isNot"],
};

function labelsMatch(selector, labels) {
  return selector && Object.keys(selector).length > 0
    && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function consistencyErrors(objects) {
  const errors = [];
  const err = (m) => errors.push(m);
  const find = (kind, pred = () => true) => objects.filter((o) => o.value?.kind === kind && pred(o.value));
  const deployments = find("Deployment");
  if (deployments.length !== 1) return [`expected one Deployment, found ${deployments.length}`];
  const dep = deployments[0].value;
  const pod = dep.spec?.template?.spec ?? {};
  const podLabels = dep.spec?.template?.metadata?.labels ?? {};
  const c = (pod.containers ?? []).find((x) => x.name === "ditserve");
  if (!c) return ["Deployment: no container named ditserve"];
  if (!labelsMatch(dep.spec?.selector?.matchLabels, podLabels)) err("Deployment: selector does not match the pod labels");

  // the server config in its ConfigMap, mounted where --config points
  const args = c.args ?? [];
  const at = args.indexOf("--config");
  if (at < 0 || !args[at + 1]) return [...errors, "Deployment: the container's args have no --config FILE"];
  const configPath = args[at + 1];
  const volumeAt = (file, kind) => {
    for (const m of c.volumeMounts ?? []) {
      if (path.posix.dirname(file) !== m.mountPath) continue;
      const v = (pod.volumes ?? []).find((x) => x.name === m.name);
      if (v?.[kind]) return v[kind];
    }
    return null;
  };
  const cmRef = volumeAt(configPath, "configMap");
  if (!cmRef) return [...errors, `Deployment: no configMap volume mounted at ${path.posix.dirname(configPath)}`];
  const cm = find("ConfigMap", (v) => v.metadata?.name === cmRef.name)[0]?.value;
  const configText = cm?.data?.[path.posix.basename(configPath)];
  if (typeof configText !== "string") {
    return [...errors, `ConfigMap ${cmRef.name}: no key ${path.posix.basename(configPath)} (the --config file)`];
  }
  let config;
  try {
    config = parseYaml(configText, { ...YAML_OPTIONS, uniqueKeys: true }) ?? {};
  } catch (e) {
    return [...errors, `ConfigMap ${cmRef.name}: ${path.posix.basename(configPath)} is not YAML: ${e.message}`];
  }
  const known = serverConfigKeys();
  for (const key of Object.keys(config)) {
    if (!known.has(key)) err(`ConfigMap ${cmRef.name}: unknown server config key '${key}' (ServerConfig.java)`);
  }
  for (const key of ["port", "metrics_port", "metrics_host", "shutdown_grace_seconds"]) {
    if (config[key] === undefined) err(`ConfigMap ${cmRef.name}: set ${key} (the manifests depend on it)`);
  }
  if (config.metrics_host !== "0.0.0.0") err(`ConfigMap ${cmRef.name}: metrics_host must be 0.0.0.0 (Prometheus scrapes the pod's address)`);

  // tokens: the Secret mounted where auth_tokens_file points
  if (config.auth_tokens_file) {
    const sRef = volumeAt(config.auth_tokens_file, "secret");
    const secret = sRef && find("Secret", (v) => v.metadata?.name === sRef.secretName)[0]?.value;
    const key = path.posix.basename(config.auth_tokens_file);
    if (!secret) err(`Deployment: no Secret volume mounted at ${path.posix.dirname(config.auth_tokens_file)} (auth_tokens_file)`);
    else if (secret.stringData?.[key] === undefined && secret.data?.[key] === undefined) {
      err(`Secret ${sRef.secretName}: no key ${key} (auth_tokens_file)`);
    } else {
      // the repository ships the Secret as a template without a token: no token from here can ever be live
      const text = secret.stringData?.[key] ?? Buffer.from(String(secret.data[key]), "base64").toString("utf8");
      if (text.split("\n").some((l) => l.trim() !== "" && !l.trim().startsWith("#"))) {
        err(`Secret ${sRef.secretName}: the template holds a token; ship it with comments only`);
      }
    }
  }

  // ports: config, container ports, probes, scrape annotation
  const port = (name) => (c.ports ?? []).find((p) => p.name === name)?.containerPort;
  if (port("grpc") !== config.port) err(`Deployment: container port grpc (${port("grpc")}) is not the config's port (${config.port})`);
  if (port("metrics") !== config.metrics_port) err(`Deployment: container port metrics (${port("metrics")}) is not metrics_port (${config.metrics_port})`);
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const g = c[probe]?.grpc;
    if (!g) err(`Deployment: ${probe} is not a grpc probe (grpc.health.v1)`);
    else if (g.port !== config.port) err(`Deployment: ${probe} probes port ${g.port}, the server listens on ${config.port}`);
  }
  const ann = dep.spec?.template?.metadata?.annotations ?? {};
  if (String(ann["prometheus.io/port"]) !== String(config.metrics_port)) err(`Deployment: annotation prometheus.io/port is not metrics_port (${config.metrics_port})`);

  // the drain: preStop sleep + shutdown_grace_seconds + the server's stop must fit in the termination grace
  const cmd = c.lifecycle?.preStop?.exec?.command ?? [];
  const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? (cmd[0] === "sleep" ? Number(cmd[1]) : NaN);
  if (!Number.isFinite(preStop)) err("Deployment: preStop must be a sleep (exec [sleep, N] or sleep.seconds)");
  const need = preStop + config.shutdown_grace_seconds + STOP_AFTER_GRACE_S;
  const grace = pod.terminationGracePeriodSeconds ?? 30;
  if (!(grace >= need)) {
    err(`Deployment: terminationGracePeriodSeconds ${grace} < preStop ${preStop} + shutdown_grace_seconds `
      + `${config.shutdown_grace_seconds} + ${STOP_AFTER_GRACE_S} (the server's stop) = ${need}`);
  }

  // the image's user
  const user = imageUser();
  const sc = { ...pod.securityContext, ...c.securityContext };
  if (sc.runAsUser !== user.uid) err(`Deployment: runAsUser ${sc.runAsUser} is not the image's USER ${user.uid} (Dockerfile)`);
  if (user.gid !== undefined && sc.runAsGroup !== user.gid) err(`Deployment: runAsGroup ${sc.runAsGroup} is not the image's group ${user.gid}`);
  if (sc.runAsNonRoot !== true) err("Deployment: runAsNonRoot must be true");
  for (const kind of ["requests", "limits"]) {
    for (const r of ["cpu", "memory"]) if (c.resources?.[kind]?.[r] === undefined) err(`Deployment: resources.${kind}.${r} unset`);
  }

  // Services, PodDisruptionBudget
  const services = find("Service");
  if (!services.some((s) => s.value.spec?.clusterIP === "None")) err("no headless Service (clusterIP: None)");
  if (!services.some((s) => s.value.spec?.clusterIP !== "None")) err("no plain (ClusterIP) Service");
  for (const { value: s } of services) {
    if (!labelsMatch(s.spec?.selector, podLabels)) err(`Service ${s.metadata?.name}: selector does not match the pod labels`);
    for (const p of s.spec?.ports ?? []) {
      const target = p.targetPort ?? p.port;
      const ok = typeof target === "string" ? port(target) !== undefined : (c.ports ?? []).some((x) => x.containerPort === target);
      if (!ok) err(`Service ${s.metadata?.name}: targetPort ${target} is no port of the container`);
    }
  }
  const pdbs = find("PodDisruptionBudget");
  if (pdbs.length !== 1) err(`expected one PodDisruptionBudget, found ${pdbs.length}`);
  for (const { value: p } of pdbs) {
    if (!labelsMatch(p.spec?.selector?.matchLabels, podLabels)) err(`PodDisruptionBudget ${p.metadata?.name}: selector does not match the pod labels`);
  }

  // autoscaler, adapter rule, server metric
  const rules = [];
  for (const { value: m } of find("ConfigMap", (v) => typeof v.data?.["config.yaml"] === "string" && v !== cm)) {
    let conf;
    try { conf = parseYaml(m.data["config.yaml"], { ...YAML_OPTIONS, uniqueKeys: true }) ?? {}; } catch (e) {
      err(`ConfigMap ${m.metadata?.name}: config.yaml is not YAML: ${e.message}`); continue;
    }
    const strict = (obj, keys, where) => {
      if (obj === null || typeof obj !== "object" || Array.isArray(obj)) { err(`${where}: not a mapping`); return; }
      for (const k of Object.keys(obj)) if (!keys.includes(k)) err(`${where}: unknown key '${k}' (prometheus-adapter knows ${keys.join(", ")})`);
    };
    const where = `ConfigMap ${m.metadata?.name} (prometheus-adapter config)`;
    strict(conf, ADAPTER_KEYS.top, where);
    for (const [i, r] of (conf.rules ?? []).entries()) {
      const w = `${where} rules[${i}]`;
      strict(r, ADAPTER_KEYS.rule, w);
      if (r.resources !== undefined) strict(r.resources, ADAPTER_KEYS.resources, `${w}.resources`);
      if (r.name !== undefined) strict(r.name, ADAPTER_KEYS.name, `${w}.name`);
      for (const [j, f] of (r.seriesFilters ?? []).entries()) strict(f, ADAPTER_KEYS.seriesFilter, `${w}.seriesFilters[${j}]`);
      if (typeof r.seriesQuery !== "string") err(`${w}: no seriesQuery`);
      if (typeof r.metricsQuery !== "string" || !r.metricsQuery.includes("<<.Series>>") || !r.metricsQuery.includes("<<.LabelMatchers>>")) {
        err(`${w}: metricsQuery must use <<.Series>> and <<.LabelMatchers>>`);
      }
      const over = r.resources?.overrides ?? {};
      if (over.pod?.resource !== "pod" || over.namespace?.resource !== "namespace") {
        err(`${w}: resources.overrides must map the labels pod and namespace (a Pods metric)`);
      }
      const series = (r.seriesQuery ?? "").match(/^\s*([A-Za-z_:][A-Za-z0-9_:]*)/)?.[1];
      rules.push({ series, name: r.name?.as ?? series });
    }
  }
  const metricsSource = readFileSync(SERVER_METRICS, "utf8");
  const hpas = find("HorizontalPodAutoscaler");
  if (hpas.length !== 1) err(`expected one HorizontalPodAutoscaler, found ${hpas.length}`);
  for (const { value: h } of hpas) {
    const ref = h.spec?.scaleTargetRef ?? {};
    if (ref.kind !== "Deployment" || ref.name !== dep.metadata?.name || ref.apiVersion !== dep.apiVersion) {
      err(`HorizontalPodAutoscaler ${h.metadata?.name}: scaleTargetRef is not the Deployment ${dep.metadata?.name}`);
    }
    for (const m of h.spec?.metrics ?? []) {
      if (m.type !== "Pods") continue;
      const name = m.pods?.metric?.name;
      const rule = rules.find((r) => r.name === name);
      if (!rule) err(`HorizontalPodAutoscaler ${h.metadata?.name}: no prometheus-adapter rule serves the Pods metric ${name}`);
      else if (!metricsSource.includes(`"${rule.series}"`)) err(`prometheus-adapter rule: the server has no metric ${rule.series} (ServerMetrics.java)`);
    }
    if (!(h.spec?.metrics ?? []).some((m) => m.type === "Pods" && m.pods?.metric?.name === "dit_queue_depth")) {
      err(`HorizontalPodAutoscaler ${h.metadata?.name}: does not scale on the Pods metric dit_queue_depth`);
    }
  }
  return errors;
}

async function check(objects) {
  const errors = [];
  for (const o of objects) errors.push(...(await schemaErrors(o)));
  try {
    errors.push(...consistencyErrors(objects));
  } catch (e) {
    errors.push(`consistency check: ${e.message}`);
  }
  return errors;
}

// ---- 4: negative cases ----------------------------------------------------------------------------------------------
const kindOf = (objects, kind, name) =>
  objects.find((o) => o.value.kind === kind && (name === undefined || o.value.metadata?.name === name)).value;
const podSpec = (objects) => kindOf(objects, "Deployment").spec.template.spec;
const container = (objects) => podSpec(objects).containers[0];
const rename = (obj, from, to) => { obj[to] = obj[from]; delete obj[from]; };
const NEGATIVE = [
  ["a typo'd field (terminationGracePeriodSecond)", /unknown field \/spec\/template\/spec\/terminationGracePeriodSecond /,
    (o) => rename(podSpec(o), "terminationGracePeriodSeconds", "terminationGracePeriodSecond")],
  ["a typo'd field in a container (readinesProbe)", /unknown field .*\/containers\/0\/readinesProbe /,
    (o) => rename(container(o), "readinessProbe", "readinesProbe")],
  ["a typo'd field in a probe (grpc.servce)", /unknown field .*\/livenessProbe\/grpc\/servce /,
    (o) => { container(o).livenessProbe.grpc.servce = ""; }],
  ["a wrong type (replicas: \"two\")", /\/spec\/replicas must be integer/,
    (o) => { kindOf(o, "Deployment").spec.replicas = "two"; }],
  ["a wrong type (containerPort: \"50051\")", /containerPort must be integer/,
    (o) => { container(o).ports[0].containerPort = "50051"; }],
  ["a wrong type (HPA minReplicas: 1.5)", /minReplicas must be integer/,
    (o) => { kindOf(o, "HorizontalPodAutoscaler").spec.minReplicas = 1.5; }],
  ["an unknown kind", /no Kubernetes schema/,
    (o) => { kindOf(o, "PodDisruptionBudget").kind = "PodDisruptionBudgett"; }],
  ["an unknown server config key", /unknown server config key 'max_queue'/,
    (o) => { kindOf(o, "ConfigMap", "ditserve-config").data["config.yaml"] += "max_queue: 4\n"; }],
  ["a termination grace shorter than the drain", /terminationGracePeriodSeconds 30 </,
    (o) => { podSpec(o).terminationGracePeriodSeconds = 30; }],
  ["a probe on the wrong port", /readinessProbe probes port 50052/,
    (o) => { container(o).readinessProbe.grpc.port = 50052; }],
  ["a Service selecting no pod", /Service ditserve: selector does not match/,
    (o) => { kindOf(o, "Service", "ditserve").spec.selector = { "app.kubernetes.io/name": "ditserv" }; }],
  ["an autoscaler metric without an adapter rule", /no prometheus-adapter rule serves the Pods metric dit_queue_dept/,
    (o) => { kindOf(o, "HorizontalPodAutoscaler").spec.metrics[0].pods.metric.name = "dit_queue_dept"; }],
  ["a typo'd adapter rule key (metricQuery)", /unknown key 'metricQuery'/,
    (o) => {
      const m = kindOf(o, "ConfigMap", "prometheus-adapter");
      m.data["config.yaml"] = m.data["config.yaml"].replace("metricsQuery:", "metricQuery:");
    }],
  ["a token in the Secret's template", /the template holds a token/,
    (o) => { kindOf(o, "Secret", "ditserve-tokens").stringData.tokens += "0123456789abcdef\n"; }],
  ["a root user", /runAsUser 0 is not the image's USER/,
    (o) => { podSpec(o).securityContext.runAsUser = 0; }],
];

async function negativeCases(objects) {
  const failures = [];
  // kubernetes-models alone accepts an unknown field: the reason for check 2 (kept true, or check 2 is moot)
  const typo = structuredClone(kindOf(objects, "Deployment"));
  rename(typo.spec.template.spec.containers[0], "readinessProbe", "readinesProbe");
  try {
    new (await modelClass(typo.apiVersion, typo.kind))(typo).validate();
  } catch {
    failures.push("kubernetes-models' validate() now rejects unknown fields itself: check 2 can be revisited");
  }
  for (const [what, expect, mutate] of NEGATIVE) {
    const copy = structuredClone(objects);
    mutate(copy);
    const errors = await check(copy);
    if (!errors.some((e) => expect.test(e))) {
      failures.push(`negative case not rejected as expected: ${what} (errors: ${errors.join(" | ") || "none"})`);
    }
  }
  return failures;
}

// ---- main -----------------------------------------------------------------------------------------------------------
const started = Date.now();
const { objects, errors: parseErrors } = load(DIR);
if (objects.length === 0 && parseErrors.length === 0) parseErrors.push(`no manifests in ${DIR}`);
const errors = [...parseErrors, ...(parseErrors.length ? [] : await check(objects))];
for (const e of errors) console.error(`k8s: ${e}`);
if (errors.length) {
  console.error(`k8s: FAILED: ${errors.length} error(s) in ${path.relative(REPO, DIR) || DIR}`);
  process.exit(1);
}
const version = JSON.parse(readFileSync(path.join(HERE, "node_modules/kubernetes-models/package.json"), "utf8")).version;
console.log(`k8s: ok: ${objects.length} objects (${[...new Set(objects.map((o) => o.value.kind))].join(", ")}) valid `
  + `against kubernetes-models ${version}, no unknown fields, consistent with the server`);
const failures = await negativeCases(objects);
for (const f of failures) console.error(`k8s: ${f}`);
if (failures.length) process.exit(1);
console.log(`k8s: ok: ${NEGATIVE.length} negative cases rejected, as each must be (${Date.now() - started} ms)`);
