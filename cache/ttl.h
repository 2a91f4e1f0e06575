/* TTL policy: how long a cached answer stays fresh, how long it may serve as a stale fallback,
 * and how long the in-process tier keeps it. Terminal job statuses (ACTIVE, CREATE FAILED)
 * never change again, so they are kept long; running ones (PENDING, IN PROGRESS, and any
 * status AWS adds later) briefly, so pollers see progress.
 *
 * Jitter spreads expiries of entries written together so they are not refetched together;
 * the random input is a parameter so tests are exact. Pure functions, no I/O, any thread. */
#ifndef PGW_CACHE_TTL_H
#define PGW_CACHE_TTL_H

#include <stdint.h>

typedef struct pgw_ttl_config {
    int64_t terminal_ttl_ms; /* ACTIVE, CREATE FAILED; default 3600 s */
    int64_t running_ttl_ms;  /* PENDING, IN PROGRESS, unknown; default 10 s */
    int64_t negative_ttl_ms; /* NOT_FOUND answers; default 5 s */
    int64_t stale_window_ms; /* kept past freshness as an upstream-failure fallback; 300 s */
    uint32_t jitter_pct;     /* +- percent applied to fresh TTLs, 0..100; default 10 */
    int64_t l1_ttl_ms;       /* in-process tier; default 1 s; capped by entry freshness */
} pgw_ttl_config;

/* The wall-clock times to stamp on a new cache entry. */
typedef struct pgw_ttl_plan {
    int64_t fetched_at_ms;
    int64_t fresh_until_ms;
    int64_t stale_until_ms;
    int64_t redis_ttl_ms; /* PX for Redis: until stale_until (>= 1) */
} pgw_ttl_plan;

/* Fills *cfg with the defaults above. */
void pgw_ttl_config_defaults(pgw_ttl_config *cfg);

/* Nonzero for statuses that never change again ("ACTIVE", "CREATE FAILED"; exact match). */
int pgw_ttl_status_is_terminal(const char *status);

/* Applies +-pct jitter to base_ms using `random` (uniform over uint32). The result lies in
 * [base - base*pct/100, base + base*pct/100] and is at least 1 (when base_ms >= 1). */
int64_t pgw_ttl_jitter(int64_t base_ms, uint32_t pct, uint32_t random);

/* Fresh TTL in ms for a job with this status (NULL counts as unknown), jittered. */
int64_t pgw_ttl_for_status(const pgw_ttl_config *cfg, const char *status, uint32_t random);

/* Fresh TTL in ms for a NOT_FOUND answer, jittered. */
int64_t pgw_ttl_negative(const pgw_ttl_config *cfg, uint32_t random);

/* Computes the entry times for an answer fetched at wall time now_ms. status == NULL with
 * negative != 0 plans a NOT_FOUND entry. */
void pgw_ttl_plan_entry(const pgw_ttl_config *cfg, const char *status, int negative, int64_t now_ms,
                        uint32_t random, pgw_ttl_plan *out);

/* How long (ms) the L1 tier may keep an entry fresh until wall time fresh_until_ms, at wall
 * time now_ms: min(cfg->l1_ttl_ms, fresh_until_ms - now_ms). Returns <= 0 when it should not
 * be stored in L1 at all. */
int64_t pgw_ttl_l1_ms(const pgw_ttl_config *cfg, int64_t fresh_until_ms, int64_t now_ms);

#endif
