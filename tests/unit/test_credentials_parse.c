/* Parsing what the credentials sources answer (STS XML, container/IMDS JSON, timestamps), the
 * container URL allow-list and the STS endpoint rules. No network. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/aws/credentials_chain.h"
#include "service/aws/credentials_container.h"
#include "service/aws/credentials_imds.h"
#include "service/aws/credentials_source.h"
#include "service/aws/credentials_sts.h"
#include "test_util.h"

static const char sts_ok[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <AssumedRoleUser><Arn>arn:aws:sts::1:assumed-role/r/s</Arn></AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <AccessKeyId>ASIATESTTESTTEST0001</AccessKeyId>\n"
    "      <SecretAccessKey>se/cr+et&amp;key</SecretAccessKey>\n"
    "      <SessionToken>FwoGZXIvYXdzEXAMPLE==</SessionToken>\n"
    "      <Expiration>2030-01-02T03:04:05Z</Expiration>\n"
    "    </Credentials>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

static const char sts_err[] =
    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\n"
    "    <Message>Couldn't retrieve verification key</Message></Error>\n"
    "  <RequestId>abc</RequestId>\n"
    "</ErrorResponse>\n";

static void test_time(void)
{
    int64_t ms = 0;
    CHECK(pgw_credentials_parse_time("2030-01-02T03:04:05Z", &ms) == 0);
    CHECK(ms == 1893553445000LL);
    CHECK(pgw_credentials_parse_time("2030-01-02T03:04:05.250Z", &ms) == 0);
    CHECK(ms == 1893553445250LL);
    CHECK(pgw_credentials_parse_time("2030-01-02T05:04:05+02:00", &ms) == 0);
    CHECK(ms == 1893553445000LL);
    CHECK(pgw_credentials_parse_time("2030-01-02 03:04:05", &ms) != 0);
    CHECK(pgw_credentials_parse_time("2030-13-02T03:04:05Z", &ms) != 0);
    CHECK(pgw_credentials_parse_time("2030-01-02T03:04:05Zjunk", &ms) != 0);
    CHECK(pgw_credentials_parse_time("", &ms) != 0);
}

static void test_sts(void)
{
    pgw_credentials *c = NULL;
    char err[300] = "";
    CHECK(pgw_sts_parse_answer(200, sts_ok, strlen(sts_ok), "web_identity", &c, err, sizeof(err)) ==
          0);
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->access_key_id, "ASIATESTTESTTEST0001");
        CHECK_STR(c->secret_access_key, "se/cr+et&key");
        CHECK_STR(c->session_token, "FwoGZXIvYXdzEXAMPLE==");
        CHECK(c->expires_wall_ms == 1893553445000LL);
        CHECK_STR(c->source, "web_identity");
        pgw_credentials_unref(c);
    }
    c = NULL;
    CHECK(pgw_sts_parse_answer(400, sts_err, strlen(sts_err), "x", &c, err, sizeof(err)) != 0);
    CHECK(c == NULL);
    CHECK(strstr(err, "InvalidIdentityToken") != NULL);
    CHECK(strstr(err, "HTTP 400") != NULL);
    /* 200 without credentials, not XML, truncated: errors that quote nothing. */
    const char *no_creds = "<R><Result/></R>";
    CHECK(pgw_sts_parse_answer(200, no_creds, strlen(no_creds), "x", &c, err, sizeof(err)) != 0);
    const char *junk = "{\"not\":\"xml\"}";
    CHECK(pgw_sts_parse_answer(200, junk, strlen(junk), "x", &c, err, sizeof(err)) != 0);
    CHECK(pgw_sts_parse_answer(200, sts_ok, 200, "x", &c, err, sizeof(err)) != 0);
    CHECK(strstr(err, "ASIA") == NULL && strstr(err, "se/cr") == NULL);
    /* An entity bomb or external entity is not expanded. */
    const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM "
                      "\"file:///etc/passwd\">]><R><Credentials><AccessKeyId>&x;</AccessKeyId>"
                      "</Credentials></R>";
    CHECK(pgw_sts_parse_answer(200, xxe, strlen(xxe), "x", &c, err, sizeof(err)) != 0);
    CHECK(c == NULL);
}

