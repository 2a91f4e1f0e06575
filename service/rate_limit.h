/* rate_limit: token buckets.
 *
 * Per caller: one bucket per caller identity (calls without an identity share one bucket). The
 * table is bounded: buckets idle long enough to have refilled are dropped (a fresh bucket is the
 * same), and when it is full the least recently used bucket is evicted. A caller over its rate
 * gets RESOURCE_EXHAUSTED.
 *
 * Upstream: one global bucket in front of the calls to AWS, so the shared account stays under
 * its Personalize API quota. Only calls that really go upstream take from it (cache hits never
 * do). A call that finds it empty reserves the next token and waits for it on a loop timer, as
 * long as that is within the maximum wait and the caller's deadline; otherwise it is refused at
 * once (UNAVAILABLE), rather than after waiting for a token it could never get in time.
 *
 * Loop thread only; times are CLOCK_MONOTONIC milliseconds passed in by the caller. */
#ifndef PGW_RATE_LIMIT_H
#define PGW_RATE_LIMIT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct pgw_rate_limit pgw_rate_limit;
typedef struct pgw_rate_limit_wait pgw_rate_limit_wait;

typedef struct pgw_rate_limit_options {
    double caller_rate;        /* tokens per second per caller; 0 = no per-caller limit */
    double caller_burst;       /* bucket size; values below 1 mean max(1, caller_rate) */
    size_t caller_max_entries; /* buckets kept at most; 0 = 10000 */
    double upstream_rate;      /* upstream calls per second; 0 = no upstream limit */
    double upstream_burst;     /* values below 1 mean max(1, upstream_rate) */
    int upstream_max_wait_ms;  /* longest a call waits for an upstream token */
} pgw_rate_limit_options;

/* Creates the limiter; timers run on base (borrowed). Returns NULL on allocation failure or a
 * negative rate. Free with pgw_rate_limit_free. */
pgw_rate_limit *pgw_rate_limit_new(struct event_base *base, const pgw_rate_limit_options *options);

/* Frees the limiter. Waits still pending are dropped without their callbacks: cancel them
 * first if their owners care. NULL is fine. */
void pgw_rate_limit_free(pgw_rate_limit *rl);

/* Takes one token from the bucket of `identity` (NULL or "": the shared anonymous bucket).
 * Returns 1 when the call may proceed, 0 when the caller is over its limit (then, if
 * retry_after_ms is not NULL, the time until a token is available). Always 1 when per-caller
 * limits are off or rl is NULL. */
int pgw_rate_limit_caller_take(pgw_rate_limit *rl, const char *identity, int64_t now_ms,
                               int64_t *retry_after_ms);

/* Nonzero when per-caller limits are on (then callers must go through
 * pgw_rate_limit_caller_take on the loop thread). */
int pgw_rate_limit_caller_enabled(const pgw_rate_limit *rl);

/* Per-caller buckets held now (for tests and metrics). */
size_t pgw_rate_limit_caller_entries(const pgw_rate_limit *rl);

typedef enum pgw_rate_limit_result {
    PGW_RATE_LIMIT_GRANTED = 0, /* a token was taken: go upstream now; no callback */
    PGW_RATE_LIMIT_WAIT,        /* a token is reserved: cb fires when it is due */
    PGW_RATE_LIMIT_REJECTED,    /* no token within the allowed wait: UNAVAILABLE; no callback */
} pgw_rate_limit_result;

/* Fires on the loop thread when a reserved upstream token is due; the wait handle is gone by
 * then. */
typedef void (*pgw_rate_limit_cb)(void *user_data);

/* Asks for one upstream token before a call to AWS. The wait is bounded by the configured
 * maximum and by deadline_ms (CLOCK_MONOTONIC ms; 0 = none). On PGW_RATE_LIMIT_WAIT, *wait
 * receives a handle for pgw_rate_limit_upstream_cancel and cb fires exactly once unless the
 * wait is cancelled; on the other results cb never fires. Always GRANTED when the upstream
 * limit is off or rl is NULL. */
pgw_rate_limit_result pgw_rate_limit_upstream_acquire(pgw_rate_limit *rl, int64_t now_ms,
                                                      int64_t deadline_ms, pgw_rate_limit_cb cb,
                                                      void *user_data, pgw_rate_limit_wait **wait);

/* Abandons a pending wait (its caller went away): the callback will not fire and the reserved
 * token goes back to the bucket. */
void pgw_rate_limit_upstream_cancel(pgw_rate_limit *rl, pgw_rate_limit_wait *wait);

/* Waits pending now (for tests and metrics). */
size_t pgw_rate_limit_upstream_waiting(const pgw_rate_limit *rl);

#endif
