"""Issue 4: the AWS credentials chain, each source end to end, and their precedence.

Every test runs the real gateway against the AWS fake, which plays STS, the container
credentials endpoint and IMDSv2 and accepts (for Personalize) only the temporary credentials
it issued, verifying each signature with botocore. The fake's initial long-term key is
withdrawn first (see `only_issued`), so a successful call proves the gateway signed with
credentials obtained from the source under test."""

import os
import secrets

import grpc
import pytest

import pgw_harness as h

ARN = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/creds-1"
ROLE = "arn:aws:iam::123456789012:role/pgw-gateway"
NO_ENV_KEYS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
               "AWS_SESSION_TOKEN": None, "AWS_REGION": "us-east-1"}


def only_issued(fake, extra=()):
    """The fake accepts nothing but what it issues (plus `extra` credential specs)."""
    fake.set_credentials(list(extra), replace=True)


def write(path, text, mode=0o600):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path



def all_secrets(fake, configured=()):
    out = [s for s in configured if s]
    for c in fake.issued_credentials():
        out += [c["secret_key"], c["session_token"]]
    return out


def used_keys(fake):
    return set(fake.stats()["personalize"]["per_access_key"])


def issued_keys(fake):
    return {c["access_key"] for c in fake.issued_credentials()}


def assert_signed_with_issued(fake, source_prefix):
    issued = [c for c in fake.issued_credentials() if c["source"].startswith(source_prefix)]
    assert issued, fake.issued_credentials()
    used = used_keys(fake)
    assert used and used <= {c["access_key"] for c in issued}, (used, issued)
    fake.assert_no_signature_failures()


def call_ok(gw, arn=ARN):
    resp, _, _ = h.describe(gw.grpc_target, arn, timeout=10,
                            metadata=(("cache-control", "no-cache"),))
    assert resp.batch_inference_job.batch_inference_job_arn == arn


# --- each source -----------------------------------------------------------------------------


def test_environment_keys_make_the_gateway_ready(gateway, fake_aws):
    fake_aws.add_job(ARN)
    gw = gateway()
    gw.wait_readyz()
    call_ok(gw)
    rec = gw.wait_for_log(lambda r: r.get("msg") == "AWS credentials obtained")
    assert rec["source"] == "environment"
    assert fake_aws.stats()["requests_by_service"].get("sts") is None
    h.secrets_never_logged(gw, [fake_aws.secret_key])


def test_web_identity_from_environment(gateway, fake_aws, tmp_path):
    fake_aws.add_job(ARN)
    only_issued(fake_aws)
    token = "eyJwZ3ciOiJ3ZWItaWRlbnRpdHkifQ." + secrets.token_urlsafe(40)
    token_file = write(str(tmp_path / "sa" / "token"), token)
    fake_aws.configure_sts(expected_web_identity_token=token, expected_role_arn=ROLE)
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_WEB_IDENTITY_TOKEN_FILE=token_file,
                          AWS_ROLE_ARN=ROLE, AWS_ROLE_SESSION_NAME="pgw-irsa",
                          AWS_ENDPOINT_URL_STS=fake_aws.url))
    gw.wait_readyz()
    call_ok(gw)
    sts = fake_aws.stats()["sts"]
    assert sts["AssumeRoleWithWebIdentity"] >= 1
    assert sts["session_names"][0] == "pgw-irsa"
    assert sts["role_arns"][0] == ROLE
    assert_signed_with_issued(fake_aws, "sts:AssumeRoleWithWebIdentity")
    h.secrets_never_logged(gw, all_secrets(fake_aws, [token]))


def test_web_identity_default_session_name(gateway, fake_aws, tmp_path):
    fake_aws.add_job(ARN)
    only_issued(fake_aws)
    token_file = write(str(tmp_path / "token"), secrets.token_urlsafe(32))
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_WEB_IDENTITY_TOKEN_FILE=token_file,
                          AWS_ROLE_ARN=ROLE, AWS_ENDPOINT_URL_STS=fake_aws.url))
    gw.wait_readyz()
    call_ok(gw)
    assert fake_aws.stats()["sts"]["session_names"][0].startswith("personalize-gateway-")


def test_profile_static_keys(gateway, fake_aws, tmp_path):
    fake_aws.add_job(ARN)
    secret = "pgwprofile/" + secrets.token_urlsafe(24)
    only_issued(fake_aws, [{"access_key": "AKIAPGWPROFILE000001", "secret_key": secret}])
    creds = write(str(tmp_path / "aws" / "credentials"),
                  "# comment\n[default]\naws_access_key_id = AKIAPGWOTHER00000001\n"
                  "aws_secret_access_key = wrong\n\n[team]\n"
                  "aws_access_key_id=AKIAPGWPROFILE000001\naws_secret_access_key = %s\n" % secret)
    config = write(str(tmp_path / "aws" / "config"),
                   "[default]\nregion = us-east-1\n[profile team]\nregion = us-east-1\n")
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_PROFILE="team", AWS_SHARED_CREDENTIALS_FILE=creds,
                          AWS_CONFIG_FILE=config))
    gw.wait_readyz()
    call_ok(gw)
    assert used_keys(fake_aws) == {"AKIAPGWPROFILE000001"}
    fake_aws.assert_no_signature_failures()
    h.secrets_never_logged(gw, [secret])


