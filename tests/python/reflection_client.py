#!/usr/bin/env python3
"""A generic gRPC client that knows only server reflection.

It has no .proto file and no generated code of Fleetlog: it asks the server
(grpc.reflection.v1alpha) for the descriptors of
fleetlog.devices.v1.DeviceService, builds the message classes from them and
calls the service by its method paths. Run by
tests/tests/e2e/generic_clients.rs:

    reflection_client.py --target 127.0.0.1:7400 --key KEY \
        --parent projects/p/regions/r --device-id d1

Prints one JSON object on stdout with what it saw and exits 0; on an
unexpected failure it exits non-zero with the error on stderr.
"""

import argparse
import json
import sys
import traceback

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "fleetlog.devices.v1.DeviceService"
TIMEOUT = 30.0


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata to every call on a channel (the reflection
    helper's calls included, which take no metadata of their own)."""

    def __init__(self, metadata):
        self._metadata = list(metadata)

    def _details(self, details):
        metadata = list(details.metadata or []) + self._metadata
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def _authed(channel, key):
    return grpc.intercept_channel(
        channel, _Metadata([("authorization", f"Bearer {key}")])
    )


class Service:
    """One gRPC service called through descriptors found by reflection."""

    def __init__(self, pool, name):
        self.descriptor = pool.FindServiceByName(name)

    def method(self, channel, name):
        method = self.descriptor.methods_by_name[name]
        if method.client_streaming or method.server_streaming:
            raise ValueError(f"{method.full_name} is a streaming method")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            f"/{self.descriptor.full_name}/{method.name}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )

        def invoke(fields):
            # The request from its proto3 JSON form: the client knows field
            # names, not generated classes.
            request = json_format.ParseDict(fields, request_class())
            return call(request, timeout=TIMEOUT)

        return invoke


def _code(call):
    """The status code name of a call expected to fail ("OK" if it did not)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code().name
    return "OK"


def run(args):
    plain = grpc.insecure_channel(args.target)
    channel = _authed(plain, args.key)
    try:
        grpc.channel_ready_future(plain).result(timeout=TIMEOUT)
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        if SERVICE not in services:
            raise RuntimeError(f"{SERVICE} is not among the served services: {services}")
        pool = descriptor_pool.DescriptorPool(database)
        devices = Service(pool, SERVICE)

        create = devices.method(channel, "CreateDevice")
        get = devices.method(channel, "GetDevice")
        list_ = devices.method(channel, "ListDevices")

        create_request = {
            "parent": args.parent,
            "deviceId": args.device_id,
            "device": {
                "displayName": f"{args.device_id} (created by reflection)",
                "metadata": {"labels": {"site": "berlin"}},
            },
        }
        created = json_format.MessageToDict(create(create_request))
        # Read-your-writes: the create's revision as min_revision.
        revision = created.get("metadata", {}).get("revision", "0")
        got = json_format.MessageToDict(
            get({"name": created["name"], "minRevision": revision})
        )
        listed = json_format.MessageToDict(
            list_(
                {
                    "parent": args.parent,
                    "filter": 'labels.site = "berlin"',
                    "minRevision": revision,
                }
            )
        )
        duplicate_code = _code(lambda: create(create_request))
        no_key_list = devices.method(plain, "ListDevices")
        no_key_code = _code(lambda: no_key_list({"parent": args.parent}))

        return {
            "services": services,
            "created": created,
            "got": got,
            "listed_names": [d["name"] for d in listed.get("devices", [])],
            "duplicate_code": duplicate_code,
            "no_key_code": no_key_code,
        }
    finally:
        plain.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port of fleetd's gRPC")
    parser.add_argument("--key", required=True, help="API key (Bearer)")
    parser.add_argument("--parent", required=True, help="projects/P/regions/R")
    parser.add_argument("--device-id", required=True)
    args = parser.parse_args()
    try:
        seen = run(args)
    except Exception as error:  # noqa: BLE001 - any failure is reported
        traceback.print_exc(file=sys.stderr)
        print(f"reflection_client: {error!r}", file=sys.stderr)
        return 1
    json.dump(seen, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
