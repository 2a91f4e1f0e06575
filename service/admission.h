/* admission: a bound on concurrent work of one kind (the gateway's upstream fetches) and on the
 * queue in front of it, with starts paced so a burst never runs as one long callback.
 *
 * At most max_in_flight tickets hold a slot at once; beyond the free slots, at most max_queued
 * tickets wait, first come first served. Past that a ticket is refused at once: callers fail
 * fast instead of piling up behind a slow upstream, and memory stays bounded.
 *
 * Grants never run inside pgw_admission_acquire or _release: they come from one libevent event
 * (at the priority the options give, the loop's bulk one in the gateway), at most
 * grants_per_turn per callback, so starting a thousand fetches is a thousand short turns with
 * the loop's other I/O (a cache hit's Redis reply) in between.
 *
 * Deadlines: the typical time a slot is held (a moving average of what _release reports) tells
 * how long a queued ticket will wait. Once the slots are all taken, a ticket whose caller's
 * deadline leaves less than that wait plus one typical service time is refused at once
 * (PGW_ADMISSION_TOO_LATE), and a queued ticket whose deadline no longer leaves one typical
 * service time is dropped when its turn comes (callback with granted = 0) instead of starting
 * work its caller will not wait for.
 *
 * Loop thread only. */
#ifndef PGW_ADMISSION_H
#define PGW_ADMISSION_H

#include <stdint.h>

struct event_base;
typedef struct pgw_admission pgw_admission;
typedef struct pgw_admission_ticket pgw_admission_ticket;

typedef struct pgw_admission_options {
    int max_in_flight;   /* slots; at least 1 */
    int max_queued;      /* tickets waiting beyond the free slots; 0: none wait */
    int grants_per_turn; /* callbacks per event callback; 0: 16 */
    int event_priority;  /* libevent priority of the grant event; 0: the base's default */
    /* CLOCK_MONOTONIC milliseconds, the clock of the deadlines; NULL: pgw_now_mono_ms. Tests
     * pass their own. */
    int64_t (*now_ms)(void);
} pgw_admission_options;

typedef enum pgw_admission_verdict {
    PGW_ADMISSION_QUEUED = 0, /* the callback will fire (unless the ticket is cancelled) */
    PGW_ADMISSION_QUEUE_FULL, /* refused: every slot is taken and max_queued tickets wait */
    PGW_ADMISSION_TOO_LATE,   /* refused: the deadline leaves less than the expected wait */
} pgw_admission_verdict;

/* The ticket's turn came. granted = 1: it holds a slot now, to give back with
 * pgw_admission_release() when the work ends. granted = 0: its deadline no longer leaves a
 * typical service time; it holds nothing. The ticket handle is invalid from the moment the
 * callback starts. The callback may acquire, cancel other tickets and release. */
typedef void (*pgw_admission_cb)(int granted, void *user_data);

/* Creates the bound over base (borrowed, must outlive it). NULL on allocation failure. */
pgw_admission *pgw_admission_new(struct event_base *base, const pgw_admission_options *options);

/* Frees it; tickets still waiting are dropped without their callbacks. */
void pgw_admission_free(pgw_admission *admission);

/* Asks for a slot for work whose caller waits until deadline_ms (CLOCK_MONOTONIC ms of the
 * options' clock; 0 = no deadline). On PGW_ADMISSION_QUEUED, *ticket is set (for
 * pgw_admission_cancel) and cb will fire exactly once, later, from the loop; otherwise nothing
 * is registered and cb never fires. Out of memory counts as PGW_ADMISSION_QUEUE_FULL. */
pgw_admission_verdict pgw_admission_acquire(pgw_admission *admission, int64_t deadline_ms,
                                            pgw_admission_cb cb, void *user_data,
                                            pgw_admission_ticket **ticket);

/* Withdraws a waiting ticket: its callback will not fire. Not once the callback started. */
void pgw_admission_cancel(pgw_admission_ticket *ticket);

/* Gives back one slot of a granted ticket. held_ms: how long the work held it (feeds the
 * typical service time); negative: no sample. */
void pgw_admission_release(pgw_admission *admission, int64_t held_ms);

typedef struct pgw_admission_stats {
    int in_flight;      /* slots held */
    int queued;         /* tickets waiting for their turn */
    int64_t typical_ms; /* moving average of held_ms; 0 before the first sample */
    uint64_t granted;   /* callbacks with granted = 1 */
    uint64_t dropped;   /* callbacks with granted = 0 */
    uint64_t refused_full, refused_late;
} pgw_admission_stats;

/* Copies the counters into *out. */
void pgw_admission_stats_get(const pgw_admission *admission, pgw_admission_stats *out);

#endif
