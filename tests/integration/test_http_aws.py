"""The AWS-compatible endpoint (POST /) driven by a real, unmodified boto3 client.

boto3 is pointed at the gateway with endpoint_url and dummy credentials of its own; the
gateway must answer what AWS would (the same parsed response as the fake serves directly, the
same exception classes) and must never pass the caller's signature on.
"""

import json

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/http-aws"
TARGET = "AmazonPersonalize.DescribeBatchInferenceJob"
AMZ_JSON = "application/x-amz-json-1.1"
CLIENT_KEY = "AKIDCLIENTOWNKEY0001"



def gateway_client(gw, retries=1):
    """boto3 Personalize client aimed at the gateway, with credentials the fake does not know."""
    return boto3.client(
        "personalize", endpoint_url=gw.http_url, region_name="us-east-1",
        aws_access_key_id=CLIENT_KEY, aws_secret_access_key="client-secret-not-for-aws",
        config=Config(retries={"max_attempts": retries, "mode": "standard"},
                      connect_timeout=5, read_timeout=20))


def aws_post(gw, body, target=TARGET, content_type=AMZ_JSON, extra=None):
    headers = {}
    if target is not None:
        headers["X-Amz-Target"] = target
    if content_type is not None:
        headers["Content-Type"] = content_type
    headers.update(extra or {})
    if not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    return h.http_request("POST", gw.http_url + "/", body=body, headers=headers)


def test_boto3_gets_the_same_job_as_from_aws(gateway, fake_aws):
    stored = fake_aws.add_job(ARN, fixture="job_full")["batchInferenceJob"]
    gw = gateway()
    via_gateway = gateway_client(gw).describe_batch_inference_job(batchInferenceJobArn=ARN)
    direct = fake_aws.personalize_client().describe_batch_inference_job(batchInferenceJobArn=ARN)
    got, want = via_gateway["batchInferenceJob"], direct["batchInferenceJob"]
    assert got == want
    # Every field this botocore's model knows came through (a fixture with every field).
    for field in ("jobName", "batchInferenceJobArn", "filterArn", "failureReason",
                  "solutionVersionArn", "numResults", "jobInput", "jobOutput",
                  "batchInferenceJobConfig", "roleArn", "status", "creationDateTime",
                  "lastUpdatedDateTime"):
        assert field in got, field
    assert got["creationDateTime"].timestamp() == pytest.approx(stored["creationDateTime"], abs=1e-3)
    md = via_gateway["ResponseMetadata"]
    assert md["HTTPStatusCode"] == 200
    assert md["RequestId"]
    assert md["HTTPHeaders"]["x-cache"] == "miss"
    assert md["HTTPHeaders"]["content-type"] == AMZ_JSON
    fake_aws.assert_no_signature_failures()


def test_raw_body_is_the_aws_body_including_fields_newer_than_botocore(gateway, fake_aws):
    stored = fake_aws.add_job(ARN, fixture="job_full")["batchInferenceJob"]
    assert "batchInferenceJobMode" in stored and "themeGenerationConfig" in stored
    gw = gateway()
    status, headers, body = aws_post(gw, {"batchInferenceJobArn": ARN})
    assert status == 200, body
    assert json.loads(body) == {"batchInferenceJob": stored}
    assert headers["x-amzn-requestid"]
    # The second answer comes from the cache, with its own request id.
    status, headers2, body2 = aws_post(gw, {"batchInferenceJobArn": ARN})
    assert status == 200 and json.loads(body2) == {"batchInferenceJob": stored}
    assert headers2["x-cache"] == "hit"
    assert int(headers2["age"]) >= 0
    assert headers2["x-amzn-requestid"] != headers["x-amzn-requestid"]
    assert fake_aws.stats()["personalize"]["requests"] == 1


