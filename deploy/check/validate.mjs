// validate.mjs: offline validation of rendered Kubernetes manifests, for deploy/check.sh.
//
//   node validate.mjs [--materialize DIR] [--examples DIR] FILE.yaml...
//
// Each FILE is one rendered overlay (`kubectl kustomize` output, several YAML documents). Every
// object is checked three ways:
//   1. schema: the Kubernetes OpenAPI schema of its apiVersion/kind (npm kubernetes-models;
//      ServiceMonitor from @kubernetes-models/prometheus-operator): types, enums, required
//      fields, formats. A kind without a schema here is an error, not a pass.
//   2. strict fields: unknown fields (a misspelt `readinesProbe` passes the schema, which
//      allows extra properties, but `kubectl apply` refuses it), found by type-checking the
//      objects against the same models' TypeScript declarations.
//   3. references inside the overlay: selectors that select, named ports that exist, the
//      ConfigMaps, Secrets and scale targets that are referred to, and the seccomp rules of
//      ringpolicyd (a Localhost profile needs allowPrivilegeEscalation: false; backend = "uring"
//      needs a profile that allows io_uring).
// A Secret referred to but not rendered (production: created by the operator) must have an
// example under --examples DIR/<secret name>/; its files stand in for it.
//
// With --materialize DIR, the files of every ringpolicyd container's ConfigMap and Secret
// volumes are written under DIR/<overlay>/<mount path>, absolute paths inside them rewritten to
// that tree, and one line "CONFIG <file> <path of the -c file>" per container is printed, so
// check.sh can load the configuration with mtpolicyd's parser and with ringpolicyd --check.
//
// Prints one line per problem ("FILE: Kind/name: message") and a summary; exit status 0 when
// there is none, 1 when there is, 2 on bad usage or unreadable input.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import ts from "typescript";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SECCOMP_DIR = path.join(HERE, "..", "kubernetes", "seccomp");

// apiVersion/kind → module of the model (its class is `kind`, its interface `I` + kind).
const MODELS = {
  "v1/ConfigMap": "kubernetes-models/v1/ConfigMap",
  "v1/Namespace": "kubernetes-models/v1/Namespace",
  "v1/Secret": "kubernetes-models/v1/Secret",
  "v1/Service": "kubernetes-models/v1/Service",
  "v1/ServiceAccount": "kubernetes-models/v1/ServiceAccount",
  "apps/v1/DaemonSet": "kubernetes-models/apps/v1/DaemonSet",
  "apps/v1/Deployment": "kubernetes-models/apps/v1/Deployment",
  "apps/v1/StatefulSet": "kubernetes-models/apps/v1/StatefulSet",
  "autoscaling/v2/HorizontalPodAutoscaler":
    "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler",
  "networking.k8s.io/v1/NetworkPolicy": "kubernetes-models/networking.k8s.io/v1/NetworkPolicy",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/policy/v1/PodDisruptionBudget",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
};

const WORKLOADS = new Set(["Deployment", "StatefulSet", "DaemonSet"]);

function usage() {
  console.error("usage: node validate.mjs [--materialize DIR] [--examples DIR] FILE.yaml...");
  process.exit(2);
}

function parseArgs(argv) {
  const a = { files: [], materialize: null, examples: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--materialize" && i + 1 < argv.length) a.materialize = argv[++i];
    else if (argv[i] === "--examples" && i + 1 < argv.length) a.examples = argv[++i];
    else if (argv[i].startsWith("--")) usage();
    else a.files.push(argv[i]);
  }
  if (a.files.length === 0) usage();
  return a;
}

// ------------------------------------------------------------------------------------------
// Loading

