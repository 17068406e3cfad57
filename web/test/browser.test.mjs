// The page in a real browser (Debian's chromium through chromium-driver, driven by selenium-webdriver), against a
// running server (tools/web_test.sh starts it with the fixture models and the bundled pixel model, a bearer token,
// and max_active=1 so that a second generation of a model waits in the queue).
//   DIT_WEB_URL       the web port, e.g. http://127.0.0.1:40000/
//   DIT_METRICS_URL   the Prometheus endpoint, for the server's CANCELLED count
//   DIT_TOKEN         the bearer token
//   DIT_SCREENSHOTS   where the screenshots go (target/web-test)
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Builder, By, until } from "selenium-webdriver";
import chrome from "selenium-webdriver/chrome.js";

const URL_ = process.env.DIT_WEB_URL;
const METRICS = process.env.DIT_METRICS_URL;
const TOKEN = process.env.DIT_TOKEN ?? "";
const SHOTS = process.env.DIT_SCREENSHOTS ?? "target/web-test";
const PIXEL = process.env.DIT_PIXEL_MODEL ?? "fashion-dit"; // the bundled pixel model
assert.ok(URL_, "DIT_WEB_URL is not set (run tools/web_test.sh)");
fs.mkdirSync(SHOTS, { recursive: true });

let driver;
const results = {};

before(async () => {
  const options = new chrome.Options()
    .setChromeBinaryPath(process.env.CHROMIUM ?? "/usr/bin/chromium")
    .addArguments("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
      "--window-size=1280,1000", "--no-first-run", "--disable-extensions");
  const service = new chrome.ServiceBuilder(process.env.CHROMEDRIVER ?? "/usr/bin/chromedriver");
  driver = await new Builder().forBrowser("chrome").setChromeOptions(options).setChromeService(service).build();
  await driver.manage().setTimeouts({ script: 60_000 });
});

after(async () => {
  await driver?.quit();
  fs.writeFileSync(path.join(SHOTS, "results.json"), JSON.stringify(results, null, 2) + "\n");
  console.log("browser test measurements: " + JSON.stringify(results));
});

async function shot(name) {
  fs.writeFileSync(path.join(SHOTS, name + ".png"), Buffer.from(await driver.takeScreenshot(), "base64"));
}

const state = () => driver.executeScript("return document.body.dataset.state");

async function waitState(want, timeoutMs = 60_000) {
  const wanted = Array.isArray(want) ? want : [want];
  await driver.wait(async () => wanted.includes(await state()), timeoutMs,
    `page state ${wanted.join("|")} (now ${await state()}, status "${await text("status")}", error "${await text("error")}")`);
}

const text = (id) => driver.executeScript(`return document.getElementById(${JSON.stringify(id)}).textContent`);

async function setValue(id, value) {
  await driver.executeScript(`const e = document.getElementById(arguments[0]); e.value = arguments[1];
    e.dispatchEvent(new Event("change", { bubbles: true }));`, id, String(value));
}

async function chooseModel(name) {
  await driver.wait(async () => driver.executeScript(
    "return [...document.getElementById('model').options].some(o => o.value === arguments[0])", name), 30_000,
    `model ${name} in the picker`);
  await setValue("model", name);
  // selectModel() runs GetModel, then fills the pickers
  await driver.wait(async () => driver.executeScript(
    "return document.getElementById('model-info').textContent.length > 0 && document.getElementById('sampler').options.length > 0"),
    10_000);
  await driver.sleep(200);
}

/** Records every preview frame's fingerprint and time, and when the first result appeared (in the page's clock). */
async function watchPreviews() {
  await driver.executeScript(`
    window.__frames = []; window.__firstResultAt = undefined;
    const record = (img) => window.__frames.push({ t: performance.now(), id: img.id, step: img.dataset.step,
      fp: img.dataset.fingerprint });
    window.__obs?.disconnect();
    window.__obs = new MutationObserver((muts) => {
      for (const m of muts) {
        if (m.type === "attributes" && m.target.tagName === "IMG" && m.attributeName === "data-fingerprint") record(m.target);
        if (m.type === "childList") for (const n of m.addedNodes) {
          if (n.tagName === "FIGURE" && window.__firstResultAt === undefined) window.__firstResultAt = performance.now();
        }
      }
    });
    window.__obs.observe(document.getElementById("previews"), { subtree: true, attributes: true,
      attributeFilter: ["data-fingerprint"] });
    window.__obs.observe(document.getElementById("results"), { childList: true });`);
}

