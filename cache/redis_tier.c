/* Redis tier on libevent bufferevents, hiredis as the protocol library; see redis_tier.h.
 *
 * A connection (`redis_conn`: the main one, and the subscriber when configured) goes through
 * stages: resolve (evdns) -> TCP (a plain socket bufferevent) -> TLS (for rediss://, the
 * connected socket is handed to a bufferevent_openssl, so a TCP failure and a TLS failure are
 * told apart) -> handshake ([AUTH] [SELECT] PING, pipelined; the PING makes even a
 * password-less connection prove the server accepts it, and surfaces a TLS 1.3 client
 * certificate rejection, which only arrives after the client's side of the handshake) -> ready.
 *
 * Commands are encoded with redisFormatCommandArgv and queued on the bufferevent's output;
 * every command that expects a reply gets an entry in the connection's FIFO `pending`, and
 * replies, parsed by a redisReader, are matched to entries in order (Redis answers in order).
 * A GET or command lives in its pending entry, nothing allocated for it: it is answered by its
 * reply, by the teardown of its connection, or at its deadline, and an entry answered at its
 * deadline stays in the FIFO until its reply comes (and is dropped). Every command has the same
 * timeout, so deadlines grow along the FIFO: one timer per connection, armed for the oldest
 * entry not yet answered, stands for all of them (an evtimer per GET cost an allocation and a
 * heap insertion and removal on every call). The subscriber has no entries once its handshake
 * is done: every reply is then a pub/sub push.
 *
 * Re-entrancy: user callbacks may send commands, drop the connection (through the breaker) or
 * free the tier. Entry points count `depth`, and the real release happens when depth drops to
 * zero; the read loop stops as soon as the connection it was reading was dropped (`gen`).
 * libevent defers the release of a bufferevent freed inside its own callback. */
#include "cache/redis_tier.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Unparsed reply bytes one connection may hold: a few of the largest values we accept. */
#define PGW_REDIS_MIN_READ_BOUND (16u * 1024 * 1024)
#define PGW_REDIS_PASSWORD_MAX   512
/* Commands up to this size are copied into the output buffer (see conn_send). */
#define PGW_REDIS_COPY_MAX 16384

typedef enum pend_kind {
    PEND_NONE,      /* no reply expected (SUBSCRIBE on the subscriber): no entry */
    PEND_REQ,       /* a GET or command: p is the caller's user_data */
    PEND_COUNTED,   /* p: the uint64_t error counter of a fire-and-forget command */
    PEND_HANDSHAKE, /* p: the command's name, for messages */
} pend_kind;

/* One reply expected, in the connection's FIFO. */
typedef struct pend {
    pend_kind kind;
    int answered; /* PEND_REQ: at its deadline; the reply, when it comes, is dropped */
    void *p;
    pgw_redis_get_cb get_cb;     /* PEND_REQ: a GET (NULL once suppressed) */
    pgw_redis_reply_cb reply_cb; /* PEND_REQ: any other command (NULL once suppressed) */
    int64_t deadline_us;         /* PEND_REQ: when it is answered NULL/ERROR (monotonic) */
} pend;

typedef enum conn_stage {
    STAGE_IDLE = 0,
    STAGE_TCP,
    STAGE_TLS,
    STAGE_HANDSHAKE,
    STAGE_READY,
} conn_stage;

/* One connection to the server. Each reconnects on its own, with its own backoff. */
typedef struct redis_conn {
    pgw_redis_tier *tier;
    int is_sub;
    const char *name; /* "main" or "subscriber", for messages */
    struct evdns_getaddrinfo_request *dns_req;
    struct bufferevent *bev; /* owns the socket (and the SSL once in STAGE_TLS) */
    redisReader *reader;
    pgw_redis_conn_state state;
    conn_stage stage;
    int handshake_pending;
    pend *q; /* ring buffer of the replies expected, oldest at q_head */
    size_t q_head, q_len, q_cap;
    /* The first q_checked entries need no deadline check (answered, or not a PEND_REQ); the
     * timer is pending whenever an entry past them is a PEND_REQ not yet answered. */
    size_t q_checked;
    struct event *timeout_ev;
    struct event *reconnect_ev;
    struct event *connect_timeout_ev;
    int backoff_ms;
    int subscribed;        /* subscriber only: SUBSCRIBE confirmed on this connection */
    struct event *ping_ev; /* subscriber only: the liveness PING */
    int pong_pending;      /* a PING went out and its PONG has not come back */
    unsigned gen;          /* bumped at every drop */
    int attempt_reported;  /* this attempt's failure was counted and reported */
} redis_conn;

struct pgw_redis_tier {
    struct event_base *base;
    pgw_redis_tier_config cfg;
    pgw_redis_url url;
    char *sub_channel;   /* owned copy of cfg.subscribe_channel, or NULL */
    char *password_file; /* owned copy, or NULL */
    SSL_CTX *ssl_ctx;    /* rediss:// only */
    void *timing_out;    /* user_data of the GET being answered at its timeout, or NULL */

    struct evdns_base *dns;
    redis_conn main;
    redis_conn sub; /* unused without sub_channel */

    pgw_redis_breaker_state breaker;
    int consecutive_failures;
    int64_t open_until_ms;
    int cooldown_ms; /* the next open period */
    int probe_in_flight;

    int depth;
    int free_pending;
    int in_new; /* pgw_redis_tier_new is running */
    pgw_redis_tier_stats stats;
    char last_error[256];
};

static void really_free(pgw_redis_tier *tier);

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static void set_error(pgw_redis_tier *tier, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tier->last_error, sizeof tier->last_error, fmt, ap);
    va_end(ap);
}

static void enter(pgw_redis_tier *tier)
{
    tier->depth++;
}

static void leave(pgw_redis_tier *tier)
{
    if (--tier->depth == 0 && tier->free_pending)
        really_free(tier);
}

const char *pgw_redis_event_name(pgw_redis_event ev)
{
    switch (ev) {
    case PGW_REDIS_EVENT_CONNECTED:
        return "connected";
    case PGW_REDIS_EVENT_CONNECT_FAILED:
        return "connect_failed";
    case PGW_REDIS_EVENT_TLS_FAILED:
        return "tls_failed";
    case PGW_REDIS_EVENT_AUTH_FAILED:
        return "auth_failed";
    case PGW_REDIS_EVENT_DISCONNECTED:
        return "disconnected";
    }
    return "unknown";
}

static void emit(pgw_redis_tier *tier, pgw_redis_event ev, const char *detail)
{
    /* Not from inside _new: the caller does not have the tier yet (and might free it). */
    if (tier->cfg.on_event && !tier->free_pending && !tier->in_new)
        tier->cfg.on_event(ev, detail, tier->cfg.event_ud);
}

/* ---- URL and key ----------------------------------------------------------------------- */

void pgw_redis_tier_config_defaults(pgw_redis_tier_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->command_timeout_ms = 50;
    cfg->connect_timeout_ms = 1000;
    cfg->reconnect_min_ms = 100;
    cfg->reconnect_max_ms = 5000;
    cfg->breaker_failures = 5;
    cfg->breaker_cooldown_ms = 2000;
    cfg->breaker_cooldown_max_ms = 30000;
    cfg->max_value_bytes = 2u * 1024 * 1024;
    cfg->max_pending = 65536;
    cfg->sub_ping_interval_ms = 5000;
}

/* Copies one decoded URL part into dst. Returns 0 absent-or-copied, -1 too long/undecodable. */
static int url_part(CURLU *u, CURLUPart part, unsigned flags, char *dst, size_t cap, int *present)
{
    char *v = NULL;
    CURLUcode rc = curl_url_get(u, part, &v, flags);
    *present = 0;
    dst[0] = '\0';
    if (rc != CURLUE_OK) {
        /* The "no such part" codes mean absent; anything else is a malformed part. */
        if (rc == CURLUE_NO_USER || rc == CURLUE_NO_PASSWORD || rc == CURLUE_NO_PORT ||
            rc == CURLUE_NO_QUERY || rc == CURLUE_NO_FRAGMENT || rc == CURLUE_NO_HOST)
            return 0;
        return -1;
    }
    size_t n = strlen(v);
    int ok = n < cap;
    if (ok)
        memcpy(dst, v, n + 1);
    /* Scrub: this may be the password. */
    memset(v, 0, n);
    curl_free(v);
    *present = 1;
    return ok ? 0 : -1;
}

