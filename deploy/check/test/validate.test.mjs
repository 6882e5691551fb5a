// validate.test.mjs: deploy/check/validate.mjs finds what it claims to find. Every case takes the
// rendered dev or production overlay, breaks one thing, and expects exactly the problem that
// names it; the untouched overlays must have none. All variants go through one validateTexts
// call, because building the TypeScript program for the strict-field check is the slow part.
// Run: node --test deploy/check/test/ (needs kubectl and deploy/check/node_modules).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import { validateTexts } from "../validate.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const K8S = path.join(HERE, "..", "..", "kubernetes");
const EXAMPLES = path.join(K8S, "overlays", "production", "examples");

const render = (overlay) =>
  execFileSync("kubectl", ["kustomize", path.join(K8S, "overlays", overlay)], { encoding: "utf8" });
const RENDERED = { dev: render("dev"), production: render("production") };
const parse = (text) => YAML.parseAllDocuments(text).map((d) => d.toJS()).filter(Boolean);
const find = (objs, kind, name) => objs.find((o) => o.kind === kind && o.metadata.name === name);
const daemon = (objs) =>
  find(objs, "Deployment", "ringpolicyd").spec.template.spec.containers.find((c) => c.name === "ringpolicyd");

// name → [overlay, mutation of the parsed objects (or of the text), expected problem]
const CASES = {
  "unknown field": ["dev", (o) => { daemon(o).readinesProbe = daemon(o).readinessProbe; },
    /Deployment\/ringpolicyd: fields: .*readinesProbe/],
  "wrong type": ["dev", (o) => { daemon(o).ports[0].containerPort = "12345"; },
    /Deployment\/ringpolicyd: schema: .*containerPort must be integer/],
  "bad enum": ["dev", (o) => { find(o, "Service", "ringpolicyd").spec.ports[0].protocol = "tcp"; },
    /Service\/ringpolicyd: (schema|fields): .*(protocol|"tcp")/],
  "missing required field": ["dev", (o) => { delete daemon(o).name; },
    /Deployment\/ringpolicyd: (schema|fields): .*name/],
  "unknown kind": ["dev", (o) => { o.push({ apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "w" } }); },
    /Widget\/w: no schema for example.com\/v1\/Widget/],
  "YAML syntax": ["dev", null, /YAML: /, (t) => t.replace("kind: Deployment", "kind: [Deployment")],
  "selector selects nothing": ["dev", (o) => { find(o, "Deployment", "memcached").spec.selector.matchLabels["app.kubernetes.io/name"] = "memcache"; },
    /Deployment\/memcached: spec.selector does not select/],
  "service targetPort name": ["dev", (o) => { find(o, "Service", "ringpolicyd").spec.ports[1].targetPort = "acounting"; },
    /Service\/ringpolicyd: port accounting: targetPort acounting/],
  "probe port name": ["dev", (o) => { daemon(o).readinessProbe.httpGet.port = "metric"; },
    /readinessProbe uses port metric/],
  "network policy port": ["dev", (o) => { find(o, "NetworkPolicy", "ringpolicyd").spec.ingress[0].ports[0].port = "polic"; },
    /NetworkPolicy\/ringpolicyd: ingress port polic/],
  "missing ConfigMap": ["dev", (o) => { o.splice(o.indexOf(find(o, "ConfigMap", "ringpolicyd-config")), 1); },
    /volume config: no ConfigMap ringpolicyd-config/],
  "missing Secret": ["production", (o) => { find(o, "Deployment", "ringpolicyd").spec.template.spec.volumes[1].secret.secretName = "other-db"; },
    /no Secret other-db/],
  "subPath mount": ["dev", (o) => { daemon(o).volumeMounts[0].subPath = "mtpolicyd.conf"; },
    /config mounted with subPath never sees updates/],
  "autoscaler target": ["dev", (o) => { find(o, "HorizontalPodAutoscaler", "ringpolicyd").spec.scaleTargetRef.name = "ringpolicy"; },
    /scaleTargetRef Deployment\/ringpolicy: not found/],
  "replicas under an autoscaler": ["dev", (o) => { find(o, "Deployment", "ringpolicyd").spec.replicas = 3; },
    /sets spec.replicas/],
  "Localhost profile needs no-new-privileges": ["production", (o) => { daemon(o).securityContext.allowPrivilegeEscalation = true; },
    /needs allowPrivilegeEscalation: false/],
  "unknown Localhost profile": ["production", (o) => { daemon(o).securityContext.seccompProfile.localhostProfile = "profiles/other.json"; },
    /Localhost profile profiles\/other.json is not one of/],
  "uring without a profile": ["dev", (o) => {
    const cm = find(o, "ConfigMap", "ringpolicyd-config");
    cm.data["site.conf"] = cm.data["site.conf"].replace('backend = "epoll"', 'backend = "uring"');
  }, /backend = "uring" under seccomp RuntimeDefault/],
  "ServiceMonitor port": ["production", (o) => { find(o, "ServiceMonitor", "ringpolicyd").spec.endpoints[0].port = "metric"; },
    /ServiceMonitor\/ringpolicyd: endpoint port metric/],
  "ServiceMonitor unknown field": ["production", (o) => { find(o, "ServiceMonitor", "ringpolicyd").spec.endpoints[0].intervall = "15s"; },
    /ServiceMonitor\/ringpolicyd: fields: .*intervall/],
  "no seccomp profile": ["dev", (o) => { delete find(o, "Deployment", "memcached").spec.template.spec.securityContext.seccompProfile; },
    /Deployment\/memcached: container memcached: no seccomp profile/],
};