export function loadObjects(file, text, problems) {
  const objs = [];
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  for (const doc of docs) {
    if (doc.errors.length) {
      for (const e of doc.errors) problems.push(`${file}: YAML: ${e.message.split("\n")[0]}`);
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    if (typeof obj !== "object" || Array.isArray(obj)) {
      problems.push(`${file}: a document is not an object`);
      continue;
    }
    objs.push(obj);
  }
  return objs;
}

function ident(o) {
  return `${o.kind ?? "?"}/${o.metadata?.name ?? "?"}`;
}

function key(o) {
  return `${o.apiVersion}/${o.kind}`;
}

// ------------------------------------------------------------------------------------------
// 1. Schemas

// What the API server decodes: kustomize folds the base64 of long Secret values over several
// lines, and Go's base64 decoder skips line breaks, so the schema's "byte" format must too.
function apiServerView(o) {
  if (o.kind !== "Secret" || !o.data) return o;
  const data = {};
  for (const [k, v] of Object.entries(o.data)) data[k] = typeof v === "string" ? v.replace(/[\r\n]/g, "") : v;
  return { ...o, data };
}

export async function checkSchemas(objs, report) {
  for (const o of objs) {
    if (typeof o.apiVersion !== "string" || typeof o.kind !== "string") {
      report(o, "no apiVersion or kind");
      continue;
    }
    const mod = MODELS[key(o)];
    if (!mod) {
      report(o, `no schema for ${key(o)} (add it to MODELS in deploy/check/validate.mjs)`);
      continue;
    }
    const Model = (await import(mod))[o.kind];
    try {
      new Model(apiServerView(o)).validate();
    } catch (e) {
      report(o, `schema: ${e.message}`);
    }
  }
}

// ------------------------------------------------------------------------------------------
// 2. Unknown fields, by type-checking `const oN: IKind = {...}` against the models' .d.ts.

// `entries` is a list of [object, report function]: one TypeScript program for every overlay,
// because building the program (reading the models' declarations) is most of the cost.
export function checkStrict(entries, reportGlobalFn) {
  const typed = entries.filter(([o]) => MODELS[key(o)]);
  if (typed.length === 0) return;
  const reporter = new Map(typed.map(([o, r]) => [o, r]));
  const report = (o, msg) => reporter.get(o)(o, msg);
  const lines = [];
  const starts = []; // [first line, object] of each literal
  const imports = new Set();
  typed.forEach(([o]) => imports.add(`import type { I${o.kind} } from "${MODELS[key(o)]}";`));
  lines.push(...imports);
  typed.forEach(([o], i) => {
    starts.push([lines.length, o]);
    const body = JSON.stringify(o, null, 2).split("\n");
    lines.push(`export const o${i}: I${o.kind} = ${body[0]}`, ...body.slice(1));
    lines[lines.length - 1] += ";";
  });
  const fileName = path.join(HERE, "__manifests__.ts");
  const source = lines.join("\n");
  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) =>
    name === fileName
      ? ts.createSourceFile(name, source, lang)
      : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === fileName || fileExists(name);
  const program = ts.createProgram([fileName], options, host);
  const diags = ts.getPreEmitDiagnostics(program);
  for (const d of diags) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n");
    if (!d.file || d.file.fileName !== fileName) {
      reportGlobalFn(`strict-field check: ${msg[0]}`);
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    let owner = starts[0];
    for (const s of starts) if (s[0] <= line) owner = s;
    // The most specific line of a chained TypeScript message names the field.
    report(owner[1], `fields: ${msg[msg.length - 1].trim()} (${fieldPath(lines, owner[0], line)})`);
  }
}

// The JSON path of line `at`, from the indentation of the generated literal.
function fieldPath(lines, from, at) {
  const parts = [];
  let indent = Infinity;
  for (let l = at; l > from; l--) {
    const m = /^(\s*)"([^"]+)":/.exec(lines[l]);
    if (m && m[1].length < indent) {
      parts.unshift(m[2]);
      indent = m[1].length;
    } else {
      const lead = /^(\s*)\S/.exec(lines[l]);
      if (lead && lead[1].length < indent && !m) indent = Math.min(indent, lead[1].length + 1);
    }
  }
  return parts.join(".") || "top level";
}

// ------------------------------------------------------------------------------------------
// 3. References

function podTemplate(o) {
  return WORKLOADS.has(o.kind) ? o.spec?.template : null;
}