async function metric(model, code) {
  const res = await fetch(METRICS);
  const body = await res.text();
  const line = body.split("\n").find((l) => l.startsWith("dit_requests_total{")
    && l.includes(`code="${code}"`) && l.includes(`model="${model}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

test("the page loads offline-capable assets from the server only and asks for the token", async () => {
  await driver.get(URL_);
  // every script and style comes from this origin (no CDN)
  const foreign = await driver.executeScript(`return [...document.querySelectorAll("script[src],link[href]")]
    .map(e => new URL(e.src || e.href, location.href)).filter(u => u.origin !== location.origin).map(String)`);
  assert.deepEqual(foreign, []);
  if (TOKEN) {
    await waitState("error");
    assert.match(await text("error"), /Unauthenticated/);
    await shot("01-unauthenticated");
    await driver.findElement(By.css("details summary")).click();
    await driver.findElement(By.id("token")).sendKeys(TOKEN);
    await setValue("token", TOKEN);
  }
  await waitState("idle", 30_000);
  const models = await driver.executeScript("return [...document.getElementById('model').options].map(o => o.value)");
  assert.ok(models.includes("pixel-tiny"), `models: ${models}`);
  assert.ok(models.includes(PIXEL), `models: ${models}`);
  await shot("02-loaded");
});

test("generate: progress per step, at least three different preview frames before the result, seeds and download", async () => {
  await chooseModel(PIXEL);
  const cls = await driver.executeScript("return document.getElementById('class').options[2].value");
  await setValue("class", cls);
  await setValue("steps", 50);
  await setValue("seed", 1234);
  await setValue("count", 2);
  await setValue("preview-interval", 1);
  await watchPreviews();
  await driver.findElement(By.id("generate")).click();
  await driver.wait(until.elementLocated(By.css("#previews img")), 30_000);
  await shot("03-preview");
  await waitState("done", 120_000);
  await shot("04-result");
  const { frames, firstResultAt, stats } = await driver.executeScript(
    "return { frames: window.__frames, firstResultAt: window.__firstResultAt, stats: window.ditStats }");
  const before = frames.filter((f) => f.id === "preview-0" && f.t < firstResultAt);
  const distinct = new Set(before.map((f) => f.fp));
  assert.ok(distinct.size >= 3, `distinct preview frames of image 0 before the result: ${distinct.size} (${before.length} frames)`);
  results.coldAcceptedMs = Math.round(stats.acceptedAt - stats.generateAt);
  results.coldFirstStepSeconds = stats.firstStepSeconds; // the server's own time for the first denoising step
  results.firstPreviewMs = { [`${PIXEL} (first generation of the server)`]: Math.round(stats.firstPreviewAt - stats.generateAt) };
  results.previewFramesBeforeResult = { [PIXEL]: distinct.size };
  // progress reached the last step
  assert.equal(await driver.executeScript("return document.getElementById('progress').value"), 50);
  // results: one figure per image with its seed and a download link of a PNG
  const figures = await driver.executeScript(`return [...document.querySelectorAll("#results figure")]
    .map(f => ({ seed: f.dataset.seed, index: f.dataset.index, href: f.querySelector("a").href,
                 download: f.querySelector("a").download }))`);
  assert.deepEqual(figures.map((f) => f.seed).sort(), ["1234", "1235"]);
  assert.ok(figures.every((f) => f.href.startsWith("blob:") && f.download.endsWith(".png")));
  const magic = await driver.executeAsyncScript(`const done = arguments[arguments.length - 1];
    fetch(document.querySelector("#results a").href).then(r => r.arrayBuffer())
      .then(b => done([...new Uint8Array(b).slice(0, 4)]));`);
  assert.deepEqual(magic, [0x89, 0x50, 0x4e, 0x47]);
});

test("time from Generate to the first preview (measured and reported, not asserted)", async () => {
  // the run above was the bundled model's first on this server (cold: JIT, first-touch memory); these are warm
  for (const [model, steps] of [[PIXEL, 50], ["pixel-tiny", 20]]) {
    await chooseModel(model);
    await setValue("steps", steps);
    await setValue("count", 1);
    await setValue("preview-interval", 1);
    const ms = [];
    for (let i = 0; i < 3; i++) {
      await driver.findElement(By.id("generate")).click();
      await waitState("done", 120_000);
      const s = await driver.executeScript("return window.ditStats");
      ms.push(Math.round(s.firstPreviewAt - s.generateAt));
    }
    results.firstPreviewMs[model === PIXEL ? `${model} (warm)` : model] = ms;
  }
});

test("queue position while queued, then Stop cancels the call and the server counts it CANCELLED", async () => {
  await chooseModel(PIXEL);
  // a long generation of the same model from another client keeps the model's only slot (max_active=1) busy
  const blocker = new AbortController();
  const blocking = fetch(new URL("/v1/images/generations", URL_), {
    method: "POST", signal: blocker.signal,
    headers: { "content-type": "application/json", ...(TOKEN ? { authorization: `Bearer ${TOKEN}` } : {}) },
    body: JSON.stringify({ model: PIXEL, prompt: "0", steps: 1000, n: 4 }),
  }).catch(() => null);
  await driver.sleep(1500);
  const cancelledBefore = await metric(PIXEL, "CANCELLED");

  await setValue("steps", 1000);
  await setValue("count", 2);
  await setValue("preview-interval", 5);
  await driver.findElement(By.id("generate")).click();
  await waitState("queued", 30_000);
  assert.match(await text("status"), /Queued: 1 ahead/);
  await shot("05-queued");
  blocker.abort(); // the other client goes away: its generation is cancelled, ours starts
  await blocking;
  await driver.wait(async () => (await metric(PIXEL, "CANCELLED")) >= cancelledBefore + 1, 20_000,
    "the other client's cancellation counted");
  await waitState("running", 60_000);
  await driver.wait(async () => (await driver.executeScript("return document.getElementById('progress').value")) >= 3,
    60_000, "three steps done");
  await shot("06-running");
  const counted = await metric(PIXEL, "CANCELLED");
  await driver.findElement(By.id("stop")).click();
  await waitState("stopped", 10_000);
  await driver.wait(async () => (await metric(PIXEL, "CANCELLED")) >= counted + 1, 20_000,
    "the server counted the stopped call CANCELLED");
  const doneSteps = await driver.executeScript("return document.getElementById('progress').value");
  assert.ok(doneSteps < 1000, `stopped before the end (${doneSteps} steps)`);
  await shot("07-stopped");
  results.stoppedAfterSteps = doneSteps;
});

test("errors are shown with the status message", async () => {
  await chooseModel("pixel-tiny");
  await setValue("count", 100000); // over max_images: the validator's INVALID_ARGUMENT
  await setValue("steps", 8);
  await driver.findElement(By.id("generate")).click();
  await waitState("error", 30_000);
  const err = await text("error");
  assert.match(err, /^InvalidArgument: .*num_images/);
  await shot("08-error");
  await setValue("count", 1);
});

test("a text model takes a prompt: the bundled shapes model, previews and its result", async () => {
  const text = await driver.executeScript(`return [...document.getElementById('model').options]
    .filter(o => o.textContent.includes("(text,")).map(o => o.value)`);
  assert.ok(text.includes("shapes"), `the bundled text model is listed as a text model (text models: ${text})`);
  await chooseModel("shapes");
  assert.equal(await driver.executeScript("return document.getElementById('prompt-row').hidden"), false);
  assert.equal(await driver.executeScript("return document.getElementById('class-row').hidden"), true);
  await setValue("prompt", "a red cube left of a blue sphere");
  await setValue("steps", 20);
  await setValue("seed", 3);
  await setValue("count", 1);
  await setValue("preview-interval", 1);
  await watchPreviews();
  await driver.findElement(By.id("generate")).click();
  await waitState("done", 120_000);
  await shot("09-text-model");
  const { frames, firstResultAt } = await driver.executeScript(
    "return { frames: window.__frames, firstResultAt: window.__firstResultAt }");
  const distinct = new Set(frames.filter((f) => f.id === "preview-0" && f.t < firstResultAt).map((f) => f.fp));
  assert.ok(distinct.size >= 3, `distinct preview frames of the prompt's image before the result: ${distinct.size}`);
  assert.equal(await driver.executeScript("return document.getElementById('progress').value"), 20);
  const seeds = await driver.executeScript(
    "return [...document.querySelectorAll('#results figure')].map(f => f.dataset.seed)");
  assert.equal(seeds[0], "3", `the newest result first, with its seed (results: ${seeds})`);
});