static void test_json(void)
{
    char err[300] = "";
    const char *ok = "{\"AccessKeyId\":\"ASIAJSON\",\"SecretAccessKey\":\"sek\",\"Token\":\"tok\","
                     "\"Expiration\":\"2030-01-02T03:04:05Z\",\"RoleArn\":\"r\"}";
    pgw_credentials *c = pgw_credentials_from_json(ok, strlen(ok), "container", err, sizeof(err));
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->session_token, "tok");
        CHECK(c->expires_wall_ms == 1893553445000LL);
        pgw_credentials_unref(c);
    }
    const char *imds_fail =
        "{\"Code\":\"Failure\",\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\"}";
    CHECK(pgw_credentials_from_json(imds_fail, strlen(imds_fail), "imds", err, sizeof(err)) ==
          NULL);
    CHECK(strstr(err, "Failure") != NULL);
    const char *missing = "{\"AccessKeyId\":\"A\"}";
    CHECK(pgw_credentials_from_json(missing, strlen(missing), "x", err, sizeof(err)) == NULL);
    const char *bad_time = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Expiration\":\"x\"}";
    CHECK(pgw_credentials_from_json(bad_time, strlen(bad_time), "x", err, sizeof(err)) == NULL);
    const char *not_json = "AccessKeyId=sekrit";
    CHECK(pgw_credentials_from_json(not_json, strlen(not_json), "x", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "sekrit") == NULL);
}

static void test_container_allow_list(void)
{
    CHECK(pgw_credentials_container_url_allowed("http://127.0.0.1:8080/creds"));
    CHECK(pgw_credentials_container_url_allowed("http://127.3.4.5/creds"));
    CHECK(pgw_credentials_container_url_allowed("http://localhost/creds"));
    CHECK(pgw_credentials_container_url_allowed("http://[::1]:80/creds"));
    CHECK(pgw_credentials_container_url_allowed("http://169.254.170.2/v2/credentials/x"));
    CHECK(pgw_credentials_container_url_allowed("http://169.254.170.23/v1/credentials"));
    CHECK(pgw_credentials_container_url_allowed("http://[fd00:ec2::23]/v1/credentials"));
    CHECK(pgw_credentials_container_url_allowed("https://creds.example.com/x"));
    CHECK(!pgw_credentials_container_url_allowed("http://169.254.170.3/"));
    CHECK(!pgw_credentials_container_url_allowed("http://192.0.2.1/creds"));
    CHECK(!pgw_credentials_container_url_allowed("http://example.com/creds"));
    CHECK(!pgw_credentials_container_url_allowed("http://[fd00:ec2::24]/"));
    CHECK(!pgw_credentials_container_url_allowed("ftp://127.0.0.1/"));
    CHECK(!pgw_credentials_container_url_allowed("not a url"));
}

