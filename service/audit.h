/* audit: one JSON line per call on stdout, whatever the log level, for "who read what":
 *
 *   {"time":"2025-01-01T00:00:00.000Z","level":"info","msg":"audit","log":"audit",
 *    "frontend":"grpc","identity":"spiffe://example.org/ns/a/sa/poller","arn":"arn:aws:...",
 *    "decision":"allow","cache":"hit","aws_request_id":null,"code":"OK","latency_us":412}
 *
 * Lines share stdout with the ordinary logs (same stream lock, so lines never interleave) and
 * are told apart by "log":"audit". Nothing secret is ever part of a record. Thread-safe. */
#ifndef PGW_AUDIT_H
#define PGW_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "service/lookup.h"
#include "service/status.h"

typedef struct pgw_audit pgw_audit;

/* What the gateway's own checks decided about the call. */
typedef enum pgw_audit_decision {
    PGW_AUDIT_ALLOW = 0,        /* passed identity, policy and rate-limit checks */
    PGW_AUDIT_DENY,             /* refused by the policy: PERMISSION_DENIED */
    PGW_AUDIT_UNAUTHENTICATED,  /* no identity where one is required */
    PGW_AUDIT_RATE_LIMITED,     /* over the caller's rate limit */
    PGW_AUDIT_INVALID,          /* refused before the checks (malformed request) */
    PGW_AUDIT_UPSTREAM_LIMITED, /* allowed, but no upstream token in time: UNAVAILABLE */
} pgw_audit_decision;

typedef struct pgw_audit_record {
    const char *frontend; /* "grpc" or "http" */
    const char *identity; /* NULL: anonymous */
    const char *arn;      /* as the caller sent it (need not be valid), not NUL-terminated */
    size_t arn_len;
    pgw_audit_decision decision;
    pgw_cache_source source;    /* which tier answered (PGW_SOURCE_NONE: none) */
    const char *aws_request_id; /* NULL when no upstream answer is involved */
    pgw_code code;
    int64_t latency_us;
} pgw_audit_record;

/* Creates an audit writer on `out` (borrowed, normally stdout). Returns NULL on allocation
 * failure. */
pgw_audit *pgw_audit_new(FILE *out);

/* Frees the writer (NULL is fine). */
void pgw_audit_free(pgw_audit *audit);

/* Writes one record as one line. A NULL audit writes nothing (auditing is off). Any thread. */
void pgw_audit_log(pgw_audit *audit, const pgw_audit_record *record);

/* "allow", "deny", ... as written in the "decision" field; never NULL. */
const char *pgw_audit_decision_name(pgw_audit_decision decision);

/* Builds the JSON object of a record (without time and level), for tests. Returns a new
 * reference. */
json_t *pgw_audit_record_json(const pgw_audit_record *record);

#endif
