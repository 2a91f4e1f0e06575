"""grpc.health.v1.Health on the gRPC port, with Debian's grpcio as the client, as Kubernetes'
native gRPC probes use it."""

import signal
import threading

import grpc
import pytest

import pgw_harness as h

WATCH = "/grpc.health.v1.Health/Watch"


def test_check_serving_and_unknown_service(gateway):
    gw = gateway()
    h.wait_until(lambda: h.health_check(gw.grpc_target) == "SERVING", timeout=10, what="SERVING")
    assert h.health_check(gw.grpc_target, "personalize_gateway.v1.PersonalizeGateway") == "SERVING"
    with pytest.raises(grpc.RpcError) as e:
        h.health_check(gw.grpc_target, "no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_check_not_serving_without_credentials(gateway):
    gw = gateway(env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    assert h.health_check(gw.grpc_target) == "NOT_SERVING"


def test_watch_streams_changes_until_shutdown(gateway):
    gw = gateway(extra_args=["--shutdown-grace-ms", "5000"])
    h.wait_until(lambda: h.health_check(gw.grpc_target) == "SERVING", timeout=10, what="SERVING")
    _, hp = h.protos()
    seen = []
    done = threading.Event()

    def watch():
        with grpc.insecure_channel(gw.grpc_target) as ch:
            stream = ch.unary_stream(WATCH, request_serializer=hp.HealthCheckRequest.SerializeToString,
                                     response_deserializer=hp.HealthCheckResponse.FromString)
            try:
                for msg in stream(hp.HealthCheckRequest(service=""), timeout=20):
                    seen.append(hp.HealthCheckResponse.ServingStatus.Name(msg.status))
            except grpc.RpcError as e:
                seen.append("error:%s" % e.code())
        done.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    h.wait_until(lambda: seen, timeout=10, what="first Watch update")
    assert seen[0] == "SERVING"
    gw.signal(signal.SIGTERM)
    assert done.wait(15), seen
    assert "NOT_SERVING" in seen, seen
    assert not any(s.startswith("error") for s in seen), seen
    assert gw.stop() == 0


def test_watch_unknown_service(gateway):
    gw = gateway()
    _, hp = h.protos()
    with grpc.insecure_channel(gw.grpc_target) as ch:
        stream = ch.unary_stream(WATCH, request_serializer=hp.HealthCheckRequest.SerializeToString,
                                 response_deserializer=hp.HealthCheckResponse.FromString)
        it = stream(hp.HealthCheckRequest(service="no.such.Service"), timeout=5)
        first = next(it)
        assert hp.HealthCheckResponse.ServingStatus.Name(first.status) == "SERVICE_UNKNOWN"
        it.cancel()
