/* lookup: the one path every frontend uses to answer "describe this batch inference job".
 *
 *   authorize -> L1 -> Redis -> coalesce -> upstream (Personalize)
 *
 * lookup knows nothing of gRPC or HTTP. Everything here runs on the event-loop thread: a
 * frontend on another thread hands work over with pgw_loop_post() first. */
#ifndef PGW_LOOKUP_H
#define PGW_LOOKUP_H

#include <stddef.h>
#include <stdint.h>

#include "service/status.h"

typedef struct pgw_lookup pgw_lookup;
typedef struct pgw_lookup_req pgw_lookup_req;

/* Where an answer came from; the frontends turn it into `x-cache: hit|miss|stale`. */
typedef enum pgw_cache_source {
    PGW_SOURCE_NONE = 0, /* an error that no tier produced (bad ARN, denied, ...) */
    PGW_SOURCE_UPSTREAM, /* x-cache: miss */
    PGW_SOURCE_L1,       /* x-cache: hit */
    PGW_SOURCE_REDIS,    /* x-cache: hit */
    PGW_SOURCE_STALE,    /* x-cache: stale (upstream failed, a stale entry answered) */
} pgw_cache_source;

/* The `x-cache` word for a source: "hit", "miss" or "stale"; NULL for PGW_SOURCE_NONE. */
const char *pgw_cache_source_name(pgw_cache_source source);

typedef struct pgw_lookup_params {
    const char *arn; /* borrowed for the call to pgw_lookup_start only */
    size_t arn_len;
    int64_t deadline_ms;  /* CLOCK_MONOTONIC ms (pgw_now_mono_ms); 0 = none */
    int no_cache;         /* `cache-control: no-cache`: skip cached answers, still coalesce */
    const char *identity; /* authenticated caller identity, or NULL; borrowed for the call */
    const char *frontend; /* "grpc" or "http", for metrics and the audit log */
} pgw_lookup_params;

/* The answer. Every pointer is borrowed: valid only while the callback runs. */
typedef struct pgw_lookup_result {
    pgw_code code;
    const char *message;   /* human-readable, never NULL, never holds a secret */
    const uint8_t *job_pb; /* packed personalize_gateway.v1.BatchInferenceJob (OK only) */
    size_t job_pb_len;
    pgw_cache_source source;
    int64_t age_s;              /* seconds since the answer was fetched from AWS */
    const char *aws_error_code; /* e.g. "ResourceNotFoundException", or NULL */
    const char *aws_request_id; /* x-amzn-RequestId of the upstream answer, or NULL */
} pgw_lookup_result;

/* Fires exactly once per successful pgw_lookup_start(), on the loop thread, unless the request
 * was cancelled first. It may run before pgw_lookup_start() returns (e.g. a malformed ARN or an
 * L1 hit); the request handle is invalid once it has run. */
typedef void (*pgw_lookup_cb)(const pgw_lookup_result *result, void *user_data);

/* Starts a lookup. Returns a handle for pgw_lookup_cancel(), or NULL if the callback has
 * already run (a synchronous answer). Loop thread only. */
pgw_lookup_req *pgw_lookup_start(pgw_lookup *lookup, const pgw_lookup_params *params,
                                 pgw_lookup_cb cb, void *user_data);

/* What pgw_lookup_answer_cached did. */
typedef enum pgw_cached_answer {
    PGW_CACHED_NOT_ANSWERED = 0, /* not in the in-process cache: use pgw_lookup_start */
    PGW_CACHED_ANSWERED,         /* the callback ran, on the calling thread */
    /* Not answered here, but the in-process cache holds the ARN (past its short L1 time, or
     * the caller needs per-caller checks): use pgw_lookup_start, and expect a cache hit, so
     * a frontend hands it to the loop ahead of lookups of cold ARNs (pgw_loop_post_urgent). */
    PGW_CACHED_KNOWN,
} pgw_cached_answer;

/* Answers from the in-process cache on the calling thread, when it can: a fresh L1 hit for a
 * caller that needs no per-caller state (no policy, no per-caller rate limit) and did not ask
 * for no-cache. Any thread: it spares cache hits the hop to the loop thread. */
pgw_cached_answer pgw_lookup_answer_cached(pgw_lookup *lookup, const pgw_lookup_params *params,
                                           pgw_lookup_cb cb, void *user_data);

typedef enum pgw_lookup_poll_mode {
    PGW_LOOKUP_POLL_FETCH, /* a fresh answer from AWS (like no-cache), refreshing the caches */
    PGW_LOOKUP_POLL_PEEK,  /* the cache tiers only (L1, Redis); a miss answers UNAVAILABLE */
} pgw_lookup_poll_mode;

/* A watch's poll of an ARN whose watchers were authorized when their streams opened: no
 * policy, caller limit or audit line; coalesced with Describe misses and within the upstream
 * rate limit like any fetch. Same callback and handle rules as pgw_lookup_start. */
pgw_lookup_req *pgw_lookup_poll(pgw_lookup *lookup, const char *arn, pgw_lookup_poll_mode mode,
                                int64_t deadline_ms, pgw_lookup_cb cb, void *user_data);

/* Abandons a request whose caller went away: its callback will not fire. Shared work (an
 * upstream fetch other callers wait for) continues. Loop thread only. */
void pgw_lookup_cancel(pgw_lookup_req *req);

#endif