static void test_sts_endpoint(void)
{
    char url[PGW_STS_URL_MAX];
    unsetenv("AWS_ENDPOINT_URL_STS");
    unsetenv("AWS_ENDPOINT_URL");
    CHECK(pgw_sts_endpoint("eu-west-1", url, sizeof(url)) == 0);
    CHECK_STR(url, "https://sts.eu-west-1.amazonaws.com/");
    CHECK(pgw_sts_endpoint("cn-north-1", url, sizeof(url)) == 0);
    CHECK_STR(url, "https://sts.cn-north-1.amazonaws.com.cn/");
    CHECK(pgw_sts_endpoint(NULL, url, sizeof(url)) == 0);
    CHECK_STR(url, "https://sts.amazonaws.com/");
    CHECK_STR(pgw_sts_signing_region(NULL), "us-east-1");
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/", 1);
    CHECK(pgw_sts_endpoint("eu-west-1", url, sizeof(url)) == 0);
    CHECK_STR(url, "http://127.0.0.1:9/");
    setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:10/", 1);
    CHECK(pgw_sts_endpoint("eu-west-1", url, sizeof(url)) == 0);
    CHECK_STR(url, "http://127.0.0.1:10/");
    unsetenv("AWS_ENDPOINT_URL_STS");
    unsetenv("AWS_ENDPOINT_URL");
    /* The region goes into the host name: anything but a region name is refused (found by
     * fuzz_url: "us-east\r1", "evil.example/x#" made a URL to another host). */
    static const char *const bad[] = {
        "evil.example/x#", "us-east-1.evil.example", "us-east\r1", "us east-1",
        "US-EAST-1",       "us-east-1:443",          "x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(pgw_sts_endpoint(bad[i], url, sizeof(url)) == -1);
    CHECK(pgw_sts_endpoint("us-gov-west-1", url, sizeof(url)) == 0);
    CHECK_STR(url, "https://sts.us-gov-west-1.amazonaws.com/");
    /* An explicit endpoint override is the operator's choice: the region does not matter. */
    setenv("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:10/", 1);
    CHECK(pgw_sts_endpoint("evil.example/x#", url, sizeof(url)) == 0);
    unsetenv("AWS_ENDPOINT_URL_STS");
}

/* Key ids and session tokens go into request headers: a CR/LF, space, NUL or non-ASCII byte in
 * one from STS, IMDS or a container endpoint is refused (found by fuzz_credentials_sts and
 * fuzz_credentials_imds). */
static void test_header_unsafe_credentials(void)
{
    CHECK(pgw_credentials_usable("AKID", "secret", NULL));
    CHECK(pgw_credentials_usable("AKID", "se cr\net", "tok/+=="));
    CHECK(!pgw_credentials_usable("AKID\r\nX-Injected: 1", "s", NULL));
    CHECK(!pgw_credentials_usable("AKID", "s", "tok\n"));
    CHECK(!pgw_credentials_usable("AK ID", "s", NULL));
    CHECK(!pgw_credentials_usable("AK\xc3\xa9", "s", NULL));
    CHECK(!pgw_credentials_usable("", "s", NULL));
    CHECK(!pgw_credentials_usable("AKID", "", NULL));
    CHECK(pgw_credentials_new("AKID\n", "s", NULL, 0, "t") == NULL);

    pgw_credentials *c = NULL;
    char err[400] = "";
    char xml[1024];
    snprintf(xml, sizeof(xml),
             "<R><Credentials><AccessKeyId>ASIA&#13;&#10;X-Injected: 1</AccessKeyId>"
             "<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
             "<Expiration>2030-01-02T03:04:05Z</Expiration></Credentials></R>");
    CHECK(pgw_sts_parse_answer(200, xml, strlen(xml), "t", &c, err, sizeof(err)) == -1);
    CHECK(c == NULL && strstr(err, "header") != NULL);

    const char json[] = "{\"AccessKeyId\":\"ASIA\",\"SecretAccessKey\":\"s\","
                        "\"Token\":\"tok\\r\\nX-Injected: 1\"}";
    c = pgw_credentials_from_json(json, sizeof(json) - 1, "imds", err, sizeof(err));
    CHECK(c == NULL && strstr(err, "header") != NULL);
}

/* An STS error's code and message are quoted: printable, bounded, never split inside a
 * character (the JSON log line would refuse it). */
static void test_sts_error_quoted(void)
{
    pgw_credentials *c = NULL;
    char err[400] = "";
    const char xml[] = "<ErrorResponse><Error><Code>Bad&#10;Code</Code><Message>caf\xc3\xa9&#9;"
                       "\x7f\"</Message></Error></ErrorResponse>";
    CHECK(pgw_sts_parse_answer(403, xml, sizeof(xml) - 1, "t", &c, err, sizeof(err)) == -1);
    CHECK_STR(err, "STS answered HTTP 403: Bad\\x0aCode: caf\\xc3\\xa9\\x09\\x7f\\\"");
}

/* IMDS answers: the session token goes into a header, the role name into the next URL. */
static void test_imds_parts(void)
{
    char tok[PGW_IMDS_MAX_TOKEN + 1];
    CHECK(pgw_imds_parse_token("AQAEAH-_==", 10, tok, sizeof(tok)) == 0);
    CHECK_STR(tok, "AQAEAH-_==");
    CHECK(pgw_imds_parse_token("ab\0cd", 5, tok, sizeof(tok)) == -1 && tok[0] == '\0');
    CHECK(pgw_imds_parse_token("ab\x01", 3, tok, sizeof(tok)) == -1);
    CHECK(pgw_imds_parse_token("ab cd", 5, tok, sizeof(tok)) == -1);
    CHECK(pgw_imds_parse_token("ab\r\nX: y", 9, tok, sizeof(tok)) == -1);
    CHECK(pgw_imds_parse_token("", 0, tok, sizeof(tok)) == -1);
    char big[PGW_IMDS_MAX_TOKEN + 1];
    memset(big, 'a', sizeof(big));
    CHECK(pgw_imds_parse_token(big, PGW_IMDS_MAX_TOKEN, tok, sizeof(tok)) == 0);
    CHECK(pgw_imds_parse_token(big, PGW_IMDS_MAX_TOKEN + 1, tok, sizeof(tok)) == -1);

    char role[PGW_IMDS_MAX_ROLE + 1];
    CHECK(pgw_imds_parse_role("my.role@x+y=z,w_1-2 \r\nsecond", 29, role, sizeof(role)) == 0);
    CHECK_STR(role, "my.role@x+y=z,w_1-2");
    static const char *const bad[] = {"..",   ".",   "a/b",   "a?b", "a#b",
                                      "a%2e", "a b", "a\x01", "\n",  ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(pgw_imds_parse_role(bad[i], strlen(bad[i]), role, sizeof(role)) == -1);
        CHECK(role[0] == '\0');
    }
    CHECK(pgw_imds_parse_role("a\0b", 3, role, sizeof(role)) == -1);
    char name65[66];
    memset(name65, 'r', 65);
    name65[65] = '\0';
    CHECK(pgw_imds_parse_role(name65, 64, role, sizeof(role)) == 0);
    CHECK(pgw_imds_parse_role(name65, 65, role, sizeof(role)) == -1);
}

/* Environment keys that are set but unusable are an error of that source, not a reason to
 * fall through to the next one. */
static void test_chain_env_unusable(void)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE\n", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "secret", 1);
    pgw_credentials_chain_options o = {0};
    pgw_credentials_source_kind kind = PGW_CREDENTIALS_SOURCE_NONE;
    char err[500] = "";
    CHECK(pgw_credentials_chain_new(&o, &kind, err, sizeof(err)) == NULL);
    CHECK(kind == PGW_CREDENTIALS_SOURCE_ENVIRONMENT);
    CHECK(strstr(err, "AWS_ACCESS_KEY_ID") != NULL && strstr(err, "line break") != NULL);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
}

