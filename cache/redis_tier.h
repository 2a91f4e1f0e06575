/* redis_tier: the shared cache tier, on the service's libevent loop.
 *
 * Single-threaded: create, call and free it on the event-loop thread that runs `base`; no
 * locks. Nothing here blocks: host names resolve through evdns, the connection is opened
 * (TCP, then TLS for rediss://), authenticated (AUTH) and switched to its database (SELECT)
 * asynchronously, and after a disconnect or a failed attempt it reconnects on its own with
 * capped exponential backoff.
 *
 * Transport: libevent bufferevents, a plain socket for redis:// and OpenSSL
 * (bufferevent_openssl) for rediss://, with the server's certificate and host name verified.
 * hiredis is only the protocol library: its reader parses replies and its formatter encodes
 * commands (Debian 12's hiredis 0.14 has no TLS of its own).
 *
 * Every GET answers within the command timeout. A circuit breaker stops sending after a run
 * of consecutive failures (errors, timeouts, a lost connection) so callers fall through to
 * upstream at once instead of waiting on a sick Redis; after a cool-down (doubling on each
 * re-trip, up to a cap) one probe GET is let through, and its success closes the breaker. A
 * TLS or AUTH failure opens the breaker at once: it is a configuration problem, not a blip.
 *
 * Besides GET and SET, any command can be sent (pgw_redis_tier_command) with the same timeout
 * and breaker accounting, and the tier can keep a second connection subscribed to one pub/sub
 * channel (config.subscribe_channel), re-subscribing after every reconnect. */
#ifndef PGW_CACHE_REDIS_TIER_H
#define PGW_CACHE_REDIS_TIER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;
typedef struct pgw_redis_tier pgw_redis_tier;

#define PGW_REDIS_KEY_PREFIX "pgw:v1:bij:"
/* Names the fleet shares (DESIGN.md "Running as a fleet"): fill notices go to this channel,
 * and a replica fetching an ARN holds PGW_REDIS_LEASE_PREFIX "<arn>". */
#define PGW_REDIS_FILL_CHANNEL "pgw:v1:fill"
#define PGW_REDIS_LEASE_PREFIX "pgw:v1:lease:"

typedef enum pgw_redis_result {
    PGW_REDIS_HIT = 0, /* value bytes are passed to the callback */
    PGW_REDIS_MISS,    /* no such key (or a value over max_value_bytes) */
    PGW_REDIS_ERROR,   /* not connected, breaker open, timeout, error reply, lost connection */
} pgw_redis_result;

typedef enum pgw_redis_breaker_state {
    PGW_REDIS_BREAKER_CLOSED = 0, /* commands flow */
    PGW_REDIS_BREAKER_OPEN,       /* every GET answers ERROR at once until the cool-down ends */
    PGW_REDIS_BREAKER_HALF_OPEN,  /* one probe GET may go; its success closes the breaker */
} pgw_redis_breaker_state;

typedef enum pgw_redis_conn_state {
    PGW_REDIS_CONN_DISCONNECTED = 0, /* waiting for the next reconnect attempt */
    PGW_REDIS_CONN_RESOLVING,        /* looking up the host name */
    PGW_REDIS_CONN_CONNECTING,       /* TCP connect, TLS handshake, AUTH, SELECT in progress */
    PGW_REDIS_CONN_READY,
} pgw_redis_conn_state;

/* What happened to a connection, for logs and metrics (config.on_event). Each connection
 * attempt ends in exactly one of CONNECTED or a *_FAILED event; DISCONNECTED is a ready
 * connection lost. */
typedef enum pgw_redis_event {
    PGW_REDIS_EVENT_CONNECTED = 0,
    PGW_REDIS_EVENT_CONNECT_FAILED, /* DNS, TCP, timeout, closed during the handshake */
    PGW_REDIS_EVENT_TLS_FAILED,     /* TLS handshake or certificate/host-name verification */
    PGW_REDIS_EVENT_AUTH_FAILED,    /* AUTH/SELECT/PING refused, or the password file unreadable */
    PGW_REDIS_EVENT_DISCONNECTED,
} pgw_redis_event;

