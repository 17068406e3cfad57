// The page on the web port: a gRPC-Web client of dit.v1.DiffusionService (code generated from proto/ by
// web/build.sh), bundled with its dependencies; nothing is loaded from elsewhere.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { DiffusionService, GenerateRequestSchema, SamplerSchema } from "./gen/dit/v1/dit_pb.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "ditserve.token";

$("token").value = localStorage.getItem(TOKEN_KEY) ?? "";
$("token").addEventListener("change", () => {
  localStorage.setItem(TOKEN_KEY, $("token").value.trim());
  loadModels();
});

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [
    (next) => async (req) => {
      const token = $("token").value.trim();
      if (token) req.header.set("authorization", "Bearer " + token);
      return next(req);
    },
  ],
});
const client = createClient(DiffusionService, transport);

/** Timings of the last generation (performance.now() milliseconds), for people and for the browser test. */
window.ditStats = { generations: 0 };

const samplerName = (n) => {
  const v = SamplerSchema.values.find((x) => x.number === n);
  return v ? v.name.replace(/^SAMPLER_/, "").toLowerCase() : String(n);
};

function setState(state, text) {
  document.body.dataset.state = state;
  if (text !== undefined) $("status").textContent = text;
}

function showError(err) {
  const e = ConnectError.from(err);
  $("error").hidden = false;
  $("error").textContent = `${Code[e.code] ?? e.code}: ${e.rawMessage}`;
  $("error").dataset.code = Code[e.code] ?? String(e.code);
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
  delete $("error").dataset.code;
}

let models = [];
let current = null;

async function loadModels() {
  try {
    const res = await client.listModels({});
    models = res.models;
    const select = $("model");
    const previous = select.value;
    select.replaceChildren(...models.map((m) => new Option(`${m.name} (${conditioning(m)}, ${m.outputImageSize || m.imageSize} px)`, m.name)));
    if (models.some((m) => m.name === previous)) select.value = previous;
    $("server").textContent = `${models.length} model(s)`;
    clearError();
    await selectModel();
    setState("idle", "Idle");
  } catch (err) {
    showError(err);
    setState("error", "Cannot list the models");
  }
}

const conditioning = (m) => m.conditioning || "class"; // servers before text models: class labels

async function selectModel() {
  const name = $("model").value;
  if (!name) return;
  current = await client.getModel({ name });
  const m = current;
  const text = conditioning(m) === "text";
  $("class-row").hidden = text;
  $("prompt-row").hidden = !text;
  $("negative-row").hidden = !text;
  $("class").replaceChildren(
    ...m.classes.map((c) => new Option(`${c.id}: ${c.name}`, c.name)),
    new Option("(unconditional)", ""),
  );
  const samplers = m.samplers.length ? m.samplers : [m.defaults?.sampler ?? 0];
  $("sampler").replaceChildren(...samplers.map((s) => new Option(samplerName(s), String(s))));
  if (m.defaults) {
    $("sampler").value = String(m.defaults.sampler);
    $("steps").value = m.defaults.steps || "";
    $("guidance").value = m.defaults.guidanceScale ?? "";
  }
  $("model-info").textContent = `${m.description} · ${m.family || "dit"}, ${m.space}, backend ${m.backend}`;
}

$("model").addEventListener("change", () => selectModel().catch(showError));

let running = null; // the AbortController of the call in flight

function request() {
  const m = current;
  const text = conditioning(m) === "text";
  const seed = $("seed").value.trim();
  const guidance = $("guidance").value.trim();
  const cls = $("class").value;
  const unconditional = !text && cls === "";
  return create(GenerateRequestSchema, {
    model: m.name,
    numImages: Number($("count").value) || 1,
    seed: seed ? BigInt(seed) : 0n,
    steps: Number($("steps").value) || 0,
    sampler: Number($("sampler").value) || 0,
    guidanceScale: guidance && !unconditional ? Number(guidance) : undefined,
    previewInterval: Number($("preview-interval").value) || 0,
    label: text ? { case: undefined } : unconditional ? { case: "unconditional", value: true }
      : { case: "className", value: cls },
    prompt: text ? $("prompt").value : "",
    negativePrompt: text && $("negative").value ? $("negative").value : undefined,
  });
}