int pgw_redis_url_parse(const char *url, pgw_redis_url *out, char *err, size_t errlen)
{
    char buf[256];
    int present = 0;
    int rc = -1;
    const char *why = NULL;
    CURLU *u = NULL;

    memset(out, 0, sizeof *out);
    if (!url || !*url) {
        why = "empty";
        goto done;
    }
    u = curl_url();
    if (!u) {
        why = "out of memory";
        goto done;
    }
    /* redis is not a scheme libcurl speaks, so it must be allowed explicitly. */
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        why = "not a valid URL (expected redis[s]://[[user]:password@]host:port[/db])";
        goto done;
    }
    if (url_part(u, CURLUPART_SCHEME, 0, buf, sizeof buf, &present) != 0 || !present ||
        (strcmp(buf, "redis") != 0 && strcmp(buf, "rediss") != 0)) {
        why = "scheme must be redis:// or rediss:// (TLS)";
        goto done;
    }
    out->tls = strcmp(buf, "rediss") == 0;
    if (url_part(u, CURLUPART_HOST, 0, out->host, sizeof out->host, &present) != 0 || !present ||
        !out->host[0]) {
        why = "host missing or too long";
        goto done;
    }
    size_t hl = strlen(out->host);
    if (out->host[0] == '[' && hl >= 2 && out->host[hl - 1] == ']') {
        memmove(out->host, out->host + 1, hl - 2);
        out->host[hl - 2] = '\0';
    }
    out->port = 6379;
    if (url_part(u, CURLUPART_PORT, 0, buf, sizeof buf, &present) != 0) {
        why = "bad port";
        goto done;
    }
    if (present) {
        char *end = NULL;
        errno = 0;
        long p = strtol(buf, &end, 10);
        if (errno || !end || *end || p < 1 || p > 65535) {
            why = "port must be 1..65535";
            goto done;
        }
        out->port = (int)p;
    }
    if (url_part(u, CURLUPART_USER, CURLU_URLDECODE, out->username, sizeof out->username,
                 &present) != 0 ||
        url_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE, out->password, sizeof out->password,
                 &present) != 0) {
        why = "user or password malformed or too long";
        goto done;
    }
    if (url_part(u, CURLUPART_QUERY, 0, buf, sizeof buf, &present) != 0 || present ||
        url_part(u, CURLUPART_FRAGMENT, 0, buf, sizeof buf, &present) != 0 || present) {
        why = "query strings and fragments are not supported";
        goto done;
    }
    if (url_part(u, CURLUPART_PATH, 0, buf, sizeof buf, &present) != 0) {
        why = "bad path";
        goto done;
    }
    out->db = 0;
    if (present && strcmp(buf, "/") != 0 && buf[0]) {
        const char *d = buf[0] == '/' ? buf + 1 : buf;
        size_t dl = strlen(d);
        if (dl < 1 || dl > 2 || strspn(d, "0123456789") != dl || atoi(d) > 15) {
            why = "database must be a number 0..15";
            goto done;
        }
        out->db = atoi(d);
    }
    rc = 0;
done:
    if (u)
        curl_url_cleanup(u);
    if (rc != 0) {
        memset(out, 0, sizeof *out);
        if (err && errlen)
            snprintf(err, errlen, "--redis-url: %s", why ? why : "invalid");
    }
    return rc;
}

int pgw_redis_key_for_arn(const char *arn, char *out, size_t cap)
{
    if (!arn || !out)
        return -1;
    /* Once per lookup: copies, not snprintf (whose format parsing showed in profiles). */
    size_t np = sizeof(PGW_REDIS_KEY_PREFIX) - 1, na = strlen(arn);
    if (np + na >= cap || np + na > INT_MAX)
        return -1;
    memcpy(out, PGW_REDIS_KEY_PREFIX, np);
    memcpy(out + np, arn, na + 1);
    return (int)(np + na);
}

/* ---- breaker ----------------------------------------------------------------------------- */

static void conn_drop(redis_conn *c);

static void breaker_trip(pgw_redis_tier *tier)
{
    tier->breaker = PGW_REDIS_BREAKER_OPEN;
    tier->stats.breaker_opens++;
    tier->open_until_ms = mono_ms() + tier->cooldown_ms;
    tier->cooldown_ms = tier->cooldown_ms > tier->cfg.breaker_cooldown_max_ms / 2
                            ? tier->cfg.breaker_cooldown_max_ms
                            : tier->cooldown_ms * 2;
    tier->consecutive_failures = 0;
    tier->probe_in_flight = 0;
    /* A connection that produced a run of failures may be wedged (replies that never come):
     * start over with a fresh one. Pending commands are answered NULL by the teardown. */
    conn_drop(&tier->main);
}

static void breaker_failure(pgw_redis_tier *tier)
{
    switch (tier->breaker) {
    case PGW_REDIS_BREAKER_CLOSED:
        if (++tier->consecutive_failures >= tier->cfg.breaker_failures)
            breaker_trip(tier);
        break;
    case PGW_REDIS_BREAKER_HALF_OPEN:
        breaker_trip(tier);
        break;
    case PGW_REDIS_BREAKER_OPEN:
        break;
    }
}

static void breaker_success(pgw_redis_tier *tier)
{
    tier->consecutive_failures = 0;
    if (tier->breaker == PGW_REDIS_BREAKER_HALF_OPEN) {
        tier->breaker = PGW_REDIS_BREAKER_CLOSED;
        tier->cooldown_ms = tier->cfg.breaker_cooldown_ms;
        tier->probe_in_flight = 0;
    }
}

/* Whether a command may be sent now; *is_probe is set when it is the half-open probe. */
static int breaker_allow(pgw_redis_tier *tier, int *is_probe)
{
    *is_probe = 0;
    if (tier->breaker == PGW_REDIS_BREAKER_OPEN) {
        if (mono_ms() < tier->open_until_ms)
            return 0;
        tier->breaker = PGW_REDIS_BREAKER_HALF_OPEN;
        tier->probe_in_flight = 0;
    }
    if (tier->breaker == PGW_REDIS_BREAKER_HALF_OPEN) {
        if (tier->probe_in_flight)
            return 0;
        tier->probe_in_flight = 1;
        *is_probe = 1;
    }
    return 1;
}

/* ---- requests ------------------------------------------------------------------------------ */

/* Runs a GET's user callback unless the tier is being freed. */
static void answer_get(pgw_redis_tier *tier, pgw_redis_get_cb cb, void *ud, pgw_redis_result res,
                       const uint8_t *v, size_t len)
{
    if (!cb || tier->free_pending)
        return;
    if (res == PGW_REDIS_HIT)
        tier->stats.hits++;
    else if (res == PGW_REDIS_MISS)
        tier->stats.misses++;
    else
        tier->stats.errors++;
    if (res == PGW_REDIS_ERROR && ud == tier->timing_out && ud)
        tier->stats.get_timeouts++;
    cb(res, v, len, ud);
}

/* Runs a command's user callback unless the tier is being freed. */
static void answer_reply(pgw_redis_tier *tier, pgw_redis_reply_cb cb, void *ud,
                         const redisReply *reply)
{
    if (!cb || tier->free_pending)
        return;
    if (!reply)
        tier->stats.command_failures++;
    cb(reply, ud);
}

/* Answers a request with reply (NULL: none). `copy` is a copy of its entry: the FIFO may be
 * freed or reallocated by what this triggers (a breaker trip drops the connection, a callback
 * sends a command). */
static void answer_req(pgw_redis_tier *tier, const pend *copy, const redisReply *reply)
{
    if (copy->reply_cb) {
        if (reply && reply->type != REDIS_REPLY_ERROR)
            breaker_success(tier);
        else
            breaker_failure(tier);
        answer_reply(tier, copy->reply_cb, copy->p, reply);
        return;
    }
    const uint8_t *value;
    size_t len;
    int oversize;
    pgw_redis_result res =
        pgw_redis_get_reply(reply, tier->cfg.max_value_bytes, &value, &len, &oversize);
    if (res == PGW_REDIS_ERROR) {
        breaker_failure(tier);
    } else {
        breaker_success(tier);
        if (oversize)
            tier->stats.oversize++;
    }
    answer_get(tier, copy->get_cb, copy->p, res, value, len);
}