function matches(selector, labels) {
  if (!selector || !labels) return false;
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

function matchLabelsOf(sel) {
  if (!sel) return null;
  if (sel.matchExpressions?.length) return null; // not needed by our manifests
  return sel.matchLabels ?? {};
}

function namedPorts(tpl) {
  const names = new Set();
  for (const c of [...(tpl?.spec?.containers ?? []), ...(tpl?.spec?.initContainers ?? [])])
    for (const p of c.ports ?? []) if (p.name) names.add(p.name);
  return names;
}

function checkWorkload(o, ctx, report) {
  const tpl = podTemplate(o);
  if (!tpl) return;
  const sel = matchLabelsOf(o.spec.selector);
  if (sel === null || !matches(sel, tpl.metadata?.labels))
    report(o, "spec.selector does not select the pod template's labels");
  const spec = tpl.spec ?? {};
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  for (const t of o.spec.volumeClaimTemplates ?? []) volumes.set(t.metadata?.name, { claim: true });
  const containers = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
  for (const c of containers) {
    const ports = new Set((c.ports ?? []).map((p) => p.name).filter(Boolean));
    for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
      const p = c[probe]?.httpGet?.port ?? c[probe]?.tcpSocket?.port;
      if (typeof p === "string" && !ports.has(p))
        report(o, `container ${c.name}: ${probe} uses port ${p}, which it does not declare`);
    }
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.has(m.name)) report(o, `container ${c.name}: no volume ${m.name}`);
      const v = volumes.get(m.name);
      if (m.subPath && (v?.configMap || v?.secret))
        report(o, `container ${c.name}: ${m.name} mounted with subPath never sees updates`);
    }
    for (const e of c.env ?? []) {
      const ref = e.valueFrom?.secretKeyRef;
      if (ref) ctx.needSecret(o, ref.name, ref.key);
      const cref = e.valueFrom?.configMapKeyRef;
      if (cref && !ctx.find("ConfigMap", cref.name)) report(o, `no ConfigMap ${cref.name}`);
    }
    checkSeccomp(o, spec, c, ctx, report);
  }
  for (const v of spec.volumes ?? []) {
    if (v.configMap && !ctx.find("ConfigMap", v.configMap.name))
      report(o, `volume ${v.name}: no ConfigMap ${v.configMap.name}`);
    if (v.secret) ctx.needSecret(o, v.secret.secretName);
  }
  if (o.spec.serviceName && !ctx.find("Service", o.spec.serviceName))
    report(o, `serviceName ${o.spec.serviceName}: no such Service`);
  const sa = spec.serviceAccountName;
  if (sa && !ctx.find("ServiceAccount", sa)) report(o, `no ServiceAccount ${sa}`);
}

function effectiveSeccomp(podSpec, c) {
  return c.securityContext?.seccompProfile ?? podSpec.securityContext?.seccompProfile ?? null;
}

function checkSeccomp(o, podSpec, c, ctx, report) {
  const prof = effectiveSeccomp(podSpec, c);
  if (!prof) {
    report(o, `container ${c.name}: no seccomp profile (use RuntimeDefault or Localhost)`);
    return;
  }
  if (prof.type === "Localhost") {
    const rel = prof.localhostProfile ?? "";
    const m = /^profiles\/([^/]+\.json)$/.exec(rel);
    if (!m || !fs.existsSync(path.join(SECCOMP_DIR, m[1])))
      report(o, `container ${c.name}: Localhost profile ${rel} is not one of deploy/kubernetes/seccomp`);
    if (c.securityContext?.allowPrivilegeEscalation !== false)
      report(o, `container ${c.name}: a Localhost profile without the runtime's own calls needs allowPrivilegeEscalation: false`);
  }
  if (isRingpolicyd(c)) ctx.ringpolicyd.push({ o, c, podSpec, prof });
}

function isRingpolicyd(c) {
  return /(^|\/)ringpolicyd(:|@|$)/.test(c.image ?? "") && (c.args ?? []).includes("-c");
}

function checkService(o, ctx, report) {
  if (o.kind !== "Service" || !o.spec?.selector) return;
  const pods = ctx.workloads.filter((w) => matches(o.spec.selector, podTemplate(w).metadata?.labels));
  if (pods.length === 0) {
    report(o, "selector selects no workload's pods");
    return;
  }
  for (const p of o.spec.ports ?? [])
    if (typeof p.targetPort === "string" && !pods.some((w) => namedPorts(podTemplate(w)).has(p.targetPort)))
      report(o, `port ${p.name ?? p.port}: targetPort ${p.targetPort} is no container port of the selected pods`);
}