function previewImage(index) {
  let img = $(`preview-${index}`);
  if (!img) {
    img = document.createElement("img");
    img.id = `preview-${index}`;
    img.alt = `preview of image ${index}`;
    $("previews").append(img);
  }
  return img;
}

/** A short content hash (FNV-1a), so that frames can be told apart without decoding them. */
function fingerprint(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return `${bytes.length}:${(h >>> 0).toString(16)}`;
}

function pngUrl(bytes) {
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

async function generate(event) {
  event.preventDefault();
  if (running || !current) return;
  const stats = (window.ditStats = { generations: window.ditStats.generations + 1, generateAt: performance.now(),
    previewFrames: 0 });
  clearError();
  $("previews").replaceChildren();
  $("timing").textContent = "";
  $("progress").value = 0;
  const controller = new AbortController();
  running = controller;
  $("generate").disabled = true;
  $("stop").disabled = false;
  setState("submitting", "Submitting…");
  const model = current.name;
  try {
    for await (const ev of client.generate(request(), { signal: controller.signal })) {
      const v = ev.event.value;
      switch (ev.event.case) {
        case "accepted":
          stats.acceptedAt = performance.now();
          stats.requestId = v.requestId;
          $("progress").max = v.steps;
          setState(v.queuePosition > 0 ? "queued" : "running", v.queuePosition > 0
            ? `Queued: ${v.queuePosition} ahead` : `Running: 0 / ${v.steps} steps`);
          break;
        case "queued":
          setState("queued", `Queued: ${v.queuePosition} ahead`);
          break;
        case "progress":
          if (stats.firstStepSeconds === undefined) {
            stats.firstProgressAt = performance.now();
            stats.firstStepSeconds = v.stepSeconds;
          }
          $("progress").max = v.totalSteps;
          $("progress").value = v.step;
          setState("running", `Running: ${v.step} / ${v.totalSteps} steps (${v.elapsedSeconds.toFixed(1)} s)`);
          break;
        case "preview": {
          const img = previewImage(v.imageIndex);
          const old = img.src;
          img.src = pngUrl(v.png);
          img.dataset.step = String(v.step);
          img.dataset.fingerprint = fingerprint(v.png);
          img.title = `step ${v.step}`;
          if (old) URL.revokeObjectURL(old);
          stats.previewFrames++;
          if (stats.firstPreviewAt === undefined) {
            stats.firstPreviewAt = performance.now();
            $("timing").textContent = `first preview ${(stats.firstPreviewAt - stats.generateAt).toFixed(0)} ms after Generate`;
          }
          break;
        }
        case "result": {
          stats.resultAt ??= performance.now();
          const url = pngUrl(v.png);
          const fig = document.createElement("figure");
          fig.dataset.seed = v.seed.toString();
          fig.dataset.index = String(v.imageIndex);
          const img = document.createElement("img");
          img.src = url;
          img.alt = `image ${v.imageIndex}, seed ${v.seed}`;
          const cap = document.createElement("figcaption");
          const link = document.createElement("a");
          link.href = url;
          link.download = `${model}-${v.seed}.png`;
          link.textContent = "download";
          cap.append(`#${v.imageIndex} · seed ${v.seed} · `, link);
          fig.append(img, cap);
          $("results").prepend(fig);
          break;
        }
      }
    }
    stats.doneAt = performance.now();
    setState("done", `Done in ${((stats.doneAt - stats.generateAt) / 1000).toFixed(2)} s`);
  } catch (err) {
    if (controller.signal.aborted) {
      setState("stopped", "Stopped");
    } else {
      showError(err);
      setState("error", "Failed");
    }
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

$("form").addEventListener("submit", generate);
$("stop").addEventListener("click", () => running?.abort());

loadModels();
