/* A caching provider in front of one credentials source: what makes temporary credentials
 * safe to use under load.
 *
 *  - Refresh ahead: credentials with an expiry are refreshed in the background at
 *    max(expiry - refresh_window, obtained + lifetime/2) (never later than expiry -
 *    expiry_margin - 1 s): 15 minutes ahead for hour-long STS credentials, half-way for
 *    short-lived ones (so test credentials living 30 s refresh after 15 s, not in a loop).
 *  - One refresh at a time, however many callers wait; callers keep getting the current
 *    credentials while a refresh runs.
 *  - Never hands out credentials within expiry_margin of their expiry: a caller then waits for
 *    the refresh (or gets an error when it fails).
 *  - A failed refresh keeps the last good credentials until they really expire, and retries
 *    with capped exponential backoff and full jitter (half the delay fixed, half random).
 *  - invalidate (AWS said ExpiredToken) forces a refresh that the next get waits for; while
 *    that refresh runs, every caller waits for it (none gets the rejected credentials) and
 *    further invalidates join it, so a burst of rejected calls costs one or two refreshes.
 *  - on_change hears of every new credentials and of their loss (for readiness and metrics).
 *
 * Loop thread only; timers on the given event base. */
#ifndef PGW_CREDENTIALS_CACHED_H
#define PGW_CREDENTIALS_CACHED_H

#include <stdint.h>

#include "service/aws/credentials.h"

struct event_base;

#define PGW_CREDENTIALS_REFRESH_WINDOW_MS (15 * 60 * 1000) /* botocore's advisory window */
#define PGW_CREDENTIALS_EXPIRY_MARGIN_MS  15000 /* > the 10 s the Personalize client refuses */
#define PGW_CREDENTIALS_BACKOFF_BASE_MS   1000
#define PGW_CREDENTIALS_BACKOFF_MAX_MS    60000

typedef struct pgw_credentials_cached_options {
    struct event_base *base;
    pgw_credentials_provider *source; /* the provider takes ownership (also on failure) */
    const char *name;                 /* the source's name, for logs ("web_identity", ...) */
    int64_t refresh_window_ms;        /* 0: PGW_CREDENTIALS_REFRESH_WINDOW_MS; <0: none */
    int64_t expiry_margin_ms;         /* 0: PGW_CREDENTIALS_EXPIRY_MARGIN_MS */
    int64_t backoff_base_ms;          /* 0: PGW_CREDENTIALS_BACKOFF_BASE_MS */
    int64_t backoff_max_ms;           /* 0: PGW_CREDENTIALS_BACKOFF_MAX_MS */
    int eager;                        /* start fetching at once (from the loop) */
    pgw_credentials_change_cb on_change;
    void *on_change_data;
    /* Tests: the wall clock (default pgw_now_wall_ms). Timers still run on real time. */
    int64_t (*now_wall_ms)(void *clock_data);
    void *clock_data;
} pgw_credentials_cached_options;

/* Creates the provider. Returns NULL on allocation failure (the source is freed then too). */
pgw_credentials_provider *
pgw_credentials_provider_cached_new(const pgw_credentials_cached_options *options);

/* Runs the timer's work now: drops credentials past their margin, starts a due refresh or
 * retry. For tests that move the injected clock. */
void pgw_credentials_cached_tick(pgw_credentials_provider *provider);

/* When the next background refresh or retry is due (wall ms, on the provider's clock), or 0
 * when none is scheduled. For tests and logs. */
int64_t pgw_credentials_cached_next_refresh_ms(const pgw_credentials_provider *provider);

/* Counters, for tests and metrics. */
typedef struct pgw_credentials_cached_stats {
    unsigned long refreshes; /* source fetches started */
    unsigned long failures;  /* fetches that failed */
    int consecutive_failures;
    int refreshing; /* a fetch is in flight */
    int waiting;    /* callers waiting for it */
} pgw_credentials_cached_stats;

void pgw_credentials_cached_get_stats(const pgw_credentials_provider *provider,
                                      pgw_credentials_cached_stats *out);

#endif
