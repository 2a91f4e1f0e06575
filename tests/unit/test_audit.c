/* Audit records: the fields of one line, and that odd caller input never drops a line. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/audit.h"
#include "test_util.h"

static void test_record(void)
{
    const char *arn = "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/j";
    pgw_audit_record r = {.frontend = "grpc",
                          .identity = "spiffe://test/ns/a/sa/allowed",
                          .arn = arn,
                          .arn_len = strlen(arn),
                          .decision = PGW_AUDIT_ALLOW,
                          .source = PGW_SOURCE_UPSTREAM,
                          .aws_request_id = "req-123",
                          .code = PGW_OK,
                          .latency_us = 1234};
    json_t *o = pgw_audit_record_json(&r);
    CHECK_STR(json_string_value(json_object_get(o, "log")), "audit");
    CHECK_STR(json_string_value(json_object_get(o, "identity")), "spiffe://test/ns/a/sa/allowed");
    CHECK_STR(json_string_value(json_object_get(o, "arn")), arn);
    CHECK_STR(json_string_value(json_object_get(o, "decision")), "allow");
    CHECK_STR(json_string_value(json_object_get(o, "cache")), "miss");
    CHECK_STR(json_string_value(json_object_get(o, "tier")), "upstream");
    CHECK_STR(json_string_value(json_object_get(o, "aws_request_id")), "req-123");
    CHECK_STR(json_string_value(json_object_get(o, "code")), "OK");
    CHECK(json_integer_value(json_object_get(o, "latency_us")) == 1234);
    json_decref(o);

    /* anonymous, denied, not UTF-8 */
    r.identity = NULL;
    r.arn = "arn:\xff";
    r.arn_len = 5;
    r.decision = PGW_AUDIT_DENY;
    r.source = PGW_SOURCE_NONE;
    r.aws_request_id = NULL;
    r.code = PGW_PERMISSION_DENIED;
    o = pgw_audit_record_json(&r);
    CHECK(json_is_null(json_object_get(o, "identity")));
    CHECK(json_is_null(json_object_get(o, "aws_request_id")));
    CHECK_STR(json_string_value(json_object_get(o, "arn")), "(not UTF-8)");
    CHECK_STR(json_string_value(json_object_get(o, "decision")), "deny");
    CHECK_STR(json_string_value(json_object_get(o, "cache")), "none");
    CHECK_STR(json_string_value(json_object_get(o, "code")), "PERMISSION_DENIED");
    json_decref(o);
}

static void test_line(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    pgw_audit *a = pgw_audit_new(f);
    pgw_audit_record r = {.frontend = "http",
                          .identity = "svc.example",
                          .arn = "x",
                          .arn_len = 1,
                          .decision = PGW_AUDIT_RATE_LIMITED,
                          .code = PGW_RESOURCE_EXHAUSTED};
    pgw_audit_log(a, &r);
    pgw_audit_log(NULL, &r); /* auditing off: nothing */
    pgw_audit_free(a);
    fclose(f);
    CHECK(len > 0 && buf[len - 1] == '\n');
    CHECK(memchr(buf, '\n', len) == buf + len - 1); /* exactly one line */
    json_error_t e;
    json_t *line = json_loadb(buf, len, 0, &e);
    CHECK(line != NULL);
    CHECK_STR(json_string_value(json_object_get(line, "msg")), "audit");
    CHECK(json_string_value(json_object_get(line, "time")) != NULL);
    CHECK_STR(json_string_value(json_object_get(line, "decision")), "rate_limited");
    CHECK_STR(json_string_value(json_object_get(line, "frontend")), "http");
    json_decref(line);
    free(buf);
}

int main(void)
{
    test_record();
    test_line();
    return pgw_test_finish("test_audit");
}
