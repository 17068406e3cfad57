#!/usr/bin/env python3
"""A Python client for the DiT server using only Debian's python3-grpcio and python3-protobuf.

No generated code: message classes are built at run time from the descriptor set that the Maven build writes
(proto/target/generated-resources/protobuf/descriptor-sets/dit.protoset), so this works with any protobuf runtime.

  /usr/bin/python3 tools/clients/python/dit_client.py --target localhost:50051 --model fashion-dit \
      --label Sneaker --count 2 --seed 5 --out out/

Latent models: --format png,tensor,image-tensor (repeatable or comma-separated; default png) also saves the latent
(MODEL-SEED.tensor.4x32x32.f32) and the decoded float image (MODEL-SEED.image.3x256x256.f32) as raw little-endian
float32 with the shape in the name, like the Java client; --previews K saves a preview frame every K steps
(MODEL-SEED-stepNNNN.png) and --preview-decoder linear|tiny|full picks how they are rendered. --sampler
ddpm|ddim|dpmpp-2m picks the sampler (default: the model's).
"""
import argparse
import os
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTOSET = os.path.join(HERE, "..", "..", "..", "proto", "target", "generated-resources", "protobuf",
                                "descriptor-sets", "dit.protoset")
SERVICE = "dit.v1.DiffusionService"