typedef struct pgw_redis_tier_config {
    const char *url;             /* redis[s]://[[user]:password@]host[:port][/db]; copied */
    int command_timeout_ms;      /* per GET; default 50 */
    int connect_timeout_ms;      /* TCP + TLS + AUTH + SELECT; default 1000 */
    int reconnect_min_ms;        /* first retry delay; default 100 */
    int reconnect_max_ms;        /* backoff cap; default 5000 */
    int breaker_failures;        /* consecutive failures that open it; default 5 */
    int breaker_cooldown_ms;     /* first open period; default 2000 */
    int breaker_cooldown_max_ms; /* cap for the doubling; default 30000 */
    size_t max_value_bytes;      /* larger values are treated as a miss; default 2 MiB */
    size_t max_pending;          /* commands awaiting a reply per connection; default 65536 */

    /* TLS (rediss:// only; each given file must be readable PEM, checked by _new). */
    const char *ca_file;   /* CA bundle the server's certificate must chain to; NULL: system */
    const char *cert_file; /* client certificate chain, with key_file; NULL: none */
    const char *key_file;  /* its private key (unencrypted) */
    /* The password when the URL has none: read at every connection attempt (a mounted Secret
     * can rotate), one trailing newline stripped. NULL: none. */
    const char *password_file;

    /* Connection events, on the loop thread; detail is one line for a log, naming the host
     * and the reason, never the password. Called once per attempt. May be NULL. */
    void (*on_event)(pgw_redis_event ev, const char *detail, void *ud);
    void *event_ud;

    /* Pub/sub. With subscribe_channel set (copied), the tier keeps a second connection
     * subscribed to that channel: same URL, TLS, AUTH, SELECT and reconnect backoff as the
     * main one, re-subscribing after every reconnect. Its failures do not move the breaker. */
    const char *subscribe_channel; /* NULL: no subscriber connection */
    /* One published message on subscribe_channel; payload is borrowed (valid during the call
     * only). May be NULL. */
    void (*on_message)(const uint8_t *payload, size_t len, void *ud);
    /* up = 1 when the subscription became active (SUBSCRIBE confirmed), 0 when an active one was
     * lost (messages published meanwhile are missed: do not rely on pub/sub until the next 1).
     * Called on transitions only, never after pgw_redis_tier_free(). May be NULL. */
    void (*on_subscription)(int up, void *ud);
    void *message_ud;         /* passed to both callbacks */
    int sub_ping_interval_ms; /* the subscriber is PINGed this often and called lost when the
                                 PONG has not come back by the next PING; default 5000 */
} pgw_redis_tier_config;

typedef struct pgw_redis_tier_stats {
    uint64_t gets, hits, misses;
    uint64_t errors;       /* GETs answered ERROR for any reason (includes the two below) */
    uint64_t timeouts;     /* GETs and commands answered at the command timeout */
    uint64_t get_timeouts; /* ... of which GETs (counted before their callback runs) */
    uint64_t rejected; /* GETs and commands answered without being sent (breaker, no connection) */
    uint64_t sets, set_errors, set_skipped;
    uint64_t breaker_opens;
    uint64_t connects;         /* main connections that became ready */
    uint64_t disconnects;      /* ready main connections lost or dropped */
    uint64_t oversize;         /* values over max_value_bytes, answered MISS */
    uint64_t commands;         /* pgw_redis_tier_command() calls */
    uint64_t command_failures; /* ... answered NULL (not sent, timeout, lost, breaker) */
    uint64_t publishes, publish_skipped, publish_errors;
    uint64_t sub_connects; /* subscriptions that became active */
    uint64_t messages;     /* messages received on subscribe_channel */
    /* Failed connection attempts, main and subscriber, by kind (one per attempt). */
    uint64_t connect_failures, tls_failures, auth_failures;
    pgw_redis_breaker_state breaker;
    pgw_redis_conn_state conn;
    pgw_redis_conn_state sub_conn; /* DISCONNECTED when there is no subscriber connection */
    int subscribed;                /* the subscription is active now */
} pgw_redis_tier_stats;

/* The parts of a Redis URL. password and username are secrets-adjacent: never log them. */
typedef struct pgw_redis_url {
    char host[256];     /* without IPv6 brackets */
    int port;           /* default 6379 */
    int db;             /* 0..15, default 0 */
    int tls;            /* rediss:// */
    char username[128]; /* "" unless given (ACL user) */
    char password[256]; /* "" unless given */
} pgw_redis_url;

/* Receives a GET's answer. value/len are set for PGW_REDIS_HIT only and are borrowed: valid
 * during the callback only. */
typedef void (*pgw_redis_get_cb)(pgw_redis_result result, const uint8_t *value, size_t len,
                                 void *user_data);

/* Fills *cfg with the defaults above (url = NULL). */
void pgw_redis_tier_config_defaults(pgw_redis_tier_config *cfg);

/* Parses and validates a Redis URL with libcurl's URL API: scheme redis or rediss, host
 * present, port 1..65535, db numeric 0..15, no query or fragment. A user name without a
 * password is accepted here (the password may come from a file; _new checks). Returns 0, or -1
 * with a message naming --redis-url in err (never echoing the password). */
int pgw_redis_url_parse(const char *url, pgw_redis_url *out, char *err, size_t errlen);

/* Writes the cache key for arn ("pgw:v1:bij:<arn>") into out. Returns its length, or -1 when
 * it does not fit in cap bytes (including the NUL). */
int pgw_redis_key_for_arn(const char *arn, char *out, size_t cap);

/* Creates the tier and starts connecting in the background. Returns NULL with a message in
 * err (naming the flag: --redis-url, --redis-ca-file, --redis-cert, --redis-key,
 * --redis-password-file) on a bad URL, an unreadable or invalid CA/certificate/key/password
 * file, TLS files without rediss://, or allocation failure. Free with pgw_redis_tier_free()
 * before freeing base. */
pgw_redis_tier *pgw_redis_tier_new(struct event_base *base, const pgw_redis_tier_config *cfg,
                                   char *err, size_t errlen);

