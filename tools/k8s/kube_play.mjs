// Writes the podman variant of deploy/k8s/ for tools/k8s/kube_play_test.sh (stdout: YAML for `podman kube play`):
// the ConfigMap ditserve-config and the Deployment as they are, except what podman 4.3 cannot do or what would clash
// with other runs on the same machine:
//   - names: the Deployment and the ConfigMap get the run's name (podman makes a machine-wide named volume per
//     ConfigMap, and names the pod after the Deployment);
//   - one replica, the image under test, and the two container ports published on 127.0.0.1 at free host ports
//     (podman publishes a containerPort on the host as it is when no hostPort is given);
//   - the Secret volume becomes a hostPath folder holding the same `tokens` file: podman 4.3 neither plays a Secret
//     object nor fills a secret volume from a podman secret (the folder stayed empty here).
// Everything else (args, securityContext, resources, read-only root with the /tmp emptyDir, the config file path,
// the tokens path) is played as written. podman 4.3 ignores the gRPC probes, the preStop hook and
// terminationGracePeriodSeconds (its containers stop with a 10 s timeout): the test stops the server's container
// with `-t terminationGracePeriodSeconds` itself (tools/k8s/KubePlayCheck.java says why not the pod).
// Usage: node kube_play.mjs --name RUN --image IMAGE --grpc-port P --metrics-port P --tokens-dir DIR [DIR_OF_MANIFESTS]
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments, stringify } from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const opts = {};
const rest = [];
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (a.startsWith("--")) opts[a.slice(2)] = process.argv[++i];
  else rest.push(a);
}
for (const k of ["name", "image", "grpc-port", "metrics-port", "tokens-dir"]) {
  if (!opts[k]) { console.error(`kube_play.mjs: --${k} is required`); process.exit(2); }
}
const dir = path.resolve(rest[0] ?? path.join(HERE, "../../deploy/k8s"));
const objects = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()
  .flatMap((f) => parseAllDocuments(readFileSync(path.join(dir, f), "utf8"), { version: "1.1" }).map((d) => d.toJS()))
  .filter(Boolean);
const dep = objects.find((o) => o.kind === "Deployment");
const pod = dep.spec.template.spec;
const c = pod.containers.find((x) => x.name === "ditserve");
const cmVolume = pod.volumes.find((v) => v.configMap);
const cm = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === cmVolume.configMap.name);
const secretVolume = pod.volumes.find((v) => v.secret);

cm.metadata.name = `${opts.name}-config`;
cmVolume.configMap.name = cm.metadata.name;
delete secretVolume.secret;
secretVolume.hostPath = { path: path.resolve(opts["tokens-dir"]), type: "Directory" };
dep.metadata.name = opts.name;
dep.spec.replicas = 1;
c.image = opts.image;
c.imagePullPolicy = "Never";
const hostPorts = { grpc: Number(opts["grpc-port"]), metrics: Number(opts["metrics-port"]) };
for (const p of c.ports) {
  if (!(p.name in hostPorts)) { console.error(`kube_play.mjs: unexpected port ${p.name}`); process.exit(2); }
  p.hostPort = hostPorts[p.name];
  p.hostIP = "127.0.0.1";
}
process.stdout.write([cm, dep].map((o) => stringify(o, { lineWidth: 0 })).join("---\n"));