pgw_redis_result pgw_redis_get_reply(const redisReply *reply, size_t max_value_bytes,
                                     const uint8_t **value, size_t *len, int *oversize)
{
    *value = NULL;
    *len = 0;
    *oversize = 0;
    if (reply && reply->type == REDIS_REPLY_STRING) {
        if ((size_t)reply->len > max_value_bytes) {
            *oversize = 1;
            return PGW_REDIS_MISS;
        }
        *value = (const uint8_t *)reply->str;
        *len = (size_t)reply->len;
        return PGW_REDIS_HIT;
    }
    if (reply && reply->type == REDIS_REPLY_NIL)
        return PGW_REDIS_MISS;
    /* NULL (timeout, connection gone), an error reply, or a type GET never returns. */
    return PGW_REDIS_ERROR;
}

/* A pending entry's reply (NULL when the connection went away); frees what the entry owns. */
static void pend_complete(pgw_redis_tier *tier, pend e, const redisReply *reply)
{
    if (e.kind == PEND_COUNTED) {
        if (!reply || reply->type == REDIS_REPLY_ERROR)
            ++*(uint64_t *)e.p;
        return;
    }
    if (e.kind == PEND_REQ && !e.answered)
        answer_req(tier, &e, reply);
}

static void arm_timeout(redis_conn *c, int64_t in_us)
{
    struct timeval tv = {(time_t)(in_us / 1000000), (suseconds_t)(in_us % 1000000)};
    evtimer_add(c->timeout_ev, &tv);
}

/* The connection's timer: answers every entry past its deadline, oldest first, then waits for
 * the next one's. Entries answered here stay in the FIFO (their replies still come, in order);
 * an answer may drop the connection (a breaker trip) or queue commands, so the FIFO is read
 * afresh after each. */
static void conn_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    unsigned gen = c->gen;
    int64_t now = mono_us();
    enter(tier);
    while (c->gen == gen && !tier->free_pending && c->q_checked < c->q_len) {
        pend *e = &c->q[(c->q_head + c->q_checked) % c->q_cap];
        if (e->kind == PEND_REQ && !e->answered) {
            if (e->deadline_us > now) {
                arm_timeout(c, e->deadline_us - now);
                break;
            }
            e->answered = 1;
            c->q_checked++;
            pend copy = *e;
            tier->stats.timeouts++;
            tier->timing_out = copy.get_cb ? copy.p : NULL;
            answer_req(tier, &copy, NULL);
            tier->timing_out = NULL;
            continue;
        }
        c->q_checked++;
    }
    leave(tier);
}

/* ---- the pending FIFO ---------------------------------------------------------------------- */

static int q_push(redis_conn *c, pend e)
{
    if (c->q_len == c->q_cap) {
        size_t max = c->tier->cfg.max_pending;
        if (c->q_cap >= max)
            return -1;
        size_t ncap = c->q_cap ? c->q_cap * 2 : 64;
        if (ncap > max)
            ncap = max;
        pend *nq = malloc(ncap * sizeof *nq);
        if (!nq)
            return -1;
        for (size_t i = 0; i < c->q_len; i++)
            nq[i] = c->q[(c->q_head + i) % c->q_cap];
        free(c->q);
        c->q = nq;
        c->q_cap = ncap;
        c->q_head = 0;
    }
    c->q[(c->q_head + c->q_len) % c->q_cap] = e;
    c->q_len++;
    return 0;
}

static pend q_pop(redis_conn *c)
{
    pend e = c->q[c->q_head];
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
    if (c->q_checked > 0)
        c->q_checked--;
    return e;
}

/* Undoes the last q_push (the command could not be written). */
static void q_unpush(redis_conn *c)
{
    c->q_len--;
    if (c->q_checked > c->q_len)
        c->q_checked = c->q_len;
}

/* ---- writing ------------------------------------------------------------------------------- */

static void free_cmd_cb(const void *data, size_t len, void *extra)
{
    redisFreeCommand((char *)data);
}

/* For AUTH: the buffer holds the password. */
static void scrub_cmd_cb(const void *data, size_t len, void *extra)
{
    memset((void *)data, 0, len);
    redisFreeCommand((char *)data);
}

/* Encodes and queues one command on c, with the pending entry e (none for PEND_NONE). secret:
 * the command holds a password, scrubbed from memory once written. Returns 0, or -1 (nothing
 * queued). */
static int conn_send(redis_conn *c, int argc, const char **argv, const size_t *lens, pend e,
                     int secret)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n <= 0 || !cmd)
        return -1;
    if (e.kind != PEND_NONE && q_push(c, e) != 0) {
        if (secret)
            memset(cmd, 0, (size_t)n);
        redisFreeCommand(cmd);
        return -1;
    }
    /* Small commands are copied, so that pipelined GETs share buffer chunks: over TLS each
     * chunk becomes one SSL_write (one record, one syscall), so a chunk per command would
     * cost a record and a write per GET. Large values and AUTH (scrubbed once sent) are
     * written from where hiredis built them. */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!secret && n <= PGW_REDIS_COPY_MAX) {
        int rc = evbuffer_add(out, cmd, (size_t)n);
        redisFreeCommand(cmd);
        if (rc != 0 && e.kind != PEND_NONE)
            q_unpush(c);
        return rc == 0 ? 0 : -1;
    }
    if (evbuffer_add_reference(out, cmd, (size_t)n, secret ? scrub_cmd_cb : free_cmd_cb, NULL) !=
        0) {
        if (e.kind != PEND_NONE)
            q_unpush(c);
        if (secret)
            memset(cmd, 0, (size_t)n);
        redisFreeCommand(cmd);
        return -1;
    }
    return 0;
}

/* ---- subscription state -------------------------------------------------------------------- */

static void set_subscribed(redis_conn *c, int up)
{
    pgw_redis_tier *tier = c->tier;
    if (c->subscribed == up)
        return;
    c->subscribed = up;
    if (up)
        tier->stats.sub_connects++;
    if (tier->cfg.on_subscription && !tier->free_pending)
        tier->cfg.on_subscription(up, tier->cfg.message_ud);
}

/* ---- connection lifecycle ------------------------------------------------------------------ */

static void schedule_reconnect(redis_conn *c)
{
    if (c->tier->free_pending)
        return;
    struct timeval tv = ms_to_tv(c->backoff_ms);
    evtimer_add(c->reconnect_ev, &tv);
    int max = c->tier->cfg.reconnect_max_ms;
    c->backoff_ms = c->backoff_ms > max / 2 ? max : c->backoff_ms * 2;
}

/* Releases the transport and hands back what was pending, without running anything. */
static void conn_release(redis_conn *c, pend **q, size_t *head, size_t *len, size_t *cap)
{
    c->gen++;
    evtimer_del(c->connect_timeout_ev);
    evtimer_del(c->timeout_ev);
    if (c->ping_ev)
        evtimer_del(c->ping_ev);
    c->pong_pending = 0;
    if (c->bev) {
        /* Before TLS starts, a rediss:// socket is not owned by its plain bufferevent (it is
         * to be handed over): close it here. */
        evutil_socket_t fd = c->stage == STAGE_TCP && c->tier->url.tls ? bufferevent_getfd(c->bev)
                                                                       : EVUTIL_INVALID_SOCKET;
        bufferevent_free(c->bev);
        c->bev = NULL;
        if (fd != EVUTIL_INVALID_SOCKET)
            evutil_closesocket(fd);
    }
    if (c->reader) {
        redisReaderFree(c->reader);
        c->reader = NULL;
    }
    *q = c->q;
    *head = c->q_head;
    *len = c->q_len;
    *cap = c->q_cap;
    c->q = NULL;
    c->q_head = c->q_len = c->q_cap = c->q_checked = 0;
    c->state = PGW_REDIS_CONN_DISCONNECTED;
    c->stage = STAGE_IDLE;
    c->handshake_pending = 0;
}

/* Closes the connection (if any), plans the next attempt, and answers every pending command
 * NULL. Safe inside the connection's own callbacks. */