/* Frees the tier. Commands still in flight are abandoned and their callbacks are SUPPRESSED
 * (they never run). Safe to call from inside one of this tier's callbacks: the release is
 * deferred until that callback returns. NULL is fine. */
void pgw_redis_tier_free(pgw_redis_tier *tier);

/* GET key (NUL-terminated). cb fires exactly once (unless the tier is freed first): with the
 * reply, or with ERROR when the command timeout passes (a late reply is then ignored). When the
 * breaker is open or there is no ready connection, cb runs SYNCHRONOUSLY, before this call
 * returns, with ERROR, so the caller can fall through to upstream at once. */
void pgw_redis_tier_get(pgw_redis_tier *tier, const char *key, pgw_redis_get_cb cb,
                        void *user_data);

/* SET key value PX ttl_ms, fire and forget: failures are only counted. Returns 0 when the
 * command was queued, -1 when skipped (not ready, breaker not closed, bad arguments). */
int pgw_redis_tier_set(pgw_redis_tier *tier, const char *key, const uint8_t *value, size_t len,
                       int64_t ttl_ms);

/* Receives a command's reply: borrowed, valid during the callback only. Error replies
 * (REDIS_REPLY_ERROR) are passed as replies; NULL means no reply: not sent (breaker open, no
 * ready connection, bad arguments), command timeout, or connection lost. */
typedef void (*pgw_redis_reply_cb)(const struct redisReply *reply, void *user_data);

/* Sends any command (argv[i] of lens[i] bytes; both copied before return) on the main
 * connection. cb fires exactly once (unless the tier is freed first), like GET: with the reply,
 * or with NULL at the command timeout (a late reply is then ignored); when the command cannot be
 * sent, cb runs SYNCHRONOUSLY with NULL before this call returns. Breaker accounting is GET's:
 * a reply counts as a success, except an error reply, which like NULL counts as a failure; an
 * open breaker rejects the command, and a half-open one lets it through as the probe. Do not
 * send SUBSCRIBE-family commands, MONITOR or blocking commands (BLPOP...) here. */
void pgw_redis_tier_command(pgw_redis_tier *tier, int argc, const char **argv, const size_t *lens,
                            pgw_redis_reply_cb cb, void *user_data);

/* PUBLISH channel payload on the main connection, fire and forget: failures are only counted.
 * Returns 0 when queued, -1 when skipped (not ready, breaker not closed, bad arguments). */
int pgw_redis_tier_publish(pgw_redis_tier *tier, const char *channel, const uint8_t *payload,
                           size_t len);

/* Nonzero when the subscription on config.subscribe_channel is active now. */
int pgw_redis_tier_is_subscribed(const pgw_redis_tier *tier);

/* Copies the counters and states into *out. */
void pgw_redis_tier_stats_get(const pgw_redis_tier *tier, pgw_redis_tier_stats *out);

/* Nonzero when a connection is up, authenticated and on its database. */
int pgw_redis_tier_is_ready(const pgw_redis_tier *tier);

/* Makes a hiredis reader (one made with hiredis' default reply functions) refuse array replies
 * of more than a few dozen elements instead of allocating whatever count the peer announces.
 * Every connection of the tier is bounded this way. Returns 0, or -1 if the reader uses other
 * functions. */
struct redisReader;
int pgw_redis_reader_bound(struct redisReader *reader);

/* --- replies, classified (pure; exposed for tests and fuzz_redis_reply) --- */

/* What a GET reply means: HIT for a string of at most max_value_bytes (*value, *len borrow
 * from reply), MISS for nil or a larger string (*oversize set), ERROR for NULL, an error reply
 * or a type GET never answers. */
pgw_redis_result pgw_redis_get_reply(const struct redisReply *reply, size_t max_value_bytes,
                                     const uint8_t **value, size_t *len, int *oversize);

typedef enum pgw_redis_sub_event {
    PGW_REDIS_SUB_OTHER = 0,  /* nothing to act on (an unexpected shape is ignored) */
    PGW_REDIS_SUB_ERROR,      /* an error reply: the subscription failed (e.g. NOPERM) */
    PGW_REDIS_SUB_SUBSCRIBED, /* ["subscribe", channel, count]: the subscription is active */
    PGW_REDIS_SUB_PONG,       /* ["pong", ""]: the liveness PING came back */
    PGW_REDIS_SUB_MESSAGE,    /* ["message", channel, payload]: *payload, *len borrow it */
} pgw_redis_sub_event;

/* Classifies one reply on the subscriber connection. A message on another channel than
 * `channel` (which Redis would not send) is OTHER. */
pgw_redis_sub_event pgw_redis_sub_reply(const struct redisReply *reply, const char *channel,
                                        const uint8_t **payload, size_t *len);

/* The last connection problem as text ("" if none), for logs; never holds the password.
 * Borrowed: valid until the next call into the tier or its callbacks. */
const char *pgw_redis_tier_last_error(const pgw_redis_tier *tier);

/* A short name for ev ("connected", "connect_failed", "tls_failed", "auth_failed",
 * "disconnected"). */
const char *pgw_redis_event_name(pgw_redis_event ev);

#endif
