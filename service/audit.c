#include "service/audit.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "service/log.h"
#include "service/metrics.h"

/* Longest ARN text recorded; a longer one (already refused as malformed) is cut. */
#define AUDIT_MAX_ARN 300

struct pgw_audit {
    FILE *out;
};

pgw_audit *pgw_audit_new(FILE *out)
{
    pgw_audit *a = calloc(1, sizeof(*a));
    if (a)
        a->out = out;
    return a;
}

void pgw_audit_free(pgw_audit *a)
{
    free(a);
}

const char *pgw_audit_decision_name(pgw_audit_decision d)
{
    switch (d) {
    case PGW_AUDIT_ALLOW:
        return "allow";
    case PGW_AUDIT_DENY:
        return "deny";
    case PGW_AUDIT_UNAUTHENTICATED:
        return "unauthenticated";
    case PGW_AUDIT_RATE_LIMITED:
        return "rate_limited";
    case PGW_AUDIT_INVALID:
        return "invalid";
    case PGW_AUDIT_UPSTREAM_LIMITED:
        return "upstream_limited";
    }
    return "unknown";
}

static const char *tier_name(pgw_cache_source s)
{
    switch (s) {
    case PGW_SOURCE_UPSTREAM:
        return "upstream";
    case PGW_SOURCE_L1:
        return "l1";
    case PGW_SOURCE_REDIS:
        return "redis";
    case PGW_SOURCE_STALE:
        return "stale";
    case PGW_SOURCE_NONE:
        break;
    }
    return "none";
}

/* A JSON string of caller-supplied bytes; bytes that are not UTF-8 (an ARN never is) make the
 * value a placeholder rather than dropping the line. */
static json_t *caller_string(const char *s, size_t len)
{
    if (!s)
        return json_null();
    json_t *v = json_stringn(s, len);
    return v ? v : json_string("(not UTF-8)");
}

json_t *pgw_audit_record_json(const pgw_audit_record *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "log", json_string("audit"));
    json_object_set_new(o, "frontend", json_string(r->frontend ? r->frontend : "unknown"));
    json_object_set_new(o, "identity",
                        r->identity && *r->identity
                            ? caller_string(r->identity, strlen(r->identity))
                            : json_null());
    json_object_set_new(
        o, "arn", caller_string(r->arn, r->arn_len > AUDIT_MAX_ARN ? AUDIT_MAX_ARN : r->arn_len));
    json_object_set_new(o, "decision", json_string(pgw_audit_decision_name(r->decision)));
    json_object_set_new(
        o, "cache",
        json_string(pgw_cache_source_name(r->source) ? pgw_cache_source_name(r->source) : "none"));
    json_object_set_new(o, "tier", json_string(tier_name(r->source)));
    json_object_set_new(
        o, "aws_request_id",
        caller_string(r->aws_request_id, r->aws_request_id ? strlen(r->aws_request_id) : 0));
    json_object_set_new(o, "code", json_string(pgw_code_name(r->code)));
    json_object_set_new(o, "latency_us", json_integer(r->latency_us));
    return o;
}

void pgw_audit_log(pgw_audit *a, const pgw_audit_record *r)
{
    if (!a)
        return;
    char when[40];
    pgw_log_time_now(when, sizeof(when));

    /* The same leading fields as service/log.c's lines, so one pipeline reads both. */
    json_t *line = json_object();
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "level", json_string("info"));
    json_object_set_new(line, "msg", json_string("audit"));
    json_t *fields = pgw_audit_record_json(r);
    json_object_update(line, fields);
    json_decref(fields);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    if (pgw_log_write_line(a->out, text) != 0)
        pgw_metrics_log_write_failure("audit");
    free(text);
}