def test_profile_role_arn_with_source_profile_assumes_role(gateway, fake_aws, tmp_path):
    """role_arn + source_profile: STS AssumeRole signed (SigV4, service sts) with the source
    profile's keys, which the fake accepts for STS only."""
    fake_aws.add_job(ARN)
    base_secret = "pgwbase/" + secrets.token_urlsafe(24)
    only_issued(fake_aws, [{"access_key": "AKIAPGWBASE000000001", "secret_key": base_secret,
                            "services": ["sts"]}])
    fake_aws.configure_sts(expected_role_arn=ROLE, region="us-east-1")
    creds = write(str(tmp_path / "aws" / "credentials"),
                  "[base]\naws_access_key_id = AKIAPGWBASE000000001\n"
                  "aws_secret_access_key = %s\n" % base_secret)
    config = write(str(tmp_path / "aws" / "config"),
                   "[profile app]\nrole_arn = %s\nsource_profile = base\n"
                   "role_session_name = pgw-assume\nexternal_id = ext-123\n"
                   "s3 =\n  max_concurrent_requests = 20\n" % ROLE)
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_PROFILE="app", AWS_SHARED_CREDENTIALS_FILE=creds,
                          AWS_CONFIG_FILE=config, AWS_ENDPOINT_URL_STS=fake_aws.url))
    gw.wait_readyz()
    call_ok(gw)
    sts = fake_aws.stats()["sts"]
    assert sts["AssumeRole"] >= 1 and sts["AssumeRoleWithWebIdentity"] == 0
    assert sts["role_arns"][0] == ROLE and sts["session_names"][0] == "pgw-assume"
    assert_signed_with_issued(fake_aws, "sts:AssumeRole")
    h.secrets_never_logged(gw, all_secrets(fake_aws, [base_secret]))


def test_profile_web_identity_token_file(gateway, fake_aws, tmp_path):
    fake_aws.add_job(ARN)
    only_issued(fake_aws)
    token = secrets.token_urlsafe(48)
    token_file = write(str(tmp_path / "token"), token + "\n")
    fake_aws.configure_sts(expected_web_identity_token=token)
    config = write(str(tmp_path / "aws" / "config"),
                   "[default]\nrole_arn = %s\nweb_identity_token_file = %s\n" % (ROLE, token_file))
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_CONFIG_FILE=config,
                          AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "absent"),
                          AWS_ENDPOINT_URL_STS=fake_aws.url))
    gw.wait_readyz()
    call_ok(gw)
    assert_signed_with_issued(fake_aws, "sts:AssumeRoleWithWebIdentity")
    h.secrets_never_logged(gw, all_secrets(fake_aws, [token]))


def test_container_credentials_with_token_file(gateway, fake_aws, tmp_path):
    fake_aws.add_job(ARN)
    only_issued(fake_aws)
    token = "pod-identity-" + secrets.token_urlsafe(32)
    token_file = write(str(tmp_path / "eks-pod-identity-token"), token)
    fake_aws.configure_container(path="/v1/credentials", token=token)
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI=fake_aws.url + "/v1/credentials",
                          AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=token_file))
    gw.wait_readyz()
    call_ok(gw)
    c = fake_aws.stats()["container"]
    assert c["auth_ok"] >= 1 and c["auth_failed"] == 0
    assert_signed_with_issued(fake_aws, "container")
    h.secrets_never_logged(gw, all_secrets(fake_aws, [token]))


def test_container_credentials_with_token_variable(gateway, fake_aws):
    fake_aws.add_job(ARN)
    only_issued(fake_aws)
    token = "ecs-" + secrets.token_urlsafe(32)
    fake_aws.configure_container(path="/v2/creds", token=token)
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI=fake_aws.url + "/v2/creds",
                          AWS_CONTAINER_AUTHORIZATION_TOKEN=token))
    gw.wait_readyz()
    call_ok(gw)
    assert_signed_with_issued(fake_aws, "container")
    h.secrets_never_logged(gw, all_secrets(fake_aws, [token]))


def test_container_full_uri_outside_the_allow_list_is_refused(gateway, fake_aws):
    """Plain http to a host that is not loopback or the ECS/EKS agent address is never
    contacted: the gateway starts unready and says why."""
    gw = gateway(env=dict(NO_ENV_KEYS,
                          AWS_CONTAINER_CREDENTIALS_FULL_URI="http://192.0.2.10/creds"))
    rec = gw.wait_for_log(lambda r: r.get("msg") == "no usable AWS credentials source")
    assert "169.254.170.2" in rec["error"]
    assert gw.http_get("/readyz")[0] == 503
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "container" in e.value.details()