static void conn_drop(redis_conn *c)
{
    if (!c->bev)
        return;
    pgw_redis_tier *tier = c->tier;
    int was_ready = c->state == PGW_REDIS_CONN_READY;
    pend *q;
    size_t head, len, cap;
    conn_release(c, &q, &head, &len, &cap);
    if (was_ready && !c->is_sub)
        tier->stats.disconnects++;
    schedule_reconnect(c);
    enter(tier);
    set_subscribed(c, 0);
    for (size_t i = 0; i < len; i++)
        pend_complete(tier, q[(head + i) % cap], NULL);
    free(q);
    leave(tier);
}

/* A connection attempt failed before becoming ready: counted and reported once, the breaker
 * told (TLS and AUTH failures open it: retrying soon will not fix a configuration), and the
 * next attempt planned. */
static void attempt_failed(redis_conn *c, pgw_redis_event kind)
{
    pgw_redis_tier *tier = c->tier;
    if (!c->attempt_reported) {
        c->attempt_reported = 1;
        if (kind == PGW_REDIS_EVENT_TLS_FAILED)
            tier->stats.tls_failures++;
        else if (kind == PGW_REDIS_EVENT_AUTH_FAILED)
            tier->stats.auth_failures++;
        else
            tier->stats.connect_failures++;
        emit(tier, kind, tier->last_error);
    }
    if (c->bev) {
        conn_drop(c);
    } else {
        c->state = PGW_REDIS_CONN_DISCONNECTED;
        c->stage = STAGE_IDLE;
        evtimer_del(c->connect_timeout_ev);
        schedule_reconnect(c);
    }
    if (c->is_sub)
        return;
    if (kind == PGW_REDIS_EVENT_CONNECT_FAILED) {
        if (tier->breaker == PGW_REDIS_BREAKER_CLOSED)
            breaker_failure(tier);
    } else if (tier->breaker != PGW_REDIS_BREAKER_OPEN) {
        breaker_trip(tier);
    }
}

/* A ready connection was lost. */
static void conn_lost(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    emit(tier, PGW_REDIS_EVENT_DISCONNECTED, tier->last_error);
    conn_drop(c);
    if (!c->is_sub && tier->breaker == PGW_REDIS_BREAKER_CLOSED)
        breaker_failure(tier);
}

/* Something went wrong on c in its current stage; the message is in last_error. */
static void conn_failed(redis_conn *c, pgw_redis_event kind_if_connecting)
{
    if (c->stage == STAGE_READY)
        conn_lost(c);
    else
        attempt_failed(c, kind_if_connecting);
}

static void conn_ready(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    c->state = PGW_REDIS_CONN_READY;
    c->stage = STAGE_READY;
    c->backoff_ms = tier->cfg.reconnect_min_ms;
    evtimer_del(c->connect_timeout_ev);
    char detail[300];
    snprintf(detail, sizeof detail, "redis %s connection to %.200s:%d ready (%s)", c->name,
             tier->url.host, tier->url.port, tier->url.tls ? "TLS" : "plain");
    if (!c->is_sub) {
        tier->stats.connects++;
        tier->last_error[0] = '\0';
    } else {
        /* No pending entry: the confirmation and every message come as pushes. */
        const char *argv[2] = {"SUBSCRIBE", tier->sub_channel};
        size_t lens[2] = {9, strlen(tier->sub_channel)};
        pend none = {.kind = PEND_NONE, .p = NULL};
        if (conn_send(c, 2, argv, lens, none, 0) != 0) {
            set_error(tier, "redis SUBSCRIBE could not be sent (out of memory)");
            conn_lost(c);
            return;
        }
    }
    emit(tier, PGW_REDIS_EVENT_CONNECTED, detail);
}

/* ---- handshake ----------------------------------------------------------------------------- */

/* Reads the password file into out (NUL-terminated, one trailing newline stripped). Returns 0,
 * or -1 with the reason in why. */
static int read_password_file(const char *path, char *out, size_t cap, char *why, size_t whylen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(why, whylen, "%s", strerror(errno));
        return -1;
    }
    size_t n = fread(out, 1, cap, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr || n >= cap) {
        memset(out, 0, cap);
        snprintf(why, whylen, "%s", rerr ? "read error" : "longer than 511 bytes");
        return -1;
    }
    out[n] = '\0';
    if (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    if (n > 0 && out[n - 1] == '\r')
        out[--n] = '\0';
    if (n == 0 || memchr(out, '\0', n)) {
        memset(out, 0, cap);
        snprintf(why, whylen, "%s", n ? "contains a NUL byte" : "empty");
        return -1;
    }
    return 0;
}

/* hiredis 0.14 allocates an array reply's element table as soon as it has read the count, so
 * "*500000000\r\n" from a broken or hostile Redis cost 4 GB at once (found by
 * fuzz_redis_reply). No reply the gateway asks for has more than a few elements: a larger
 * array fails the reader ("out of memory"), which drops the connection. */
#define PGW_REDIS_MAX_ARRAY 64

static redisReplyObjectFunctions *hiredis_fn; /* hiredis' own table, delegated to */
static redisReplyObjectFunctions bounded_fn;
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;

static void *bounded_create_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > PGW_REDIS_MAX_ARRAY)
        return NULL;
    return hiredis_fn->createArray(task, elements);
}

static void bounded_init(void)
{
    /* A reader made only to learn hiredis' default table (a static inside hiredis, which
     * outlives the reader). */
    redisReader *probe = redisReaderCreate();
    if (probe && probe->fn) {
        hiredis_fn = probe->fn;
        bounded_fn = *hiredis_fn;
        bounded_fn.createArray = bounded_create_array;
    }
    redisReaderFree(probe);
}

int pgw_redis_reader_bound(redisReader *reader)
{
    pthread_once(&bounded_once, bounded_init);
    if (!reader || !hiredis_fn || reader->fn != hiredis_fn)
        return -1;
    reader->fn = &bounded_fn;
    return 0;
}

/* Pipelines [AUTH] [SELECT] PING; ready when every reply came back without an error. */
static void conn_handshake(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    c->stage = STAGE_HANDSHAKE;
    c->handshake_pending = 0;
    c->reader = redisReaderCreate();
    if (c->reader && pgw_redis_reader_bound(c->reader) != 0) {
        redisReaderFree(c->reader);
        c->reader = NULL;
    }
    if (!c->reader) {
        set_error(tier, "redis: out of memory");
        attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
        return;
    }
    char file_pw[PGW_REDIS_PASSWORD_MAX];
    const char *pw = tier->url.password;
    int sent = 0;
    if (!pw[0] && tier->password_file) {
        char why[64];
        if (read_password_file(tier->password_file, file_pw, sizeof file_pw, why, sizeof why) !=
            0) {
            set_error(tier,
                      "redis AUTH not attempted: cannot read --redis-password-file %.120s: %s",
                      tier->password_file, why);
            attempt_failed(c, PGW_REDIS_EVENT_AUTH_FAILED);
            return;
        }
        pw = file_pw;
    }
    int ok = 1;
    if (pw[0]) {
        const char *argv[3];
        size_t lens[3];
        int argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        if (tier->url.username[0]) {
            argv[argc] = tier->url.username;
            lens[argc++] = strlen(tier->url.username);
        }
        argv[argc] = pw;
        lens[argc++] = strlen(pw);
        pend e = {.kind = PEND_HANDSHAKE, .p = (void *)"AUTH"};
        ok = conn_send(c, argc, argv, lens, e, 1) == 0;
        sent += ok;
    }
    if (pw == file_pw)
        memset(file_pw, 0, sizeof file_pw);
    if (ok && tier->url.db) {
        char db[8];
        snprintf(db, sizeof db, "%d", tier->url.db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        pend e = {.kind = PEND_HANDSHAKE, .p = (void *)"SELECT"};
        ok = conn_send(c, 2, argv, lens, e, 0) == 0;
        sent += ok;
    }
    if (ok) {
        const char *argv[1] = {"PING"};
        size_t lens[1] = {4};
        pend e = {.kind = PEND_HANDSHAKE, .p = (void *)"PING"};
        ok = conn_send(c, 1, argv, lens, e, 0) == 0;
        sent += ok;
    }
    if (!ok) {
        set_error(tier, "redis: out of memory");
        attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
        return;
    }
    c->handshake_pending = sent;
}

static void handshake_reply(redis_conn *c, const char *what, const redisReply *reply)
{
    pgw_redis_tier *tier = c->tier;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Redis' AUTH/SELECT errors never repeat the password (WRONGPASS, NOPERM, NOAUTH). */
        const char *msg = reply->str ? reply->str : "";
        set_error(tier, "redis %s on %.200s:%d refused: %.100s", what, tier->url.host,
                  tier->url.port, msg);
        /* Credentials and permissions are AUTH failures; anything else (a server loading its
         * data, out of clients, a database out of range) is not the password's fault. */
        int auth = strncmp(msg, "WRONGPASS", 9) == 0 || strncmp(msg, "NOAUTH", 6) == 0 ||
                   strncmp(msg, "NOPERM", 6) == 0 || strcasestr(msg, "password") != NULL;
        attempt_failed(c, auth ? PGW_REDIS_EVENT_AUTH_FAILED : PGW_REDIS_EVENT_CONNECT_FAILED);
        return;
    }
    if (--c->handshake_pending == 0)
        conn_ready(c);
}

