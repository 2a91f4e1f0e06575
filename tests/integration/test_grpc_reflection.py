"""Issue 10: gRPC server reflection (grpc.reflection.v1alpha and v1), asked by a real grpcio
client the way grpcurl does it: list the services, fetch the file that defines one, build a
descriptor pool from the answer alone (no .proto file), then call the gateway with messages made
from those descriptors."""

import os

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import pgw_harness as h

PREFIX = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/"
SERVICE = "personalize_gateway.v1.PersonalizeGateway"
METHODS = {
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
}


def reflection_module(version):
    h.protos()  # generates the Python classes when needed
    d = h._gen_dir()
    return h._load_module("pgw_gen_reflection_%s_pb2" % version,
                          os.path.join(d, "grpc", "reflection", version, "reflection_pb2.py"))


def ask(target, requests, version="v1alpha"):
    """Sends the requests on one stream; returns the responses in order."""
    rp = reflection_module(version)
    with grpc.insecure_channel(target) as ch:
        stub = ch.stream_stream(METHODS[version],
                                request_serializer=rp.ServerReflectionRequest.SerializeToString,
                                response_deserializer=rp.ServerReflectionResponse.FromString)
        return list(stub(iter([rp.ServerReflectionRequest(**r) for r in requests]), timeout=10))


def pool_from(file_descriptor_protos):
    """A descriptor pool built only from what the server sent (dependencies first)."""
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in file_descriptor_protos]
    pool, added = descriptor_pool.DescriptorPool(), set()
    while len(added) < len(files):
        progress = False
        for f in files:
            if f.name not in added and all(d in added for d in f.dependency):
                pool.Add(f)
                added.add(f.name)
                progress = True
        assert progress, "the answer misses a dependency: %s" % [f.name for f in files]
    return pool


def test_both_versions_list_every_service(gateway):
    gw = gateway()
    for version in METHODS:
        (resp,) = ask(gw.grpc_target, [{"list_services": ""}], version)
        names = {s.name for s in resp.list_services_response.service}
        assert names == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                         "grpc.reflection.v1.ServerReflection"}, (version, names)
        assert resp.original_request.list_services == ""


def test_describe_the_service_from_reflection_alone_and_call_it(gateway, fake_aws):
    arn = PREFIX + "reflected"
    fake_aws.add_job(arn, status="IN PROGRESS")
    gw = gateway()
    (resp,) = ask(gw.grpc_target, [{"file_containing_symbol": SERVICE}], "v1")
    files = resp.file_descriptor_response.file_descriptor_proto
    pool = pool_from(files)
    service = pool.FindServiceByName(SERVICE)
    methods = {m.name: m for m in service.methods}
    assert set(methods) == {"DescribeBatchInferenceJob", "WatchBatchInferenceJob"}
    watch = descriptor_pb2.MethodDescriptorProto()
    methods["WatchBatchInferenceJob"].CopyToProto(watch)
    assert watch.server_streaming and not watch.client_streaming
    # Messages made from the reflected descriptors, as grpcurl would make them.
    factory = message_factory.MessageFactory(pool)
    describe = methods["DescribeBatchInferenceJob"]
    request_cls = factory.GetPrototype(describe.input_type)
    response_cls = factory.GetPrototype(describe.output_type)
    with grpc.insecure_channel(gw.grpc_target) as ch:
        call = ch.unary_unary("/%s/%s" % (SERVICE, describe.name),
                              request_serializer=request_cls.SerializeToString,
                              response_deserializer=response_cls.FromString)
        answer = call(request_cls(batch_inference_job_arn=arn), timeout=5)
    assert answer.batch_inference_job.status == "IN PROGRESS"
    assert answer.batch_inference_job.last_updated_date_time.seconds > 0  # the WKT came too


def test_several_questions_on_one_stream_and_errors(gateway):
    gw = gateway()
    answers = ask(gw.grpc_target, [
        {"file_by_filename": "grpc/health/v1/health.proto"},
        {"file_containing_symbol": "personalize_gateway.v1.BatchInferenceJob.status"},
        {"file_containing_symbol": "no.such.Symbol"},
        {"file_by_filename": "no/such/file.proto"},
        {"file_containing_extension": {"containing_type": SERVICE, "extension_number": 1}},
    ])
    assert len(answers) == 5
    health = descriptor_pb2.FileDescriptorProto.FromString(
        answers[0].file_descriptor_response.file_descriptor_proto[0])
    assert health.package == "grpc.health.v1"
    names = [descriptor_pb2.FileDescriptorProto.FromString(b).name
             for b in answers[1].file_descriptor_response.file_descriptor_proto]
    assert names[0] == "personalize_gateway/v1/personalize_gateway.proto"
    assert "google/protobuf/timestamp.proto" in names
    assert [a.error_response.error_code for a in answers[2:]] == [
        grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.NOT_FOUND.value[0],
        grpc.StatusCode.UNIMPLEMENTED.value[0]]


def test_a_message_that_is_no_reflection_request_ends_the_stream(gateway):
    gw = gateway()
    with grpc.insecure_channel(gw.grpc_target) as ch:
        stub = ch.stream_stream(METHODS["v1alpha"], request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
        try:
            list(stub(iter([b"\xff\xff\xff"]), timeout=5))
            raise AssertionError("the stream should have failed")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    # And the gateway still serves.
    (resp,) = ask(gw.grpc_target, [{"list_services": ""}])
    assert len(resp.list_services_response.service) == 4
