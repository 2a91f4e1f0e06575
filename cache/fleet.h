/* fleet: coalescing across replicas. Concurrent misses for one ARN on any number of replicas
 * sharing one Redis cost one upstream call.
 *
 * Protocol (every key and channel under "pgw:", so one ACL pattern covers it):
 *   1. A replica about to fetch an ARN sends, in one pipeline,
 *        SET pgw:v1:lease:<arn> <replica id> NX PX <lease_ms>
 *        GET pgw:v1:bij:<arn>
 *        PTTL pgw:v1:lease:<arn>
 *   2. SET answered OK: it holds the lease, fetches, writes the value (SET pgw:v1:bij:<arn>) and
 *      then PUBLISHes a FillNotice (proto/personalize_gateway/fleet/v1/fleet.proto) on
 *      "pgw:v1:fill", both on one connection so Redis applies them in that order. A failed
 *      fetch DELetes the lease and publishes the failure.
 *   3. SET answered nil (someone else holds the lease): a fresh value from the GET answers at
 *      once (the holder finished between our miss and our SET). Otherwise the replica waits for
 *      the notice; the GET closes the race with a notice sent before we were waiting. If PTTL
 *      passes without a notice (holder killed), it tries the lease again: the first to SET wins
 *      and takes over.
 * Redis down, slow or without a working subscription: the answer is "fetch yourself", so each
 * replica falls back to its own coalescing; a Redis problem never fails a call.
 *
 * Single-threaded: everything on the loop thread that runs `base`; no locks. The caller (lookup)
 * guarantees at most one wait per ARN per process: its own singleflight sits in front. */
#ifndef PGW_CACHE_FLEET_H
#define PGW_CACHE_FLEET_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;
typedef struct pgw_redis_tier pgw_redis_tier;
typedef struct pgw_fleet pgw_fleet;
typedef struct pgw_fleet_wait pgw_fleet_wait;

/* The watch poller's lease (the fetch lease and the notice channel are in redis_tier.h). */
#define PGW_REDIS_POLL_PREFIX "pgw:v1:poll:"

typedef struct pgw_fleet_config {
    int lease_ms;           /* a lease's life without its holder; default 3000 */
    const char *replica_id; /* copied; NULL or "" = random */
} pgw_fleet_config;

typedef enum pgw_fleet_verdict {
    PGW_FLEET_FETCH,  /* fetch upstream yourself (holds_lease: then publish the outcome) */
    PGW_FLEET_FILLED, /* another replica fetched: entry holds the cache entry it wrote */
    PGW_FLEET_FAILED, /* the holder's fetch failed: code and message say how */
} pgw_fleet_verdict;

/* What a wait ends with. Pointers are borrowed: valid during the callback only. */
typedef struct pgw_fleet_outcome {
    pgw_fleet_verdict verdict;
    int holds_lease; /* FETCH: this replica holds the lease */
    int taken_over;  /* FETCH with the lease, won after another holder's lease expired */
    const uint8_t *entry;
    size_t entry_len;    /* FILLED */
    int code;            /* FAILED: a canonical status code */
    const char *message; /* FAILED; never NULL then */
} pgw_fleet_outcome;

typedef void (*pgw_fleet_cb)(const pgw_fleet_outcome *outcome, void *user_data);

typedef struct pgw_fleet_stats {
    uint64_t leases_won;        /* fetches this replica did for the fleet */
    uint64_t leases_waited;     /* waits that were answered by another replica's notice */
    uint64_t leases_taken_over; /* leases won after the holder's had expired */
    uint64_t fallbacks;         /* Redis unusable: fetched without a lease */
    uint64_t notices_published, notices_received, notices_malformed;
    uint64_t poll_roles_won; /* poll leases taken (first, or from a holder that died) */
    size_t waiting;          /* waits currently open */
    int subscribed;          /* the notice channel is subscribed (pub/sub can be relied on) */
} pgw_fleet_stats;

/* Fills *cfg with the defaults above. */
void pgw_fleet_config_defaults(pgw_fleet_config *cfg);

/* Creates the coordinator. Returns NULL on allocation failure. It needs a tier
 * (pgw_fleet_set_redis) before the first acquire; the tier's subscriber on PGW_REDIS_FILL_CHANNEL
 * (redis_tier.h) must be wired to pgw_fleet_on_message / pgw_fleet_on_subscription with this fleet
 * as user data (which is why the fleet comes first). */
pgw_fleet *pgw_fleet_new(struct event_base *base, const pgw_fleet_config *cfg);

/* The tier to coordinate through; borrowed. */
void pgw_fleet_set_redis(pgw_fleet *fleet, pgw_redis_tier *redis);

/* Frees the coordinator; open waits are dropped and their callbacks never run. Free it after
 * the tier, or with the loop no longer running (a late reply would find its wait gone). NULL
 * is fine. */
void pgw_fleet_free(pgw_fleet *fleet);

/* The tier's pub/sub hooks (user_data is the fleet; NULL is ignored). */
void pgw_fleet_on_message(const uint8_t *payload, size_t len, void *user_data);
void pgw_fleet_on_subscription(int up, void *user_data);