/* ---- reading ------------------------------------------------------------------------------- */

/* Is reply->element[i] a string equal to s (any case)? */
static int elem_is(const redisReply *reply, size_t i, const char *s)
{
    const redisReply *e = reply->element[i];
    size_t n = strlen(s);
    return e && (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) &&
           (size_t)e->len == n && strncasecmp(e->str, s, n) == 0;
}

/* Is reply->element[i] the string s (any case), of n bytes? */
static int elem_is_n(const redisReply *reply, size_t i, const char *s, size_t n)
{
    const redisReply *e = reply->element[i];
    return e && (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) &&
           (size_t)e->len == n && strncasecmp(e->str, s, n) == 0;
}

pgw_redis_sub_event pgw_redis_sub_reply(const redisReply *reply, const char *channel,
                                        const uint8_t **payload, size_t *len)
{
    *payload = NULL;
    *len = 0;
    if (!reply)
        return PGW_REDIS_SUB_OTHER;
    if (reply->type == REDIS_REPLY_ERROR)
        return PGW_REDIS_SUB_ERROR;
    if (reply->type != REDIS_REPLY_ARRAY || !reply->element)
        return PGW_REDIS_SUB_OTHER;
    if (reply->elements == 2 && elem_is(reply, 0, "pong"))
        return PGW_REDIS_SUB_PONG;
    if (reply->elements != 3)
        return PGW_REDIS_SUB_OTHER;
    size_t cl = channel ? strlen(channel) : 0;
    if (elem_is(reply, 0, "subscribe") && elem_is_n(reply, 1, channel, cl))
        return PGW_REDIS_SUB_SUBSCRIBED;
    const redisReply *p = reply->element[2];
    if (elem_is(reply, 0, "message") && elem_is_n(reply, 1, channel, cl) && p &&
        p->type == REDIS_REPLY_STRING) {
        *payload = (const uint8_t *)p->str;
        *len = (size_t)p->len;
        return PGW_REDIS_SUB_MESSAGE;
    }
    return PGW_REDIS_SUB_OTHER;
}

static void sub_push(redis_conn *c, const redisReply *reply)
{
    pgw_redis_tier *tier = c->tier;
    const uint8_t *payload;
    size_t len;
    switch (pgw_redis_sub_reply(reply, tier->sub_channel, &payload, &len)) {
    case PGW_REDIS_SUB_ERROR:
        /* e.g. NOPERM: the ACL user may not subscribe to the channel. */
        set_error(tier, "redis SUBSCRIBE refused: %.100s", reply->str ? reply->str : "");
        conn_lost(c);
        break;
    case PGW_REDIS_SUB_PONG:
        c->pong_pending = 0;
        break;
    case PGW_REDIS_SUB_SUBSCRIBED:
        if (c->ping_ev) {
            struct timeval tv = ms_to_tv(tier->cfg.sub_ping_interval_ms);
            evtimer_add(c->ping_ev, &tv);
        }
        set_subscribed(c, 1);
        break;
    case PGW_REDIS_SUB_MESSAGE:
        tier->stats.messages++;
        if (tier->cfg.on_message && !tier->free_pending)
            tier->cfg.on_message(payload, len, tier->cfg.message_ud);
        break;
    case PGW_REDIS_SUB_OTHER:
        break;
    }
}

static void dispatch(redis_conn *c, const redisReply *reply)
{
    pgw_redis_tier *tier = c->tier;
    if (c->q_len == 0) {
        if (c->is_sub && c->stage == STAGE_READY) {
            sub_push(c, reply);
            return;
        }
        /* A reply nobody asked for: the stream cannot be trusted any more. */
        set_error(tier, "redis %s connection: unexpected reply, reconnecting", c->name);
        conn_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
        return;
    }
    pend e = q_pop(c);
    if (e.kind == PEND_HANDSHAKE)
        handshake_reply(c, e.p, reply);
    else
        pend_complete(tier, e, reply);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    if (!c->reader) /* no data is expected before the handshake starts */
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    enter(tier);
    unsigned gen = c->gen;
    while (c->gen == gen && !tier->free_pending && evbuffer_get_length(in) > 0) {
        /* Hand what arrived to the reader (it keeps its own copy), then take every complete
         * reply out of it. */
        struct evbuffer_iovec v[16];
        int nv = evbuffer_peek(in, -1, NULL, v, 16);
        size_t fed = 0;
        int fed_all = 1;
        for (int i = 0; i < nv && i < 16 && fed_all; i++) {
            fed_all = redisReaderFeed(c->reader, v[i].iov_base, v[i].iov_len) == REDIS_OK;
            fed += v[i].iov_len;
        }
        evbuffer_drain(in, fed);
        if (!fed_all) { /* out of memory: the stream has a hole now */
            set_error(tier, "redis %s connection: out of memory reading a reply", c->name);
            conn_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
            break;
        }
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
                set_error(tier, "redis %s connection: protocol error: %.80s", c->name,
                          c->reader->errstr);
                conn_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
                break;
            }
            if (!reply)
                break;
            dispatch(c, reply);
            freeReplyObject(reply);
            if (c->gen != gen || tier->free_pending)
                break;
        }
        /* A reply larger than anything we accept, still arriving: do not buffer all of it. */
        if (c->gen == gen && c->reader->len - c->reader->pos > tier->cfg.max_value_bytes &&
            c->reader->len - c->reader->pos > PGW_REDIS_MIN_READ_BOUND) {
            set_error(tier, "redis %s connection: reply over %zu bytes, reconnecting", c->name,
                      (size_t)PGW_REDIS_MIN_READ_BOUND);
            conn_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
        }
    }
    leave(tier);
}

/* ---- TCP and TLS --------------------------------------------------------------------------- */

/* The reason a TLS connection failed, for the message. Returns 1 when OpenSSL gave one (an
 * error or a failed verification), 0 when the stream just ended. */
static int tls_reason(redis_conn *c, char *out, size_t cap)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    /* libevent queues OpenSSL's errors and, besides them, the SSL_get_error() code of the
     * failed call (a small number with no library): prefer a real OpenSSL error. */
    unsigned long e, lib_err = 0, ssl_code = 0;
    while ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
        if (ERR_GET_LIB(e) != 0) {
            if (!lib_err)
                lib_err = e;
        } else if (!ssl_code) {
            ssl_code = e;
        }
    }
    if (vr != X509_V_OK) {
        snprintf(out, cap, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        return 1;
    }
    if (lib_err) {
        char buf[160];
        ERR_error_string_n(lib_err, buf, sizeof buf);
        snprintf(out, cap, "%s", buf);
        return 1;
    }
    int se = EVUTIL_SOCKET_ERROR();
    if (ssl_code) {
        /* SSL_ERROR_SYSCALL and friends: the server dropped the connection mid-TLS. */
        snprintf(out, cap, "connection %s by the server during TLS",
                 se == ECONNRESET ? "reset" : "closed");
        return 1;
    }
    snprintf(out, cap, "connection closed (%s)",
             se ? evutil_socket_error_to_string(se) : "end of stream");
    return 0;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

/* Per connection: SNI and the name (or address) the certificate must carry. */
static SSL *new_ssl(pgw_redis_tier *tier)
{
    SSL *ssl = SSL_new(tier->ssl_ctx);
    if (!ssl)
        return NULL;
    unsigned char tmp[sizeof(struct in6_addr)];
    int is_ip = evutil_inet_pton(AF_INET, tier->url.host, tmp) == 1 ||
                evutil_inet_pton(AF_INET6, tier->url.host, tmp) == 1;
    int ok;
    if (is_ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), tier->url.host) == 1;
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set_tlsext_host_name(ssl, tier->url.host) == 1 &&
             SSL_set1_host(ssl, tier->url.host) == 1;
    }
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