def test_imds_v2(gateway, fake_aws):
    fake_aws.add_job(ARN)
    only_issued(fake_aws)
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_EC2_METADATA_DISABLED=None,
                          AWS_EC2_METADATA_SERVICE_ENDPOINT=fake_aws.url))
    gw.wait_readyz()
    call_ok(gw)
    imds = fake_aws.stats()["imds"]
    assert imds["token_requests"] >= 1 and imds["credential_requests"] >= 1
    assert set(imds["ttl_requested"]) == {21600}
    assert imds["v1_rejected"] == 0 and imds["bad_token"] == 0
    assert_signed_with_issued(fake_aws, "imds")
    h.secrets_never_logged(gw, all_secrets(fake_aws))


def test_imds_disabled_and_nothing_configured(gateway, fake_aws):
    gw = gateway(env=dict(NO_ENV_KEYS))
    gw.wait_for_log(lambda r: r.get("msg") == "no usable AWS credentials source")
    assert gw.http_get("/readyz")[0] == 503
    with pytest.raises(grpc.RpcError) as e:
        h.describe(gw.grpc_target, ARN)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no AWS credentials source is configured" in e.value.details()
    assert fake_aws.stats()["total_requests"] == 0


# --- precedence ------------------------------------------------------------------------------


def test_precedence_env_web_identity_profile_container_imds(gateway, fake_aws, tmp_path):
    """With every source configured, each is used only when all before it are removed."""
    fake_aws.add_job(ARN)
    token_file = write(str(tmp_path / "wi-token"), secrets.token_urlsafe(32))
    profile_secret = secrets.token_urlsafe(24)
    creds = write(str(tmp_path / "aws" / "credentials"),
                  "[default]\naws_access_key_id = AKIAPGWPROFILE000002\n"
                  "aws_secret_access_key = %s\n" % profile_secret)
    fake_aws.add_credentials("AKIAPGWPROFILE000002", profile_secret)
    full = {
        "AWS_REGION": "us-east-1",
        "AWS_WEB_IDENTITY_TOKEN_FILE": token_file, "AWS_ROLE_ARN": ROLE,
        "AWS_ENDPOINT_URL_STS": fake_aws.url,
        "AWS_SHARED_CREDENTIALS_FILE": creds, "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": fake_aws.url + "/v1/credentials",
        "AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT": fake_aws.url,
    }
    steps = [
        ("environment", {}),
        ("web_identity", {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}),
        ("profile", {"AWS_WEB_IDENTITY_TOKEN_FILE": None}),
        ("container", {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}),
        ("imds", {"AWS_CONTAINER_CREDENTIALS_FULL_URI": None}),
    ]
    env = dict(full)
    for name, removed in steps:
        env.update(removed)
        fake_aws.reset_stats()
        gw = gateway(env=env)
        gw.wait_readyz()
        call_ok(gw)
        rec = gw.wait_for_log(lambda r: r.get("msg") == "AWS credentials obtained")
        assert rec["source"] == name, (name, rec)
        by = fake_aws.stats()["requests_by_service"]
        expect_other = {"environment": set(), "web_identity": {"sts"}, "profile": set(),
                        "container": {"container"}, "imds": {"imds"}}[name]
        assert set(by) - {"personalize"} == expect_other, (name, by)
        fake_aws.assert_no_signature_failures()
        gw.stop()
        h.secrets_never_logged(gw, all_secrets(fake_aws, [profile_secret, fake_aws.secret_key]))


def test_profile_errors_are_reported_without_values(gateway, fake_aws, tmp_path):
    secret = secrets.token_urlsafe(24)
    config = write(str(tmp_path / "aws" / "config"),
                   "[profile loop-a]\nrole_arn = %s\nsource_profile = loop-b\n"
                   "[profile loop-b]\nrole_arn = %s\nsource_profile = loop-a\n"
                   "aws_secret_access_key = %s\n" % (ROLE, ROLE, secret))
    gw = gateway(env=dict(NO_ENV_KEYS, AWS_PROFILE="loop-a", AWS_CONFIG_FILE=config))
    rec = gw.wait_for_log(lambda r: r.get("msg") == "no usable AWS credentials source")
    assert "loop" in rec["error"]
    gw2 = gateway(env=dict(NO_ENV_KEYS, AWS_PROFILE="missing", AWS_CONFIG_FILE=config))
    rec2 = gw2.wait_for_log(lambda r: r.get("msg") == "no usable AWS credentials source")
    assert "missing" in rec2["error"]
    for g in (gw, gw2):
        h.secrets_never_logged(g, [secret])
