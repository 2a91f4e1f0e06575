/* http_request: routes, the REST path's ARN (a "%00" survives decoding, with the length, so the
 * ARN check refuses it) and the POST / body (jansson refuses \u0000 and invalid UTF-8). */
#include <stdlib.h>
#include <string.h>

#include "service/aws/arn.h"
#include "service/http_request.h"
#include "test_util.h"

#define GOOD "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/x"

static void test_routes(void)
{
    const char *rest = "untouched";
    CHECK(pgw_http_route_of(NULL, &rest) == PGW_HTTP_ROUTE_AWS && rest == NULL);
    CHECK(pgw_http_route_of("", NULL) == PGW_HTTP_ROUTE_AWS);
    CHECK(pgw_http_route_of("/", NULL) == PGW_HTTP_ROUTE_AWS);
    CHECK(pgw_http_route_of("/v1/batch-inference-jobs/abc", &rest) == PGW_HTTP_ROUTE_REST);
    CHECK_STR(rest, "abc");
    CHECK(pgw_http_route_of("/v1/batch-inference-jobs/", &rest) == PGW_HTTP_ROUTE_NOT_FOUND);
    CHECK(rest == NULL);
    CHECK(pgw_http_route_of("/v1/batch-inference-jobs", NULL) == PGW_HTTP_ROUTE_NOT_FOUND);
    CHECK(pgw_http_route_of("/healthz", NULL) == PGW_HTTP_ROUTE_HEALTHZ);
    CHECK(pgw_http_route_of("/readyz", NULL) == PGW_HTTP_ROUTE_READYZ);
    CHECK(pgw_http_route_of("/metrics", NULL) == PGW_HTTP_ROUTE_METRICS);
    CHECK(pgw_http_route_of("/metrics/", NULL) == PGW_HTTP_ROUTE_NOT_FOUND);
    CHECK(pgw_http_route_of("//", NULL) == PGW_HTTP_ROUTE_NOT_FOUND);
}

static void test_rest_arn(void)
{
    size_t len = 0;
    char *arn = pgw_http_rest_arn("arn%3Aaws%3Apersonalize%3Aus-east-1%3A123456789012%3Abatch-"
                                  "inference-job%2Fx",
                                  &len);
    CHECK(arn && len == strlen(GOOD));
    CHECK_STR(arn, GOOD);
    free(arn);
    /* "+" is a plus in a path, not a space. */
    arn = pgw_http_rest_arn("a+b", &len);
    CHECK(arn && len == 3);
    CHECK_STR(arn, "a+b");
    free(arn);
    /* An encoded NUL stays, and only the length shows it; the ARN check refuses it. */
    arn = pgw_http_rest_arn(GOOD "%00anything", &len);
    CHECK(arn && len == strlen(GOOD) + 9 && strlen(arn) == strlen(GOOD));
    pgw_arn a;
    char err[300] = "";
    CHECK(arn && pgw_arn_parse(arn, len, &a, err, sizeof(err)) == -1);
    CHECK(strstr(err, "control character 0x00 at offset 64") != NULL);
    free(arn);
    /* Invalid UTF-8 through the path: decoded as is, refused by the check. */
    arn = pgw_http_rest_arn(GOOD "%FF", &len);
    CHECK(arn && len == strlen(GOOD) + 1 && (unsigned char)arn[len - 1] == 0xff);
    CHECK(arn && pgw_arn_parse(arn, len, &a, err, sizeof(err)) == -1);
    CHECK(strstr(err, "non-ASCII byte at offset 64") != NULL);
    free(arn);
}

static void expect_body_error(const char *body, size_t len, const char *problem, const char *type)
{
    pgw_http_aws_request r;
    CHECK(pgw_http_aws_request_parse(&r, body, len) == -1);
    CHECK(r.arn == NULL);
    CHECK_STR(r.problem, problem);
    CHECK_STR(r.aws_type, type);
    pgw_http_aws_request_cleanup(&r);
}

static void test_aws_body(void)
{
    const char ok[] = "{\"batchInferenceJobArn\":\"" GOOD "\",\"extra\":[1,2]}";
    pgw_http_aws_request r;
    CHECK(pgw_http_aws_request_parse(&r, ok, sizeof(ok) - 1) == 0);
    CHECK(r.arn && r.arn_len == strlen(GOOD) && r.problem == NULL && r.aws_type == NULL);
    CHECK_STR(r.arn, GOOD);
    pgw_http_aws_request_cleanup(&r);
    CHECK(r.root == NULL && r.arn == NULL);

    const char *not_json = "the request body is not valid JSON";
    expect_body_error("", 0, not_json, "SerializationException");
    expect_body_error("{", 1, not_json, "SerializationException");
    expect_body_error(NULL, 5, not_json, "SerializationException");
    /* jansson without JSON_ALLOW_NUL refuses \u0000, and refuses bytes that are not UTF-8. */
    const char nul[] = "{\"batchInferenceJobArn\":\"" GOOD "\\u0000anything\"}";
    expect_body_error(nul, sizeof(nul) - 1, not_json, "SerializationException");
    const char raw_nul[] = "{\"batchInferenceJobArn\":\"" GOOD "\0anything\"}";
    expect_body_error(raw_nul, sizeof(raw_nul) - 1, not_json, "SerializationException");
    const char bad_utf8[] = "{\"batchInferenceJobArn\":\"" GOOD "\xff\"}";
    expect_body_error(bad_utf8, sizeof(bad_utf8) - 1, not_json, "SerializationException");
    expect_body_error("[1]", 3, "the request body must be a JSON object", "SerializationException");
    expect_body_error("{}", 2, "batchInferenceJobArn is required", "InvalidInputException");
    expect_body_error("{\"batchInferenceJobArn\":null}", 29, "batchInferenceJobArn is required",
                      "InvalidInputException");
    expect_body_error("{\"batchInferenceJobArn\":7}", 26, "batchInferenceJobArn must be a string",
                      "SerializationException");

    /* Valid UTF-8 that is not ASCII parses; the ARN check refuses it. */
    const char utf8[] = "{\"batchInferenceJobArn\":\"" GOOD "\\u00e9\"}";
    CHECK(pgw_http_aws_request_parse(&r, utf8, sizeof(utf8) - 1) == 0);
    CHECK(r.arn_len == strlen(GOOD) + 2);
    pgw_arn a;
    CHECK(pgw_arn_parse(r.arn, r.arn_len, &a, NULL, 0) == -1);
    pgw_http_aws_request_cleanup(&r);
}

int main(void)
{
    test_routes();
    test_rest_arn();
    test_aws_body();
    return pgw_test_finish("test_http_request");
}