/* TCP is up: switch the socket to a TLS bufferevent. */
static void start_tls(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    SSL *ssl = new_ssl(tier);
    struct bufferevent *tls = NULL;
    if (ssl)
        /* With CLOSE_ON_FREE it owns the SSL and the socket, even when it fails. */
        tls = bufferevent_openssl_socket_new(tier->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    /* The plain bufferevent was made without CLOSE_ON_FREE: the socket lives on. */
    bufferevent_free(c->bev);
    c->bev = tls;
    if (!tls) {
        if (!ssl)
            evutil_closesocket(fd);
        set_error(tier, "redis TLS to %.200s:%d: cannot set up the session", tier->url.host,
                  tier->url.port);
        attempt_failed(c, PGW_REDIS_EVENT_TLS_FAILED);
        return;
    }
    c->stage = STAGE_TLS;
    bufferevent_setcb(tls, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
}

static void set_socket_options(evutil_socket_t fd)
{
    int one = 1;
    /* Small request/reply pairs: no Nagle delay. Keepalive finds a silently dead peer (the
     * subscriber may be idle for long). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
#ifdef TCP_KEEPIDLE
    int idle = 15, intvl = 5, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    enter(tier);
    if (what & BEV_EVENT_CONNECTED) {
        if (c->stage == STAGE_TCP) {
            set_socket_options(bufferevent_getfd(bev));
            if (tier->url.tls) {
                start_tls(c);
            } else {
                conn_handshake(c);
                if (c->bev && c->stage == STAGE_HANDSHAKE)
                    bufferevent_enable(c->bev, EV_READ);
            }
        } else if (c->stage == STAGE_TLS) {
            conn_handshake(c); /* certificate and host name verified by OpenSSL */
        }
    } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)) {
        int se = EVUTIL_SOCKET_ERROR();
        switch (c->stage) {
        case STAGE_TCP:
            set_error(tier, "redis connect to %.200s:%d failed: %s", tier->url.host, tier->url.port,
                      se ? evutil_socket_error_to_string(se) : "closed");
            attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
            break;
        case STAGE_TLS: {
            char why[200];
            tls_reason(c, why, sizeof why);
            set_error(tier, "redis TLS handshake with %.200s:%d failed: %s", tier->url.host,
                      tier->url.port, why);
            attempt_failed(c, PGW_REDIS_EVENT_TLS_FAILED);
            break;
        }
        default: {
            /* Over TLS an OpenSSL error here is the server refusing us after the handshake
             * (TLS 1.3 reports a missing client certificate this way). */
            char why[200] = "";
            int tls_err = tier->url.tls && tls_reason(c, why, sizeof why);
            if (tls_err)
                set_error(tier, "redis TLS session with %.200s:%d failed: %s", tier->url.host,
                          tier->url.port, why);
            else
                set_error(tier, "redis %s connection to %.200s:%d %s: %s", c->name, tier->url.host,
                          tier->url.port,
                          c->stage == STAGE_READY ? "lost" : "closed during the handshake",
                          (what & BEV_EVENT_EOF) ? "closed by the server"
                          : se                   ? evutil_socket_error_to_string(se)
                                                 : "error");
            conn_failed(c, tls_err ? PGW_REDIS_EVENT_TLS_FAILED : PGW_REDIS_EVENT_CONNECT_FAILED);
            break;
        }
        }
    }
    leave(tier);
}

static void connect_ip(redis_conn *c, const char *ip)
{
    pgw_redis_tier *tier = c->tier;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (evutil_inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)tier->url.port);
        sl = sizeof *s4;
    } else if (evutil_inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)tier->url.port);
        sl = sizeof *s6;
    } else {
        set_error(tier, "redis host %.200s: bad address", tier->url.host);
        attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
        return;
    }
    /* For TLS the socket moves to another bufferevent once connected: not closed with this
     * one. */
    c->bev = bufferevent_socket_new(tier->base, -1, tier->url.tls ? 0 : BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        set_error(tier, "redis: out of memory");
        attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
        return;
    }
    c->state = PGW_REDIS_CONN_CONNECTING;
    c->stage = STAGE_TCP;
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    struct timeval tv = ms_to_tv(tier->cfg.connect_timeout_ms);
    evtimer_add(c->connect_timeout_ev, &tv);
    /* Failures may be reported from inside this call (conn_event_cb). */
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, (int)sl) != 0 &&
        c->stage == STAGE_TCP && c->bev) {
        int se = EVUTIL_SOCKET_ERROR();
        set_error(tier, "redis connect to %.200s:%d failed: %s", tier->url.host, tier->url.port,
                  evutil_socket_error_to_string(se));
        attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
    }
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    if (result == EVUTIL_EAI_CANCEL) {
        /* Cancelled by pgw_redis_tier_free: the tier may be half gone. */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    char ip[INET6_ADDRSTRLEN] = "";
    c->dns_req = NULL;
    if (result == 0 && res) {
        const void *addr = res->ai_family == AF_INET6
                               ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                               : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
        evutil_inet_ntop(res->ai_family, addr, ip, sizeof ip);
    }
    if (res)
        evutil_freeaddrinfo(res);
    enter(tier);
    if (!ip[0]) {
        set_error(tier, "redis host %.200s: %s", tier->url.host,
                  result ? evutil_gai_strerror(result) : "no address");
        attempt_failed(c, PGW_REDIS_EVENT_CONNECT_FAILED);
    } else {
        connect_ip(c, ip);
    }
    leave(tier);
}