function checkPolicyObjects(o, ctx, report) {
  if (o.kind === "HorizontalPodAutoscaler") {
    const t = o.spec?.scaleTargetRef;
    if (!t || !ctx.find(t.kind, t.name)) report(o, `scaleTargetRef ${t?.kind}/${t?.name}: not found`);
    else if (ctx.find(t.kind, t.name).spec?.replicas !== undefined)
      report(o, `${t.kind}/${t.name} sets spec.replicas: every apply would undo the autoscaler`);
  }
  if (o.kind === "PodDisruptionBudget") {
    const sel = matchLabelsOf(o.spec?.selector);
    if (!ctx.workloads.some((w) => matches(sel, podTemplate(w).metadata?.labels)))
      report(o, "selector selects no workload's pods");
  }
  if (o.kind === "NetworkPolicy") {
    const sel = matchLabelsOf(o.spec?.podSelector);
    const pods = ctx.workloads.filter((w) => matches(sel, podTemplate(w).metadata?.labels));
    if (pods.length === 0) report(o, "podSelector selects no workload's pods");
    for (const rule of o.spec?.ingress ?? [])
      for (const p of rule.ports ?? [])
        if (typeof p.port === "string" && !pods.some((w) => namedPorts(podTemplate(w)).has(p.port)))
          report(o, `ingress port ${p.port} is no container port of the selected pods`);
  }
  if (o.kind === "ServiceMonitor") {
    const sel = matchLabelsOf(o.spec?.selector);
    const svcs = ctx.objs.filter((s) => s.kind === "Service" && matches(sel, s.metadata?.labels));
    if (svcs.length === 0) report(o, "selector selects no Service");
    for (const ep of o.spec?.endpoints ?? [])
      if (ep.port && !svcs.some((s) => (s.spec?.ports ?? []).some((p) => p.name === ep.port)))
        report(o, `endpoint port ${ep.port} is no port of the selected Services`);
  }
}

