#!/usr/bin/env python3
"""A Python client for the DiT server using only Debian's python3-grpcio and python3-protobuf.

No generated code: message classes are built at run time from the descriptor set that the Maven build writes
(proto/target/generated-resources/protobuf/descriptor-sets/dit.protoset), so this works with any protobuf runtime.

  /usr/bin/python3 tools/clients/python/dit_client.py --target localhost:50051 --model fashion-dit \
      --label Sneaker --count 2 --seed 5 --out out/
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="localhost:50051")
    ap.add_argument("--protoset", default=DEFAULT_PROTOSET)
    ap.add_argument("--model", default=None)
    ap.add_argument("--label", default=None, help="class name or id")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out")
    a = ap.parse_args()
    client = DitClient(a.target, a.protoset)
    models = client.list_models()
    model = a.model or models[0].name
    req = dict(model=model, num_images=a.count, steps=a.steps, seed=a.seed)
    if a.label is not None:
        req["class_id" if a.label.isdigit() else "class_name"] = int(a.label) if a.label.isdigit() else a.label
    os.makedirs(a.out, exist_ok=True)
    try:
        for ev in client.generate(**req):
            kind = ev.WhichOneof("event")
            if kind == "accepted":
                print(f"accepted {ev.accepted.request_id}: seeds {list(ev.accepted.seeds)}", flush=True)
            elif kind == "progress":
                print(f"step {ev.progress.step}/{ev.progress.total_steps}", end="\r", flush=True)
            elif kind == "result":
                path = os.path.join(a.out, f"{model}-{ev.result.seed}.png")
                with open(path, "wb") as f:
                    f.write(ev.result.png)
                print(f"\nwrote {path}", flush=True)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