static void conn_start(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    if (c->bev || c->dns_req || tier->free_pending)
        return;
    c->attempt_reported = 0;
    unsigned char tmp[sizeof(struct in6_addr)];
    if (evutil_inet_pton(AF_INET, tier->url.host, tmp) == 1 ||
        evutil_inet_pton(AF_INET6, tier->url.host, tmp) == 1) {
        connect_ip(c, tier->url.host);
        return;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    c->state = PGW_REDIS_CONN_RESOLVING;
    /* The callback may run before this returns (hosts file); dns_cb copes with that. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(tier->dns, tier->url.host, NULL, &hints, dns_cb, c);
    if (req && c->state == PGW_REDIS_CONN_RESOLVING && !c->bev)
        c->dns_req = req;
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    enter(tier);
    conn_start(c);
    leave(tier);
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    enter(tier);
    if (c->bev && c->state == PGW_REDIS_CONN_CONNECTING) {
        const char *during = c->stage == STAGE_TCP   ? "connect"
                             : c->stage == STAGE_TLS ? "TLS handshake"
                                                     : "AUTH/SELECT/PING";
        set_error(tier, "redis %s to %.200s:%d timed out", during, tier->url.host, tier->url.port);
        attempt_failed(c, c->stage == STAGE_TLS ? PGW_REDIS_EVENT_TLS_FAILED
                                                : PGW_REDIS_EVENT_CONNECT_FAILED);
    }
    leave(tier);
}

/* The subscriber may sit idle for long, and a connection can die without a FIN (a NAT or
 * proxy forgetting it): PING it, and call it lost when the PONG has not come back by the next
 * tick, so on_subscription(0) tells users within two intervals. */
static void sub_ping_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_conn *c = arg;
    pgw_redis_tier *tier = c->tier;
    if (!c->bev || c->stage != STAGE_READY)
        return;
    enter(tier);
    if (c->pong_pending) {
        set_error(tier, "redis subscriber connection to %.200s:%d: no PONG within %d ms",
                  tier->url.host, tier->url.port, tier->cfg.sub_ping_interval_ms);
        conn_lost(c);
    } else {
        const char *argv[1] = {"PING"};
        size_t lens[1] = {4};
        pend none = {.kind = PEND_NONE, .p = NULL}; /* in subscribed mode the PONG is a push */
        if (conn_send(c, 1, argv, lens, none, 0) == 0)
            c->pong_pending = 1;
        struct timeval tv = ms_to_tv(tier->cfg.sub_ping_interval_ms);
        evtimer_add(c->ping_ev, &tv);
    }
    leave(tier);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static int conn_init(redis_conn *c, pgw_redis_tier *tier, int is_sub)
{
    c->tier = tier;
    c->is_sub = is_sub;
    c->name = is_sub ? "subscriber" : "main";
    c->state = PGW_REDIS_CONN_DISCONNECTED;
    c->backoff_ms = tier->cfg.reconnect_min_ms;
    c->reconnect_ev = evtimer_new(tier->base, reconnect_cb, c);
    c->connect_timeout_ev = evtimer_new(tier->base, connect_timeout_cb, c);
    c->timeout_ev = evtimer_new(tier->base, conn_timeout_cb, c);
    if (is_sub && !(c->ping_ev = evtimer_new(tier->base, sub_ping_cb, c)))
        return -1;
    return c->reconnect_ev && c->connect_timeout_ev && c->timeout_ev ? 0 : -1;
}

/* Frees everything c holds without running any callback. */
static void conn_cleanup(redis_conn *c)
{
    if (c->dns_req) {
        struct evdns_getaddrinfo_request *dr = c->dns_req;
        c->dns_req = NULL;
        evdns_getaddrinfo_cancel(dr);
    }
    if (c->connect_timeout_ev && c->timeout_ev) {
        pend *q;
        size_t head, len, cap;
        conn_release(c, &q, &head, &len, &cap);
        free(q); /* entries own nothing */
    }
    if (c->reconnect_ev)
        event_free(c->reconnect_ev);
    if (c->connect_timeout_ev)
        event_free(c->connect_timeout_ev);
    if (c->timeout_ev)
        event_free(c->timeout_ev);
    if (c->ping_ev)
        event_free(c->ping_ev);
    c->reconnect_ev = c->connect_timeout_ev = c->timeout_ev = c->ping_ev = NULL;
}

/* OpenSSL must never prompt on a terminal for a key passphrase. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
    return 0;
}

/* Is path a file we can open for reading? Fills why otherwise. */
static int readable(const char *path, char *why, size_t whylen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(why, whylen, "%s", strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

static void ssl_error_text(char *out, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, out, cap);
    else
        snprintf(out, cap, "invalid");
    ERR_clear_error();
}

/* The TLS client context: verification against ca_file or the system store, optional client
 * certificate. Returns 0, or -1 with a message naming the flag. */
static int make_ssl_ctx(pgw_redis_tier *tier, const pgw_redis_tier_config *cfg, char *err,
                        size_t errlen)
{
    char why[200];
    const char *flag = NULL;
    const char *path = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "--redis-url: cannot create a TLS context");
        return -1;
    }
    tier->ssl_ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase_cb);
    if (cfg->ca_file) {
        flag = "--redis-ca-file";
        path = cfg->ca_file;
        if (!readable(path, why, sizeof why))
            goto fail;
        if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
            ssl_error_text(why, sizeof why);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        flag = "--redis-url";
        path = "the system CA store";
        ssl_error_text(why, sizeof why);
        goto fail;
    }
    if (cfg->cert_file) {
        flag = "--redis-cert";
        path = cfg->cert_file;
        if (!readable(path, why, sizeof why))
            goto fail;
        if (SSL_CTX_use_certificate_chain_file(ctx, path) != 1) {
            ssl_error_text(why, sizeof why);
            goto fail;
        }
        flag = "--redis-key";
        path = cfg->key_file;
        if (!readable(path, why, sizeof why))
            goto fail;
        if (SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            ssl_error_text(why, sizeof why);
            goto fail;
        }
    }
    ERR_clear_error();
    return 0;
fail:
    snprintf(err, errlen, "%s: %.200s: %s", flag, path, why);
    ERR_clear_error();
    return -1;
}

/* Checks the TLS and password settings that need the parsed URL. */
static int check_security_config(pgw_redis_tier *tier, const pgw_redis_tier_config *cfg, char *err,
                                 size_t errlen)
{
    if (!cfg->cert_file != !cfg->key_file) {
        snprintf(err, errlen, "%s: needs %s too", cfg->cert_file ? "--redis-cert" : "--redis-key",
                 cfg->cert_file ? "--redis-key" : "--redis-cert");
        return -1;
    }
    if (!tier->url.tls && (cfg->ca_file || cfg->cert_file)) {
        snprintf(err, errlen, "%s: needs a rediss:// --redis-url (TLS)",
                 cfg->ca_file ? "--redis-ca-file" : "--redis-cert");
        return -1;
    }
    if (cfg->password_file) {
        char pw[PGW_REDIS_PASSWORD_MAX], why[64];
        int rc = read_password_file(cfg->password_file, pw, sizeof pw, why, sizeof why);
        memset(pw, 0, sizeof pw);
        if (rc != 0) {
            snprintf(err, errlen, "--redis-password-file: %.200s: %s", cfg->password_file, why);
            return -1;
        }
    } else if (tier->url.username[0] && !tier->url.password[0]) {
        snprintf(err, errlen,
                 "--redis-url: a user name needs a password (in the URL or "
                 "--redis-password-file)");
        return -1;
    }
    return tier->url.tls ? make_ssl_ctx(tier, cfg, err, errlen) : 0;
}

static char *dup_or_null(const char *s, int *ok)
{
    if (!s || !*s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = 0;
    return d;
}

pgw_redis_tier *pgw_redis_tier_new(struct event_base *base, const pgw_redis_tier_config *cfg,
                                   char *err, size_t errlen)
{
    char local_err[8];
    if (!err || !errlen) {
        err = local_err;
        errlen = sizeof local_err;
    }
    if (!base || !cfg) {
        snprintf(err, errlen, "--redis-url: no event loop or config");
        return NULL;
    }
    pgw_redis_tier *tier = calloc(1, sizeof *tier);
    if (!tier) {
        snprintf(err, errlen, "--redis-url: out of memory");
        return NULL;
    }
    if (pgw_redis_url_parse(cfg->url, &tier->url, err, errlen) != 0) {
        free(tier);
        return NULL;
    }
    tier->base = base;
    tier->cfg = *cfg;
    /* Only owned copies are kept of the caller's strings. */
    tier->cfg.url = tier->cfg.ca_file = tier->cfg.cert_file = tier->cfg.key_file = NULL;
    tier->cfg.password_file = tier->cfg.subscribe_channel = NULL;
    pgw_redis_tier_config defaults;
    pgw_redis_tier_config_defaults(&defaults);
#define PGW_DEFAULT_IF_UNSET(f)                                                                    \
    if (tier->cfg.f <= 0)                                                                          \
    tier->cfg.f = defaults.f
    PGW_DEFAULT_IF_UNSET(command_timeout_ms);
    PGW_DEFAULT_IF_UNSET(connect_timeout_ms);
    PGW_DEFAULT_IF_UNSET(reconnect_min_ms);
    PGW_DEFAULT_IF_UNSET(reconnect_max_ms);
    PGW_DEFAULT_IF_UNSET(breaker_failures);
    PGW_DEFAULT_IF_UNSET(breaker_cooldown_ms);
    PGW_DEFAULT_IF_UNSET(breaker_cooldown_max_ms);
    PGW_DEFAULT_IF_UNSET(sub_ping_interval_ms);
    if (tier->cfg.max_value_bytes == 0)
        tier->cfg.max_value_bytes = defaults.max_value_bytes;
    if (tier->cfg.max_pending == 0)
        tier->cfg.max_pending = defaults.max_pending;
#undef PGW_DEFAULT_IF_UNSET
    if (tier->cfg.reconnect_max_ms < tier->cfg.reconnect_min_ms)
        tier->cfg.reconnect_max_ms = tier->cfg.reconnect_min_ms;
    if (tier->cfg.breaker_cooldown_max_ms < tier->cfg.breaker_cooldown_ms)
        tier->cfg.breaker_cooldown_max_ms = tier->cfg.breaker_cooldown_ms;
    tier->cooldown_ms = tier->cfg.breaker_cooldown_ms;

    int ok = 1;
    tier->sub_channel = dup_or_null(cfg->subscribe_channel, &ok);
    tier->password_file = dup_or_null(cfg->password_file, &ok);
    ok = ok && conn_init(&tier->main, tier, 0) == 0;
    if (ok && tier->sub_channel)
        ok = conn_init(&tier->sub, tier, 1) == 0;
    if (ok) {
        tier->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!tier->dns) /* no resolv.conf: numeric hosts and /etc/hosts still work */
            tier->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    }
    if (!ok || !tier->dns) {
        snprintf(err, errlen, "--redis-url: cannot set up the event loop");
        tier->free_pending = 1;
        really_free(tier);
        return NULL;
    }
    if (check_security_config(tier, cfg, err, errlen) != 0) {
        tier->free_pending = 1;
        really_free(tier);
        return NULL;
    }
    evdns_base_load_hosts(tier->dns, NULL);
    tier->in_new = 1;
    conn_start(&tier->main);
    if (tier->sub_channel)
        conn_start(&tier->sub);
    tier->in_new = 0;
    return tier;
}