const inputs = [["dev.yaml", RENDERED.dev], ["production.yaml", RENDERED.production]];
for (const [name, [overlay, mutate, , textMutate]] of Object.entries(CASES)) {
  let text = RENDERED[overlay];
  if (mutate) {
    const objs = parse(text);
    mutate(objs);
    text = objs.map((o) => YAML.stringify(o)).join("---\n");
  }
  if (textMutate) text = textMutate(text);
  inputs.push([`${name}.yaml`, text]);
}
const mounts = fs.mkdtempSync(path.join(os.tmpdir(), "rpd-validate-test."));
const result = await validateTexts(inputs, { examples: EXAMPLES, materialize: mounts });
const problemsOf = (file) => result.problems.filter((p) => p.startsWith(`${file}: `));

test("the overlays as committed have no problem", () => {
  assert.deepEqual(problemsOf("dev.yaml"), []);
  assert.deepEqual(problemsOf("production.yaml"), []);
});

for (const [name, [, , want]] of Object.entries(CASES)) {
  test(`finds: ${name}`, () => {
    const got = problemsOf(`${name}.yaml`);
    assert.ok(got.some((p) => want.test(p)), `wanted ${want}, got:\n${got.join("\n")}`);
    // One break, one kind of complaint: nothing unrelated fires. (Not for a YAML error: the
    // document it drops leaves the objects that refer to it dangling, which is reported too.)
    if (name !== "YAML syntax")
      assert.ok(got.length <= 3, `too many problems for one break:\n${got.join("\n")}`);
  });
}

test("materialised configuration: mounts and includes line up", () => {
  const line = result.configs.find((c) => c.includes(`${path.sep}production${path.sep}`));
  assert.ok(line, result.configs.join("\n"));
  const conf = line.split(" ")[2];
  const main = fs.readFileSync(conf, "utf8");
  const site = /^<<include (\S+)>>$/m.exec(main);
  assert.ok(site && fs.existsSync(site[1]), "site.conf include resolves");
  const secret = /<<include (\S+)>>/.exec(fs.readFileSync(site[1], "utf8"));
  assert.ok(secret && fs.existsSync(secret[1]), "the Secret's db.conf include resolves");
  assert.match(fs.readFileSync(secret[1], "utf8"), /password = /);
  fs.rmSync(mounts, { recursive: true, force: true });
});