// The `backend` line of the ringpolicyd configuration files mounted from ConfigMaps.
function configuredBackend(entry, ctx) {
  for (const v of entry.podSpec.volumes ?? []) {
    const cm = v.configMap && ctx.find("ConfigMap", v.configMap.name);
    for (const text of Object.values(cm?.data ?? {})) {
      const m = /^\s*backend\s*=?\s*"?(\w+)"?\s*(#.*)?$/m.exec(text);
      if (m) return m[1];
    }
  }
  return "auto";
}

function checkBackends(ctx, report) {
  for (const e of ctx.ringpolicyd) {
    const backend = configuredBackend(e, ctx);
    if (backend === "uring" && e.prof.type !== "Localhost")
      report(e.o, `container ${e.c.name}: backend = "uring" under seccomp ${e.prof.type}, which blocks io_uring: the daemon would refuse to start (use components/io-uring, or backend "epoll"/"auto")`);
  }
}

export function checkReferences(objs, report, examplesDir) {
  const ctx = {
    objs,
    workloads: objs.filter((o) => podTemplate(o)),
    ringpolicyd: [],
    examples: new Map(),
    find: (kind, name) => objs.find((o) => o.kind === kind && o.metadata?.name === name),
    needSecret(o, name, k) {
      const s = this.find("Secret", name);
      if (s) {
        if (k && !(k in (s.data ?? {})) && !(k in (s.stringData ?? {})))
          report(o, `Secret ${name} has no key ${k}`);
        return;
      }
      const ex = examplesDir && path.join(examplesDir, name);
      if (ex && fs.existsSync(ex)) {
        this.examples.set(name, ex);
        if (k && !fs.existsSync(path.join(ex, k))) report(o, `example of Secret ${name} has no ${k}`);
        return;
      }
      report(o, `no Secret ${name} (and no example in ${examplesDir ?? "--examples"})`);
    },
  };
  // An object malformed enough to break a check already has a schema problem; say so rather
  // than stop.
  const guarded = (o, fn) => {
    try {
      fn(o, ctx, report);
    } catch (e) {
      report(o, `references not checked (malformed object: ${e.message})`);
    }
  };
  for (const o of objs) {
    guarded(o, checkWorkload);
    guarded(o, checkService);
    guarded(o, checkPolicyObjects);
  }
  try {
    checkBackends(ctx, report);
  } catch (e) {
    report({}, `backend check failed on a malformed object: ${e.message}`);
  }
  return ctx;
}

// ------------------------------------------------------------------------------------------
// Configuration files for check.sh

function volumeFiles(v, ctx) {
  if (v.configMap) return ctx.find("ConfigMap", v.configMap.name)?.data ?? {};
  if (!v.secret) return null;
  const s = ctx.find("Secret", v.secret.secretName);
  if (s) {
    const out = { ...(s.stringData ?? {}) };
    for (const [k, b64] of Object.entries(s.data ?? {})) out[k] = Buffer.from(b64, "base64").toString();
    return out;
  }
  const ex = ctx.examples.get(v.secret.secretName);
  if (!ex) return {};
  const out = {};
  for (const f of fs.readdirSync(ex)) out[f] = fs.readFileSync(path.join(ex, f), "utf8");
  return out;
}

const safeName = (s) => String(s ?? "unnamed").replace(/[^\w.-]/g, "_");

export function materialize(ctx, root, report) {
  const lines = [];
  for (const e of ctx.ringpolicyd) {
    const dir = path.join(root, safeName(e.o.metadata?.name), safeName(e.c.name));
    const vols = new Map((e.podSpec.volumes ?? []).map((v) => [v.name, v]));
    const mounts = (e.c.volumeMounts ?? []).filter(
      (m) => typeof m.mountPath === "string" && m.mountPath.startsWith("/") &&
        (vols.get(m.name)?.configMap || vols.get(m.name)?.secret));
    const rewrite = (text) =>
      mounts.reduce((t, m) => t.split(m.mountPath + "/").join(path.join(dir, m.mountPath) + "/"), text);
    for (const m of mounts) {
      for (const [name, text] of Object.entries(volumeFiles(vols.get(m.name), ctx))) {
        const f = path.join(dir, m.mountPath, name);
        fs.mkdirSync(path.dirname(f), { recursive: true });
        fs.writeFileSync(f, rewrite(text));
      }
    }
    const args = e.c.args ?? [];
    const conf = args[args.indexOf("-c") + 1];
    if (typeof conf !== "string" || !conf.startsWith("/")) {
      report(e.o, `container ${e.c.name}: -c needs an absolute configuration path`);
      continue;
    }
    lines.push(`CONFIG ${ident(e.o)}/${e.c.name} ${path.join(dir, conf)}`);
  }
  return lines;
}

// ------------------------------------------------------------------------------------------

// inputs: [[file name, YAML text], ...]. Returns the problems, the object count and the
// CONFIG lines (with opts.materialize).
export async function validateTexts(inputs, opts = {}) {
  const problems = [];
  const entries = [];
  const perFile = [];
  for (const [file, text] of inputs) {
    const objs = loadObjects(file, text, problems);
    const report = (o, msg) => problems.push(`${file}: ${ident(o)}: ${msg}`);
    if (objs.length === 0) problems.push(`${file}: no objects`);
    await checkSchemas(objs, report);
    objs.forEach((o) => entries.push([o, report]));
    perFile.push([file, objs, report]);
  }
  checkStrict(entries, (msg) => problems.push(msg));
  const configs = [];
  let objects = 0;
  for (const [file, objs, report] of perFile) {
    const ctx = checkReferences(objs, report, opts.examples);
    if (opts.materialize)
      configs.push(...materialize(ctx, path.join(opts.materialize, safeName(path.basename(file, ".yaml"))), report));
    objects += objs.length;
  }
  return { problems, objects, configs };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const inputs = [];
  for (const f of a.files) {
    try {
      inputs.push([f, fs.readFileSync(f, "utf8")]);
    } catch (e) {
      console.error(`validate.mjs: ${e.message}`);
      process.exit(2);
    }
  }
  const r = await validateTexts(inputs, a);
  for (const p of r.problems) console.log(p);
  for (const c of r.configs) console.log(c);
  console.log(`validate.mjs: ${r.objects} objects in ${a.files.length} files, ${r.problems.length} problems`);
  process.exit(r.problems.length ? 1 : 0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await main();