static void really_free(pgw_redis_tier *tier)
{
    conn_cleanup(&tier->main);
    conn_cleanup(&tier->sub);
    if (tier->dns)
        evdns_base_free(tier->dns, 0);
    if (tier->ssl_ctx)
        SSL_CTX_free(tier->ssl_ctx);
    memset(&tier->url, 0, sizeof tier->url); /* scrub the password */
    free(tier->sub_channel);
    free(tier->password_file);
    free(tier);
}

static void suppress(redis_conn *c)
{
    for (size_t i = 0; i < c->q_len; i++) {
        pend *e = &c->q[(c->q_head + i) % c->q_cap];
        if (e->kind == PEND_REQ) {
            e->get_cb = NULL;
            e->reply_cb = NULL;
        }
    }
}

void pgw_redis_tier_free(pgw_redis_tier *tier)
{
    if (!tier || tier->free_pending)
        return;
    tier->free_pending = 1;
    if (tier->depth == 0) {
        really_free(tier);
        return;
    }
    /* Inside one of our callbacks: suppress every other answer now, release on the way out. */
    suppress(&tier->main);
}

/* ---- commands ------------------------------------------------------------------------------ */

/* Answers a command that was not sent, synchronously. */
static void reject(pgw_redis_tier *tier, pgw_redis_get_cb get_cb, pgw_redis_reply_cb reply_cb,
                   void *ud)
{
    tier->stats.rejected++;
    if (reply_cb)
        answer_reply(tier, reply_cb, ud, NULL);
    else
        answer_get(tier, get_cb, ud, PGW_REDIS_ERROR, NULL, 0);
}

/* The shared path of GET and command: breaker, queueing, timeout. */
static void send_req(pgw_redis_tier *tier, int argc, const char **argv, const size_t *lens,
                     pgw_redis_get_cb get_cb, pgw_redis_reply_cb reply_cb, void *user_data)
{
    int is_probe = 0;
    redis_conn *c = &tier->main;
    if (c->state != PGW_REDIS_CONN_READY || !c->bev) {
        /* Counting "no connection" as a failure lets the breaker open while Redis is down,
         * but not during the first connect or an attempt in progress. */
        if (c->state == PGW_REDIS_CONN_DISCONNECTED && tier->breaker == PGW_REDIS_BREAKER_CLOSED)
            breaker_failure(tier);
        reject(tier, get_cb, reply_cb, user_data);
        return;
    }
    if (!breaker_allow(tier, &is_probe)) {
        reject(tier, get_cb, reply_cb, user_data);
        return;
    }
    int64_t timeout_us = (int64_t)tier->cfg.command_timeout_ms * 1000;
    pend e = {
        .kind = PEND_REQ,
        .p = user_data,
        .get_cb = get_cb,
        .reply_cb = reply_cb,
        .deadline_us = mono_us() + timeout_us,
    };
    if (conn_send(c, argc, argv, lens, e, 0) != 0) {
        if (is_probe)
            tier->probe_in_flight = 0;
        reject(tier, get_cb, reply_cb, user_data);
        return;
    }
    /* Pending already means armed for an older entry, whose deadline comes first. */
    if (!evtimer_pending(c->timeout_ev, NULL))
        arm_timeout(c, timeout_us);
}

void pgw_redis_tier_get(pgw_redis_tier *tier, const char *key, pgw_redis_get_cb cb, void *user_data)
{
    if (!tier || !key || tier->free_pending)
        return;
    enter(tier);
    tier->stats.gets++;
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    send_req(tier, 2, argv, lens, cb, NULL, user_data);
    leave(tier);
}

void pgw_redis_tier_command(pgw_redis_tier *tier, int argc, const char **argv, const size_t *lens,
                            pgw_redis_reply_cb cb, void *user_data)
{
    if (!tier || tier->free_pending)
        return;
    enter(tier);
    tier->stats.commands++;
    if (argc < 1 || !argv || !lens) {
        tier->stats.rejected++;
        answer_reply(tier, cb, user_data, NULL);
    } else {
        send_req(tier, argc, argv, lens, NULL, cb, user_data);
    }
    leave(tier);
}

/* Queues a fire-and-forget command on the main connection; errors bump *errors. */
static int send_counted(pgw_redis_tier *tier, int argc, const char **argv, const size_t *lens,
                        uint64_t *errors)
{
    redis_conn *c = &tier->main;
    if (c->state != PGW_REDIS_CONN_READY || !c->bev || tier->breaker != PGW_REDIS_BREAKER_CLOSED)
        return -1;
    pend e = {.kind = PEND_COUNTED, .p = errors};
    return conn_send(c, argc, argv, lens, e, 0);
}

int pgw_redis_tier_set(pgw_redis_tier *tier, const char *key, const uint8_t *value, size_t len,
                       int64_t ttl_ms)
{
    if (!tier || !key || (len && !value) || ttl_ms <= 0 || tier->free_pending)
        return -1;
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *argv[5] = {"SET", key, value ? (const char *)value : "", "PX", ttl};
    size_t lens[5] = {3, strlen(key), len, 2, strlen(ttl)};
    if (send_counted(tier, 5, argv, lens, &tier->stats.set_errors) != 0) {
        tier->stats.set_skipped++;
        return -1;
    }
    tier->stats.sets++;
    return 0;
}

int pgw_redis_tier_publish(pgw_redis_tier *tier, const char *channel, const uint8_t *payload,
                           size_t len)
{
    if (!tier || !channel || !*channel || (len && !payload) || tier->free_pending)
        return -1;
    const char *argv[3] = {"PUBLISH", channel, payload ? (const char *)payload : ""};
    size_t lens[3] = {7, strlen(channel), len};
    if (send_counted(tier, 3, argv, lens, &tier->stats.publish_errors) != 0) {
        tier->stats.publish_skipped++;
        return -1;
    }
    tier->stats.publishes++;
    return 0;
}

void pgw_redis_tier_stats_get(const pgw_redis_tier *tier, pgw_redis_tier_stats *out)
{
    *out = tier->stats;
    out->breaker = tier->breaker;
    /* Report an open breaker whose cool-down is over as half-open: the next GET probes. */
    if (out->breaker == PGW_REDIS_BREAKER_OPEN && mono_ms() >= tier->open_until_ms)
        out->breaker = PGW_REDIS_BREAKER_HALF_OPEN;
    out->conn = tier->main.state;
    out->sub_conn = tier->sub_channel ? tier->sub.state : PGW_REDIS_CONN_DISCONNECTED;
    out->subscribed = tier->sub.subscribed;
}

int pgw_redis_tier_is_ready(const pgw_redis_tier *tier)
{
    return tier && tier->main.state == PGW_REDIS_CONN_READY;
}

int pgw_redis_tier_is_subscribed(const pgw_redis_tier *tier)
{
    return tier && tier->sub.subscribed;
}

const char *pgw_redis_tier_last_error(const pgw_redis_tier *tier)
{
    return tier ? tier->last_error : "";
}
