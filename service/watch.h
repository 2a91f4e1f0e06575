/* watch: the registry behind WatchBatchInferenceJob. Every stream watching an ARN is a
 * watcher of that ARN's group; the first watcher starts the group's poll loop and the last one
 * leaving stops it, so any number of watchers cost one poll per interval.
 *
 * A stream opens through the ordinary lookup (ARN check, identity, policy, caller limits, the
 * caches): its answer is the stream's first message, and the frontend attaches the watcher
 * with that job, so the watcher hears only of what differs from it. From then on the group
 * learns of the job by
 *   - its own polls, every poll interval (pgw_lookup_poll: a fresh fetch that refreshes the
 *     caches and coalesces with Describe misses), backing off while AWS fails;
 *   - with Redis, the fleet: one replica per ARN holds the poll lease and polls; every replica
 *     hears its fill notices (pub/sub) at once and also peeks at the cache each interval, so a
 *     lost notice costs at most one interval; the holder dead, another takes the lease over.
 * A watcher is told when the job's status or last-updated time differs from the last message it
 * was sent (never a duplicate); after a terminal status or NOT_FOUND it is detached.
 *
 * Single-threaded: create, call and free on the loop thread. */
#ifndef PGW_WATCH_H
#define PGW_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "service/status.h"

struct event_base;
struct pgw_lookup;
struct pgw_fleet;
typedef struct pgw_watch_registry pgw_watch_registry;
typedef struct pgw_watcher pgw_watcher;

typedef struct pgw_watch_options {
    struct event_base *base;
    struct pgw_lookup *lookup; /* borrowed */
    struct pgw_fleet *fleet;   /* borrowed; NULL without Redis: each replica polls alone */
    int poll_interval_ms;      /* --watch-poll-interval-s */
    int max_streams;           /* --watch-max-streams: open streams in all, 0 = none allowed */
} pgw_watch_options;

/* What a watcher is told. Pointers are borrowed: valid during the callback only. */
typedef struct pgw_watch_update {
    pgw_code code;         /* OK: job_pb is the job now; NOT_FOUND: gone; UNAVAILABLE: shutdown */
    const char *message;   /* never NULL */
    const uint8_t *job_pb; /* packed personalize_gateway.v1.BatchInferenceJob (OK only) */
    size_t job_pb_len;
    int final; /* the watcher is detached after this callback (terminal status, or an error) */
} pgw_watch_update;

typedef void (*pgw_watch_cb)(const pgw_watch_update *update, void *user_data);

typedef struct pgw_watch_stats {
    size_t streams; /* slots in use (reserved or attached) */
    size_t arns;    /* groups (watched ARNs) */
    uint64_t polls, peeks, notices, updates_sent;
    uint64_t poll_failures;
    uint64_t poller_changes; /* this replica took an ARN's poll lease */
} pgw_watch_stats;

pgw_watch_registry *pgw_watch_registry_new(const pgw_watch_options *options);

/* Frees the registry; watchers are dropped without callbacks. NULL is fine. */
void pgw_watch_registry_free(pgw_watch_registry *registry);

/* Takes one of the --watch-max-streams slots for a stream about to open. Returns 0, or -1 when
 * every slot is taken (the stream ends RESOURCE_EXHAUSTED). The slot goes back with
 * pgw_watch_unreserve (the stream ended before attaching) or with its watcher. */
int pgw_watch_reserve(pgw_watch_registry *registry);
void pgw_watch_unreserve(pgw_watch_registry *registry);

/* Nonzero when the packed job's status is terminal (ACTIVE, CREATE FAILED): the stream ends
 * after that message. */
int pgw_watch_job_is_terminal(const uint8_t *job_pb, size_t len);

/* Attaches a watcher (using its reserved slot) to `arn` (NUL-terminated, copied), whose stream
 * has been sent `sent_pb` as its last message (copied). cb hears every change after that until
 * an update with final = 1, or pgw_watch_detach. Returns NULL on allocation failure (the slot
 * is released then). */
pgw_watcher *pgw_watch_attach(pgw_watch_registry *registry, const char *arn, const uint8_t *sent_pb,
                              size_t sent_len, pgw_watch_cb cb, void *user_data);

/* Detaches a watcher (its stream ended: cancelled, deadline, send failed) and releases its
 * slot. Must not be called after its final update. NULL is fine. */
void pgw_watch_detach(pgw_watcher *watcher);

/* The fleet's listener (pgw_fleet_set_listener, user data = the registry): a fill notice from
 * any replica reaches this replica's watchers of that ARN. */
void pgw_watch_on_fill(const char *arn, const uint8_t *entry, size_t len, void *registry);

/* Shutdown: every watcher hears a final UNAVAILABLE and the poll loops stop. */
void pgw_watch_shutdown(pgw_watch_registry *registry);

void pgw_watch_stats_get(const pgw_watch_registry *registry, pgw_watch_stats *out);

#endif
