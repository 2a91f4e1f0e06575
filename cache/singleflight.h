/* singleflight: request coalescing. While one upstream fetch for a key is in flight, later
 * lookups of the same key join it instead of starting their own; when the fetch completes,
 * every joined waiter gets the same answer.
 *
 * Single-threaded: every call happens on the event-loop thread, so there are no locks.
 *
 * Lifecycle: the first joiner of a key becomes the leader and starts the work; it must later
 * call pgw_singleflight_complete() exactly once for that flight (even if every waiter left:
 * its result still refreshes the cache). complete() unregisters the flight BEFORE delivering,
 * so a waiter callback that joins the same key starts a new flight rather than joining the one
 * that is finishing. */
#ifndef PGW_CACHE_SINGLEFLIGHT_H
#define PGW_CACHE_SINGLEFLIGHT_H

#include <stddef.h>
#include <stdint.h>

typedef struct pgw_singleflight pgw_singleflight;
typedef struct pgw_flight pgw_flight;
typedef struct pgw_flight_waiter pgw_flight_waiter;

/* What a flight delivers. Every pointer is borrowed from the leader: valid only while the
 * waiter callbacks run (during pgw_singleflight_complete). */
typedef struct pgw_flight_result {
    int code;            /* caller-defined, e.g. a pgw_code */
    const char *message; /* may be NULL */
    const uint8_t *data; /* e.g. an encoded cache entry; may be NULL */
    size_t data_len;
    const void *ctx; /* any extra caller-defined context; may be NULL */
} pgw_flight_result;

/* Runs once per waiter that did not leave, from pgw_singleflight_complete(). The waiter
 * handle is invalid from the moment its callback starts. */
typedef void (*pgw_flight_cb)(const pgw_flight_result *result, void *user_data);

typedef struct pgw_singleflight_stats {
    uint64_t flights;   /* flights started (leaders) */
    uint64_t coalesced; /* joins that found a flight already running */
    uint64_t left;      /* waiters removed by pgw_singleflight_leave */
    size_t in_flight;   /* flights currently running */
} pgw_singleflight_stats;

/* Creates an empty coalescer. Returns NULL on allocation failure. */
pgw_singleflight *pgw_singleflight_new(void);

/* Frees the coalescer. Flights still running are dropped with their waiters, whose callbacks
 * never run; their leaders must not call complete() afterwards. Free at shutdown only. */
void pgw_singleflight_free(pgw_singleflight *sf);

/* Joins the flight for key (NUL-terminated, copied), creating it when none runs; *is_leader
 * is set to 1 for the creator (who must start the work and later complete it), else 0. If cb
 * is not NULL a waiter is registered and returned in *waiter (may be NULL if the caller does
 * not need to leave); with cb == NULL no waiter is registered and *waiter is set to NULL.
 * Returns the flight (owned by sf; valid until completed), or NULL on allocation failure (then
 * nothing was registered and the caller should do the work uncoalesced). */
pgw_flight *pgw_singleflight_join(pgw_singleflight *sf, const char *key, pgw_flight_cb cb,
                                  void *user_data, int *is_leader, pgw_flight_waiter **waiter);

/* Delivers *result to every still-registered waiter of flight, in join order, then frees the
 * flight. Waiter callbacks may join (new flight), leave other waiters of this flight (they
 * will not be called), or complete OTHER flights; they must not complete this one. */
void pgw_singleflight_complete(pgw_singleflight *sf, pgw_flight *flight,
                               const pgw_flight_result *result);

/* Removes one waiter: its callback will not run. The flight continues for the others and for
 * the leader. Must not be called once the waiter's callback has started; NULL is fine. */
void pgw_singleflight_leave(pgw_flight_waiter *waiter);

/* Number of waiters still registered on a flight. */
size_t pgw_singleflight_waiters(const pgw_flight *flight);

/* Copies the counters into *out. */
void pgw_singleflight_stats_get(const pgw_singleflight *sf, pgw_singleflight_stats *out);

#endif