class DitClient:
    def __init__(self, target, protoset=DEFAULT_PROTOSET):
        with open(protoset, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            self.pool.Add(fd)
        self.factory = message_factory.MessageFactory(self.pool)
        self.channel = grpc.insecure_channel(target)

    def message(self, name):
        return self.factory.GetPrototype(self.pool.FindMessageTypeByName("dit.v1." + name))

    def enum(self, enum_type, name):
        """The number of an enum value, e.g. enum("OutputFormat", "OUTPUT_FORMAT_PNG") == 1."""
        return self.pool.FindEnumTypeByName("dit.v1." + enum_type).values_by_name[name].number

    def enum_name(self, enum_type, number):
        values = self.pool.FindEnumTypeByName("dit.v1." + enum_type).values_by_number
        return values[number].name if number in values else str(number)

    def _unary(self, method, req_type, resp_type, **fields):
        call = self.channel.unary_unary(f"/{SERVICE}/{method}", request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=self.message(resp_type).FromString)
        return call(self.message(req_type)(**fields))

    def list_models(self):
        return self._unary("ListModels", "ListModelsRequest", "ListModelsResponse").models

    def generate(self, **fields):
        """Yields GenerateEvent messages; raises grpc.RpcError with the server's status on failure."""
        call = self.channel.unary_stream(f"/{SERVICE}/Generate", request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=self.message("GenerateEvent").FromString)
        return call(self.message("GenerateRequest")(**fields))


FORMATS = {"png": "OUTPUT_FORMAT_PNG", "tensor": "OUTPUT_FORMAT_TENSOR", "image-tensor": "OUTPUT_FORMAT_IMAGE_TENSOR"}
SAMPLERS = {"ddpm": "SAMPLER_DDPM", "ddim": "SAMPLER_DDIM", "dpmpp-2m": "SAMPLER_DPMPP_2M", "euler": "SAMPLER_EULER",
            "heun": "SAMPLER_HEUN", "euler-maruyama": "SAMPLER_EULER_MARUYAMA"}
PREVIEW_DECODERS = {"linear": "PREVIEW_DECODER_LINEAR", "tiny": "PREVIEW_DECODER_TINY", "full": "PREVIEW_DECODER_FULL"}


def parse_formats(values):
    """["png,tensor", "image-tensor"] -> ["png", "tensor", "image-tensor"], in order, without repeats; default png."""
    out = []
    for v in values or ["png"]:
        for f in v.split(","):
            f = f.strip().lower().replace("_", "-")
            if f not in FORMATS:
                raise argparse.ArgumentTypeError(f"--format: expected png, tensor or image-tensor, got '{f}'")
            if f not in out:
                out.append(f)
    return out


def save_tensor(out_dir, stem, kind, tensor):
    """Writes a FloatTensor as raw little-endian float32 (as sent) to STEM.KIND.CxHxW.f32; returns the path."""
    shape = list(tensor.shape)
    n = 1
    for d in shape:
        n *= d
    if not shape or len(tensor.data) != 4 * n:
        raise ValueError(f"{len(tensor.data)} bytes for a float32 tensor of shape {shape}")
    path = os.path.join(out_dir, f"{stem}.{kind}.{'x'.join(map(str, shape))}.f32")
    with open(path, "wb") as f:
        f.write(tensor.data)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="localhost:50051")
    ap.add_argument("--protoset", default=DEFAULT_PROTOSET)
    ap.add_argument("--model", default=None)
    ap.add_argument("--label", default=None, help="class models: class name or id")
    ap.add_argument("--prompt", default=None, help="text-to-image models: what to draw")
    ap.add_argument("--negative-prompt", default=None, help="text-to-image models: what to steer away from")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="default: the model's")
    ap.add_argument("--format", action="append", default=None,
                    help="png, tensor, image-tensor; repeatable or comma-separated (default png)")
    ap.add_argument("--previews", type=int, default=0, metavar="K", help="save a preview frame every K steps")
    ap.add_argument("--preview-decoder", choices=sorted(PREVIEW_DECODERS), default=None,
                    help="latent models: how previews are rendered (default: the server's choice)")
    ap.add_argument("--out", default="out")
    a = ap.parse_args()
    try:
        formats = parse_formats(a.format)
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    client = DitClient(a.target, a.protoset)
    req = dict(num_images=a.count, steps=a.steps, seed=a.seed,
               output_formats=[client.enum("OutputFormat", FORMATS[f]) for f in formats])
    if a.label is not None:
        req["class_id" if a.label.isdigit() else "class_name"] = int(a.label) if a.label.isdigit() else a.label
    if a.sampler:
        req["sampler"] = client.enum("Sampler", SAMPLERS[a.sampler])
    if a.previews:
        req["preview_interval"] = a.previews
    if a.preview_decoder:
        req["preview_decoder"] = client.enum("PreviewDecoder", PREVIEW_DECODERS[a.preview_decoder])
    os.makedirs(a.out, exist_ok=True)
    try:
        model = a.model or client.list_models()[0].name
        seeds = []
        previews_seen = False
        for ev in client.generate(model=model, **req):
            kind = ev.WhichOneof("event")
            if kind == "accepted":
                seeds = list(ev.accepted.seeds)
                print(f"accepted {ev.accepted.request_id}: seeds {seeds}", flush=True)
            elif kind == "progress":
                print(f"step {ev.progress.step}/{ev.progress.total_steps}", end="\r", flush=True)
            elif kind == "preview":
                p = ev.preview
                if not previews_seen:
                    print(f"previews: {client.enum_name('PreviewDecoder', p.decoder)}", flush=True)
                    previews_seen = True
                seed = seeds[p.image_index] if p.image_index < len(seeds) else p.image_index
                with open(os.path.join(a.out, f"{model}-{seed}-step{p.step:04d}.png"), "wb") as f:
                    f.write(p.png)
            elif kind == "result":
                r = ev.result
                stem = f"{model}-{r.seed}"
                written = []
                if r.png:
                    written.append(os.path.join(a.out, stem + ".png"))
                    with open(written[-1], "wb") as f:
                        f.write(r.png)
                if r.HasField("tensor"):
                    written.append(save_tensor(a.out, stem, "tensor", r.tensor))
                if r.HasField("image_tensor"):
                    written.append(save_tensor(a.out, stem, "image", r.image_tensor))
                decode = f", decode {r.timings.decode_seconds:.2f}s" if r.timings.decode_seconds > 0 else ""
                print(f"\nwrote {', '.join(written)}{decode}", flush=True)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