/* Starts coordinating a fetch of `arn` (NUL-terminated, copied). cb fires exactly once unless
 * the wait is cancelled first; it may fire before this returns (then NULL is returned). The
 * caller bounds the wait with its own deadline (pgw_fleet_cancel). accept_cached: a fresh value
 * already in Redis answers (FILLED); 0 for callers that asked for no-cache, who wait for a
 * fetch that is under way or make their own. */
pgw_fleet_wait *pgw_fleet_acquire(pgw_fleet *fleet, const char *arn, int accept_cached,
                                  pgw_fleet_cb cb, void *user_data);

/* Abandons a wait: its callback will not run. NULL is fine. */
void pgw_fleet_cancel(pgw_fleet_wait *wait);

/* The lease holder's fetch ended with an answer from AWS: `entry` is the cache entry just
 * written to Redis (through the same tier, so it lands before the notice). */
void pgw_fleet_publish_fill(pgw_fleet *fleet, const char *arn, const uint8_t *entry,
                            size_t entry_len);

/* The lease holder's fetch failed: releases the lease and tells the waiters. */
void pgw_fleet_publish_failure(pgw_fleet *fleet, const char *arn, int code, const char *message);

/* Hears every notice that carries a cache entry, whoever waits for it: how watches on every
 * replica learn of the change one replica's poll saw. One listener; NULL removes it. */
typedef void (*pgw_fleet_listener)(const char *arn, const uint8_t *entry, size_t len, void *ud);
void pgw_fleet_set_listener(pgw_fleet *fleet, pgw_fleet_listener fn, void *user_data);

/* Watches: which replica polls an ARN. Each period every replica watching the ARN asks; the
 * holder of "pgw:v1:poll:<arn>" renews it (PEXPIRE) and polls, the others do not, and when the
 * holder dies its lease runs out (after lease_ms) and the next to ask takes it. cb(poller, ud)
 * fires exactly once unless cancelled, maybe before this returns (then NULL is returned);
 * poller = 1 also when Redis cannot be asked (each replica then polls for itself). */
typedef struct pgw_fleet_role pgw_fleet_role;
typedef void (*pgw_fleet_role_cb)(int poller, int changed_hands, void *user_data);
pgw_fleet_role *pgw_fleet_poll_role(pgw_fleet *fleet, const char *arn, int lease_ms,
                                    pgw_fleet_role_cb cb, void *user_data);
void pgw_fleet_role_cancel(pgw_fleet_role *role);

/* Copies the counters into *out. */
void pgw_fleet_stats_get(const pgw_fleet *fleet, pgw_fleet_stats *out);

/* --- what arrives from Redis, checked (pure; exposed for tests and fuzz_fleet_notice) --- */

#define PGW_FLEET_MESSAGE_MAX 512 /* bytes of a failure message kept */

/* A FillNotice as read from the channel, checked. */
typedef struct pgw_fleet_notice {
    const char *arn;      /* non-empty; borrowed from msg */
    const uint8_t *entry; /* the cache entry, when entry_len > 0; borrowed from msg */
    size_t entry_len;     /* 0: the holder's fetch failed */
    int code;             /* entry_len == 0: a canonical status code in 1..16 */
    char message[PGW_FLEET_MESSAGE_MAX + 1]; /* entry_len == 0: valid UTF-8, no control
                                              * characters, "" when none was sent */
    const char *replica_id; /* the publisher's id ("" when none); borrowed from msg */
    void *msg;              /* the unpacked message: pgw_fleet_notice_cleanup frees it */
} pgw_fleet_notice;

/* Unpacks and checks a notice published on PGW_REDIS_FILL_CHANNEL (any bytes: Redis is not
 * trusted). Returns 0 and fills *out (release with pgw_fleet_notice_cleanup), or -1 when it
 * is not a FillNotice, names no ARN, or carries neither an entry nor a failure code in
 * 1..16 (then *out needs no cleanup). A failure message is cut to PGW_FLEET_MESSAGE_MAX at a
 * character boundary, control characters become spaces, and one that is not UTF-8 is
 * dropped: it ends up in the callers' status messages, JSON bodies and logs. */
int pgw_fleet_notice_parse(const uint8_t *payload, size_t len, pgw_fleet_notice *out);

void pgw_fleet_notice_cleanup(pgw_fleet_notice *notice);

/* How long a waiter that lost the lease race waits for the holder's notice before trying to
 * take over, given the lease's PTTL reply (-2: no lease any more, -1: no expiry) and the
 * configured lease life: the PTTL, at most lease_ms (a lease set with a longer life, or a
 * reply no Redis would send, must not park a waiter), at least 1 ms, plus 5..24 ms of spread
 * taken from `spread` (any integer). */
long long pgw_fleet_takeover_wait_ms(long long pttl_ms, int lease_ms, unsigned spread);

/* Nonzero when a reply to SET ... NX PX says the lease was taken: status "OK" (nil means
 * someone else holds it; anything else is not an answer SET gives). */
int pgw_fleet_lease_won(const struct redisReply *reply);

#endif