def test_unknown_arn_raises_resource_not_found(gateway, fake_aws):
    gw = gateway()
    client = gateway_client(gw)
    with pytest.raises(client.exceptions.ResourceNotFoundException) as e:
        client.describe_batch_inference_job(
            batchInferenceJobArn="arn:aws:personalize:us-east-1:123456789012:batch-inference-job/none")
    err = e.value.response
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err["ResponseMetadata"]["RequestId"]
    assert err["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ResourceNotFoundException"
    fake_aws.assert_no_signature_failures()


@pytest.mark.parametrize("bad", [
    "arn:aws:personalize:us-east-1.evil.example:123456789012:batch-inference-job/x",
    "arn:aws:personalize:us-east-1:12345:batch-inference-job/x",
    "arn:aws:personalize:us-east-1:123456789012:solution/x",
])
def test_malformed_arn_raises_invalid_input_without_upstream_call(gateway, fake_aws, bad):
    gw = gateway()
    client = gateway_client(gw)
    with pytest.raises(client.exceptions.InvalidInputException) as e:
        client.describe_batch_inference_job(batchInferenceJobArn=bad)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fake_aws.stats()["total_requests"] == 0


def test_callers_signature_is_never_forwarded_or_logged(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway(extra_args=["--log-level", "debug"])
    gateway_client(gw).describe_batch_inference_job(batchInferenceJobArn=ARN)
    # The fake verified every signature it saw with the gateway's own key: a forwarded client
    # signature (another key) would be a failure.
    fake_aws.assert_no_signature_failures()
    last = fake_aws.stats()["last_request"]
    cred = last["headers"]["authorization-parsed"]["credential"]
    assert cred.startswith(fake_aws.access_key + "/")
    assert CLIENT_KEY not in json.dumps(last)
    gw.stop()
    h.secrets_never_logged(gw, [CLIENT_KEY, "client-secret-not-for-aws"])


def test_upstream_errors_keep_their_aws_code(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    client = gateway_client(gw)
    fake_aws.fail(arn=ARN, status=400, type="AccessDeniedException", message="no access")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    fake_aws.clear_failures()
    fake_aws.fail(arn=ARN, status=500, type="InternalFailure", message="boom")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert e.value.response["Error"]["Code"] == "InternalFailure"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    fake_aws.clear_failures()
    # And it still serves.
    assert client.describe_batch_inference_job(batchInferenceJobArn=ARN)["batchInferenceJob"][
        "batchInferenceJobArn"] == ARN


def test_gateway_credential_problems_are_not_blamed_on_the_caller(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway(env={"AWS_SECRET_ACCESS_KEY": "WrongSecretKeyForTheGateway0000000001"})
    client = gateway_client(gw)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.describe_batch_inference_job(batchInferenceJobArn=ARN)
    assert e.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_unknown_target_is_unknown_operation(gateway, fake_aws):
    gw = gateway()
    client = gateway_client(gw)
    # A real SDK call for another operation of the same service.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.describe_batch_segment_job(
            batchSegmentJobArn="arn:aws:personalize:us-east-1:123456789012:batch-segment-job/x")
    assert e.value.response["Error"]["Code"] == "UnknownOperationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    status, headers, body = aws_post(gw, {"batchInferenceJobArn": ARN}, target=None)
    assert status == 400 and json.loads(body)["__type"] == "UnknownOperationException"
    assert headers["x-amzn-errortype"] == "UnknownOperationException"
    assert fake_aws.stats()["total_requests"] == 0


@pytest.mark.parametrize("body,content_type,want", [
    ("{not json", AMZ_JSON, "SerializationException"),
    ("", AMZ_JSON, "SerializationException"),
    ("[1,2]", AMZ_JSON, "SerializationException"),
    ('{"batchInferenceJobArn": 42}', AMZ_JSON, "SerializationException"),
    ("{}", AMZ_JSON, "InvalidInputException"),
    ('{"batchInferenceJobArn": "%s"}' % ARN, "application/json", "SerializationException"),
    ('{"batchInferenceJobArn": "%s"}' % ARN, None, "SerializationException"),
])
def test_malformed_requests_get_aws_shaped_400s(gateway, fake_aws, body, content_type, want):
    fake_aws.add_job(ARN)
    gw = gateway()
    status, headers, raw = aws_post(gw, body, content_type=content_type)
    assert status == 400, raw
    err = json.loads(raw)
    assert err["__type"] == want and err["message"]
    assert headers["x-amzn-errortype"] == want
    assert headers["x-amzn-requestid"]
    assert headers["content-type"] == AMZ_JSON
    assert fake_aws.stats()["total_requests"] == 0
    # still serving
    status, _, raw = aws_post(gw, {"batchInferenceJobArn": ARN})
    assert status == 200 and json.loads(raw)["batchInferenceJob"]["batchInferenceJobArn"] == ARN


def test_content_type_with_parameters_is_accepted(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    status, _, raw = aws_post(gw, {"batchInferenceJobArn": ARN},
                              content_type="application/x-amz-json-1.1; charset=utf-8")
    assert status == 200, raw