static void test_secret_file(void)
{
    char path[] = "/tmp/pgw-test-token-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    const char text[] = "  token-value\n\n";
    CHECK(write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1));
    close(fd);
    char err[300];
    char *t = pgw_credentials_read_secret_file(path, 64, err, sizeof(err));
    CHECK_STR(t, "token-value");
    pgw_credentials_secret_free(t);
    CHECK(pgw_credentials_read_secret_file(path, 4, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "larger") != NULL);
    unlink(path);
    CHECK(pgw_credentials_read_secret_file(path, 64, err, sizeof(err)) == NULL);
}

/* What the expat parser keeps: elements matched by local name (any namespace prefix), the
 * first <Credentials> only, a field's whole text (CDATA and nested elements included), no
 * field from deeper than a direct child; a DOCTYPE refuses the answer. */
static void test_sts_xml_shapes(void)
{
    pgw_credentials *c = NULL;
    char err[400] = "";
    const char prefixed[] =
        "<s:R xmlns:s=\"https://sts.amazonaws.com/doc/2011-06-15/\"><s:Result><s:Credentials>"
        "<s:AccessKeyId>ASIA<![CDATA[PFX]]></s:AccessKeyId>"
        "<s:SecretAccessKey>se<b>cr</b>et</s:SecretAccessKey><s:SessionToken>tok</s:SessionToken>"
        "<s:Expiration>2030-01-02T03:04:05Z</s:Expiration></s:Credentials>"
        "<s:Credentials><s:AccessKeyId>SECOND</s:AccessKeyId></s:Credentials></s:Result></s:R>";
    CHECK(pgw_sts_parse_answer(200, prefixed, sizeof(prefixed) - 1, "t", &c, err, sizeof(err)) ==
          0);
    if (c) {
        CHECK_STR(c->access_key_id, "ASIAPFX");
        CHECK_STR(c->secret_access_key, "secret");
        CHECK_STR(c->session_token, "tok");
        pgw_credentials_unref(c);
        c = NULL;
    }
    const char nested[] = "<R><Credentials><X><AccessKeyId>A</AccessKeyId></X>"
                          "<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
                          "<Expiration>2030-01-02T03:04:05Z</Expiration></Credentials></R>";
    CHECK(pgw_sts_parse_answer(200, nested, sizeof(nested) - 1, "t", &c, err, sizeof(err)) == -1);
    CHECK(c == NULL && strstr(err, "lacks Credentials") != NULL);
    const char doctype[] = "<!DOCTYPE R><R><Credentials><AccessKeyId>A</AccessKeyId>"
                           "<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
                           "<Expiration>2030-01-02T03:04:05Z</Expiration></Credentials></R>";
    CHECK(pgw_sts_parse_answer(200, doctype, sizeof(doctype) - 1, "t", &c, err, sizeof(err)) == -1);
    CHECK(c == NULL && strstr(err, "readable XML") != NULL);
    const char no_error[] = "<ErrorResponse><Other>x</Other></ErrorResponse>";
    CHECK(pgw_sts_parse_answer(500, no_error, sizeof(no_error) - 1, "t", &c, err, sizeof(err)) ==
          -1);
    CHECK_STR(err, "STS answered HTTP 500: UnknownError: no message");
}

int main(void)
{
    test_time();
    test_sts();
    test_json();
    test_container_allow_list();
    test_sts_endpoint();
    test_secret_file();
    test_header_unsafe_credentials();
    test_sts_error_quoted();
    test_sts_xml_shapes();
    test_imds_parts();
    test_chain_env_unusable();
    return pgw_test_finish("test_credentials_parse");
}
