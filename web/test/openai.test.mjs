// The OpenAI Images API on the web port, through the official `openai` npm client (pinned in package-lock.json),
// against the server that tools/web_test.sh starts (DIT_WEB_URL, DIT_METRICS_URL, DIT_TOKEN). The bytes are
// compared with a gRPC-Web call of the same request (the page's generated client, in Node).
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { DiffusionService, GenerateRequestSchema } from "../src/gen/dit/v1/dit_pb.js";

const URL_ = process.env.DIT_WEB_URL;
const METRICS = process.env.DIT_METRICS_URL;
const TOKEN = process.env.DIT_TOKEN || "no-token";
assert.ok(URL_, "DIT_WEB_URL is not set (run tools/web_test.sh)");

const openai = new OpenAI({ apiKey: TOKEN, baseURL: new URL("/v1", URL_).toString(), maxRetries: 0 });
const grpcWeb = createClient(DiffusionService, createGrpcWebTransport({
  baseUrl: URL_.replace(/\/$/, ""),
  interceptors: [(next) => async (req) => { req.header.set("authorization", `Bearer ${TOKEN}`); return next(req); }],
}));

async function metric(model, code) {
  const body = await (await fetch(METRICS)).text();
  const line = body.split("\n").find((l) => l.startsWith("dit_requests_total{")
    && l.includes(`code="${code}"`) && l.includes(`model="${model}"`));
  return line ? Number(line.split(" ").pop()) : 0;
}

const isPng = (b64) => Buffer.from(b64, "base64").subarray(0, 4).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47]));

test("GET /v1/models lists the served models", async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.ok(ids.includes("pixel-tiny") && ids.includes("latent-tiny"), `models: ${ids}`);
  const one = await openai.models.retrieve("pixel-tiny");
  assert.equal(one.id, "pixel-tiny");
  assert.equal(one.object, "model");
});

test("images.generate (b64_json): the bytes of a gRPC-Web call with the same seed, counted like one", async () => {
  const okBefore = await metric("pixel-tiny", "OK");
  const res = await openai.images.generate({
    model: "pixel-tiny", prompt: "class-3", n: 2, size: "16x16", response_format: "b64_json",
    seed: 4242, steps: 8, sampler: "ddim", guidance_scale: 4,
  });
  assert.equal(res.data.length, 2);
  assert.ok(res.data.every((d) => isPng(d.b64_json)));
  assert.deepEqual(res.data.map((d) => d.seed), [4242, 4243]);

  const pngs = [];
  for await (const ev of grpcWeb.generate(create(GenerateRequestSchema, {
    model: "pixel-tiny", label: { case: "className", value: "class-3" }, numImages: 2, seed: 4242n, steps: 8,
    sampler: 2, guidanceScale: 4,
  }))) {
    if (ev.event.case === "result") pngs[ev.event.value.imageIndex] = Buffer.from(ev.event.value.png).toString("base64");
  }
  assert.deepEqual(res.data.map((d) => d.b64_json), pngs);
  assert.equal(await metric("pixel-tiny", "OK"), okBefore + 2);
});

test("images.generate with stream: partial images (from the previews) before the completed image", async () => {
  const stream = await openai.images.generate({
    model: "pixel-tiny", prompt: "CLASS-5", n: 1, size: "auto", stream: true, partial_images: 3, steps: 12,
    seed: 99,
  });
  const events = [];
  for await (const ev of stream) events.push(ev);
  const types = events.map((e) => e.type);
  const partials = events.filter((e) => e.type === "image_generation.partial_image");
  // 1 to 3: the service keeps only the newest unsent preview of an image, so a fast model on a busy machine may
  // send fewer partial images than asked (OpenAI's API may too)
  assert.ok(partials.length >= 1 && partials.length <= 3, `events: ${types}`);
  assert.deepEqual(partials.map((e) => e.partial_image_index), [...partials.keys()]);
  assert.deepEqual(types.slice(0, partials.length), partials.map(() => "image_generation.partial_image"));
  assert.ok(partials.every((e) => isPng(e.b64_json)));
  assert.equal(types.at(-1), "image_generation.completed");
  assert.equal(types.filter((t) => t === "image_generation.completed").length, 1);
  assert.ok(isPng(events.at(-1).b64_json));
  assert.equal(events.at(-1).size, "16x16");

  // partial_images 0: the completed image only
  const plain = [];
  for await (const ev of await openai.images.generate({ model: "pixel-tiny", prompt: "1", stream: true, steps: 4 })) {
    plain.push(ev.type);
  }
  assert.deepEqual(plain, ["image_generation.completed"]);
});

test("errors: OpenAI's error JSON with the matching HTTP status", async () => {
  const nf = await metric("unknown", "NOT_FOUND");
  await assert.rejects(openai.images.generate({ model: "no-such-model", prompt: "x" }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && /not found/.test(e.message));
  assert.equal(await metric("unknown", "NOT_FOUND"), nf + 1, "counted by the service like a gRPC call");

  await assert.rejects(openai.images.generate({ model: "pixel-tiny", prompt: "class-1", size: "1024x1024" }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "size");
  await assert.rejects(openai.images.generate({ model: "pixel-tiny", prompt: "class-1", n: 100000 }),
    (e) => e instanceof OpenAI.BadRequestError && /num_images/.test(e.message));
  await assert.rejects(openai.images.generate({ model: "pixel-tiny", prompt: "a cat" }),
    (e) => e instanceof OpenAI.BadRequestError && /class/.test(e.message));
  await assert.rejects(openai.images.generate({ model: "pixel-tiny", prompt: "1", bogus: 1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === "unknown_parameter");
  await assert.rejects(openai.images.generate({ model: "pixel-tiny", prompt: "1", response_format: "url" }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "response_format");
  await assert.rejects(openai.images.generate({ model: "pixel-tiny", prompt: "1", stream: true, partial_images: 4 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "partial_images");
  if (process.env.DIT_TOKEN) {
    const wrong = new OpenAI({ apiKey: "wrong", baseURL: new URL("/v1", URL_).toString(), maxRetries: 0 });
    await assert.rejects(wrong.images.generate({ model: "pixel-tiny", prompt: "1" }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
  }
});
