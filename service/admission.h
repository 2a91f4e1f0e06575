/* admission: a bound on concurrent work of one kind (the gateway's upstream fetches) and on the
 * queue in front of it, with every outcome paced so a burst never runs as one long callback.
 *
 * At most max_in_flight tickets hold a slot at once; beyond the free slots, at most max_queued
 * tickets wait, first come first served. Past that a ticket is refused: callers fail fast
 * instead of piling up behind a slow upstream, and memory stays bounded.
 *
 * No outcome is delivered inside pgw_admission_acquire or _release: grants and refusals alike
 * come from one libevent timer (at the priority the options give, the loop's bulk one in the
 * gateway), at most grants_per_turn of each per callback. So a burst of a thousand misses, and
 * the thousand answers its refusals cause, are many short turns with the loop's other work (a
 * cache hit's Redis reply) in between, never a long run inside the code that asked.
 *
 * Deadlines: the time a slot is held (moving averages of what _release reports, of the time
 * and of its deviation, as TCP estimates round trips) tells how long a queued ticket will
 * wait and how long its work will take: the planned service time is the average plus twice
 * the deviation. Once the slots are all taken, a ticket whose caller's deadline leaves less
 * than the expected wait plus the planned service time is refused (PGW_ADMISSION_LATE), and a
 * queued ticket whose deadline no longer leaves the planned service time when its turn comes
 * is dropped the same way, instead of starting work its caller would likely not see finish.
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
    int grants_per_turn; /* grants (and refusals) per timer callback; 0: 16 */
    int event_priority;  /* libevent priority of the timer; 0: the base's default */
    /* CLOCK_MONOTONIC milliseconds, the clock of the deadlines; NULL: pgw_now_mono_ms. Tests
     * pass their own. */
    int64_t (*now_ms)(void);
} pgw_admission_options;

typedef enum pgw_admission_outcome {
    PGW_ADMISSION_GRANTED = 0, /* the ticket holds a slot: pgw_admission_release it later */
    PGW_ADMISSION_FULL,        /* refused: every slot was taken and max_queued tickets waited */
    PGW_ADMISSION_LATE,        /* refused or dropped: the deadline leaves too little time */
} pgw_admission_outcome;

/* The ticket's outcome. The ticket handle is invalid from the moment the callback starts. The
 * callback may acquire, cancel other tickets and release. */
typedef void (*pgw_admission_cb)(pgw_admission_outcome outcome, void *user_data);

/* Creates the bound over base (borrowed, must outlive it). NULL on allocation failure. */
pgw_admission *pgw_admission_new(struct event_base *base, const pgw_admission_options *options);

/* Frees it; tickets still pending are dropped without their callbacks. */
void pgw_admission_free(pgw_admission *admission);

/* Asks for a slot for work whose caller waits until deadline_ms (CLOCK_MONOTONIC ms of the
 * options' clock; 0 = no deadline). Returns 0 with *ticket set (for pgw_admission_cancel):
 * cb will fire exactly once, later, from the loop, with the outcome (a refusal is decided now
 * and only delivered later). Returns -1 when out of memory: nothing registered, cb never
 * fires. */
int pgw_admission_acquire(pgw_admission *admission, int64_t deadline_ms, pgw_admission_cb cb,
                          void *user_data, pgw_admission_ticket **ticket);

/* Withdraws a pending ticket: its callback will not fire. Not once the callback started. */
void pgw_admission_cancel(pgw_admission_ticket *ticket);

/* Gives back one slot of a granted ticket. held_ms: how long the work held it (feeds the
 * service time estimate); negative: no sample. */
void pgw_admission_release(pgw_admission *admission, int64_t held_ms);

typedef struct pgw_admission_stats {
    int in_flight;      /* slots held */
    int queued;         /* tickets waiting for a slot */
    int refusing;       /* refused tickets whose callback has not run yet */
    int64_t typical_ms; /* moving average of held_ms; 0 before the first sample */
    int64_t planned_ms; /* the planned service time: average + 2 x mean deviation */
    uint64_t granted;
    uint64_t refused_full, refused_late; /* decided at acquire */
    uint64_t dropped;                    /* queued, then too late at their turn */
} pgw_admission_stats;

/* Copies the counters into *out. */
void pgw_admission_stats_get(const pgw_admission *admission, pgw_admission_stats *out);

#endif
