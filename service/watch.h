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
 * was sent (never a duplicate, never a state older than that one: a tier that lags, such as
 * another replica's L1, cannot take a stream back); after a terminal status or NOT_FOUND it is
 * detached.
 *
 * The poll loop ticks every interval whatever its polls do: with Redis each tick renews the
 * poll lease (held for two intervals), so a slow or failing poll never lets it lapse while its
 * holder lives; a poll still running skips the tick's poll, and after failures fetches back off
 * (up to MAX_BACKOFF_FACTOR intervals) while the lease keeps being renewed.
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
    uint64_t catch_ups;      /* watchers told at attach of a state newer than their first */
} pgw_watch_stats;

pgw_watch_registry *pgw_watch_registry_new(const pgw_watch_options *options);

/* Frees the registry; watchers are dropped without callbacks. NULL is fine. */
void pgw_watch_registry_free(pgw_watch_registry *registry);

typedef enum pgw_watch_reserve_result {
    PGW_WATCH_RESERVED = 0,   /* the stream holds a slot */
    PGW_WATCH_FULL = -1,      /* every slot is taken: end the stream RESOURCE_EXHAUSTED */
    PGW_WATCH_SHUT_DOWN = -2, /* pgw_watch_shutdown ran: end it UNAVAILABLE */
} pgw_watch_reserve_result;

/* Takes one of the --watch-max-streams slots for a stream about to open. The slot goes back
 * with pgw_watch_unreserve (the stream ended before attaching) or with its watcher. */
pgw_watch_reserve_result pgw_watch_reserve(pgw_watch_registry *registry);
void pgw_watch_unreserve(pgw_watch_registry *registry);

/* --watch-max-streams, for messages. */
int pgw_watch_max_streams(const pgw_watch_registry *registry);

/* Nonzero when the packed job's status is terminal (ACTIVE, CREATE FAILED): the stream ends
 * after that message. */
int pgw_watch_job_is_terminal(const uint8_t *job_pb, size_t len);

/* Attaches a watcher (using its reserved slot) to `arn` (NUL-terminated, copied), whose stream
 * has been sent `sent_pb` as its last message (copied). cb hears every change after that until
 * an update with final = 1, or pgw_watch_detach; never from inside this call. When the group
 * already knows a newer state than `sent_pb` (its poll ran since that answer was cached), cb
 * hears of it at once, from the loop. Returns NULL, the slot released, on allocation failure
 * or after pgw_watch_shutdown (pgw_watch_is_shut_down tells which). */
pgw_watcher *pgw_watch_attach(pgw_watch_registry *registry, const char *arn, const uint8_t *sent_pb,
                              size_t sent_len, pgw_watch_cb cb, void *user_data);

/* Detaches a watcher (its stream ended: cancelled, deadline, send failed) and releases its
 * slot. Must not be called after its final update. NULL is fine. */
void pgw_watch_detach(pgw_watcher *watcher);

/* The fleet's listener (pgw_fleet_set_listener, user data = the registry): a fill notice from
 * any replica reaches this replica's watchers of that ARN. */
void pgw_watch_on_fill(const char *arn, const uint8_t *entry, size_t len, void *registry);

/* Shutdown: every watcher hears a final UNAVAILABLE, the poll loops stop, and no slot is given
 * from then on (reserve answers PGW_WATCH_SHUT_DOWN, attach NULL). */
void pgw_watch_shutdown(pgw_watch_registry *registry);
int pgw_watch_is_shut_down(const pgw_watch_registry *registry);

void pgw_watch_stats_get(const pgw_watch_registry *registry, pgw_watch_stats *out);

#endif
