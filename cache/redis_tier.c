/* Redis tier over hiredis' async API; see redis_tier.h.
 *
 * Lifetimes, which hiredis makes subtle:
 * - Every GET and command is a `redis_req` handed to hiredis as privdata. hiredis calls our reply
 * callback exactly once per queued command: with the reply, or with NULL when the context is torn
 * down (disconnect, redisAsyncFree). That callback is the only place a req is freed once queued, so
 * a req that timed out stays allocated (answered, callback cleared) until then.
 * - A req points at its tier; pgw_redis_tier_free() sets that pointer to NULL on every pending
 *   req, and sets ac->data to NULL, so callbacks that hiredis runs later touch nothing freed.
 * - hiredis defers redisAsyncFree() called from inside its own reply callbacks until the
 *   callback returns; it must never be called from inside the connect callback (hiredis keeps
 *   using the context after it), which this file never does.
 * - The subscriber is a second context (`redis_conn` sub) whose SUBSCRIBE callback hiredis
 *   keeps for every message; it finds its connection through ac->data, cleared at teardown.
 * - User callbacks may free the tier. Entry points count `depth` around anything that can run a
 *   user callback, and the real release happens when depth drops back to zero. */
#include "cache/redis_tier.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct redis_req {
    struct redis_req *prev, *next;
    pgw_redis_tier *tier;        /* NULL once the tier is gone: the callback then only frees */
    struct event *timer;         /* NULL once fired or cancelled */
    pgw_redis_get_cb get_cb;     /* a GET: set (or NULL once suppressed) */
    pgw_redis_reply_cb reply_cb; /* any other command */
    void *user_data;
    int answered;
    int is_probe;
} redis_req;

/* One connection to the server: the main one (commands), or the subscriber. Each reconnects
 * on its own, with its own backoff. */
typedef struct redis_conn {
    pgw_redis_tier *tier;
    int is_sub;
    redisAsyncContext *ac;
    struct evdns_getaddrinfo_request *dns_req;
    pgw_redis_conn_state state;
    int handshake_pending;
    struct event *reconnect_ev;
    struct event *connect_timeout_ev;
    int backoff_ms;
    int subscribed; /* subscriber only: SUBSCRIBE confirmed on this connection */
} redis_conn;

struct pgw_redis_tier {
    struct event_base *base;
    pgw_redis_tier_config cfg;
    pgw_redis_url url;
    char *sub_channel; /* owned copy of cfg.subscribe_channel, or NULL */

    struct evdns_base *dns;
    redis_conn main;
    redis_conn sub; /* unused without sub_channel */

    pgw_redis_breaker_state breaker;
    int consecutive_failures;
    int64_t open_until_ms;
    int cooldown_ms; /* the next open period */
    int probe_in_flight;

    redis_req *reqs; /* queued GETs and commands, answered or not */
    int depth;
    int free_pending;
    pgw_redis_tier_stats stats;
    char last_error[160];
};

static void really_free(pgw_redis_tier *tier);

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
        why = "not a valid URL (expected redis://[:password@]host:port[/db])";
        goto done;
    }
    if (url_part(u, CURLUPART_SCHEME, 0, buf, sizeof buf, &present) != 0 || !present ||
        strcmp(buf, "redis") != 0) {
        why = strcmp(buf, "rediss") == 0 ? "TLS (rediss://) is not supported"
                                         : "scheme must be redis://";
        goto done;
    }
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
    if (out->username[0] && !out->password[0]) {
        why = "a user name needs a password (redis://user:password@host)";
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
    int n = snprintf(out, cap, "%s%s", PGW_REDIS_KEY_PREFIX, arn);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
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
     * start over with a fresh one. Pending commands are answered by the teardown. */
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

/* A connection problem: only the main connection's count toward the breaker. */
static void conn_breaker_failure(redis_conn *c)
{
    if (!c->is_sub && c->tier->breaker == PGW_REDIS_BREAKER_CLOSED)
        breaker_failure(c->tier);
}

/* ---- subscription state ----------------------------------------------------------------- */

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

/* ---- connection ------------------------------------------------------------------------ */

static void schedule_reconnect(redis_conn *c)
{
    if (c->tier->free_pending)
        return;
    struct timeval tv = ms_to_tv(c->backoff_ms);
    evtimer_add(c->reconnect_ev, &tv);
    int max = c->tier->cfg.reconnect_max_ms;
    c->backoff_ms = c->backoff_ms > max / 2 ? max : c->backoff_ms * 2;
}

/* Closes the connection (if any) and plans the next attempt. Pending commands are answered by
 * hiredis' teardown, now or, inside a hiredis callback, right after it returns. */
static void conn_drop(redis_conn *c)
{
    redisAsyncContext *ac = c->ac;
    int was_ready = c->state == PGW_REDIS_CONN_READY;
    evtimer_del(c->connect_timeout_ev);
    if (!ac)
        return;
    c->ac = NULL;
    c->state = PGW_REDIS_CONN_DISCONNECTED;
    c->handshake_pending = 0;
    if (was_ready && !c->is_sub)
        c->tier->stats.disconnects++;
    ac->data = NULL;
    redisAsyncFree(ac);
    set_subscribed(c, 0);
    schedule_reconnect(c);
}

/* A connection attempt failed before becoming ready. */
static void conn_failed(redis_conn *c)
{
    c->state = PGW_REDIS_CONN_DISCONNECTED;
    evtimer_del(c->connect_timeout_ev);
    conn_breaker_failure(c);
    schedule_reconnect(c);
}

static void sub_reply_cb(redisAsyncContext *ac, void *r, void *privdata);

static void conn_ready(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    c->state = PGW_REDIS_CONN_READY;
    c->backoff_ms = tier->cfg.reconnect_min_ms;
    evtimer_del(c->connect_timeout_ev);
    if (!c->is_sub) {
        tier->stats.connects++;
        tier->last_error[0] = '\0';
        return;
    }
    /* The subscriber's callback stays registered with hiredis for every message; c outlives
     * the context (hiredis calls it with NULL at teardown, after ac->data is cleared). */
    const char *argv[2] = {"SUBSCRIBE", tier->cfg.subscribe_channel};
    size_t lens[2] = {9, strlen(tier->cfg.subscribe_channel)};
    /* Only fails out of memory; not dropped here, as this may run in hiredis' connect
     * callback, where the context must not be freed. */
    if (redisAsyncCommandArgv(c->ac, sub_reply_cb, c, 2, argv, lens) != REDIS_OK)
        set_error(tier, "redis SUBSCRIBE could not be sent");
}

static void handshake_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_conn *c = ac->data;
    redisReply *reply = r;
    const char *what = privdata;
    if (!c || ac != c->ac || !reply)
        return; /* torn down: the disconnect path handles it */
    pgw_redis_tier *tier = c->tier;
    enter(tier);
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Redis' AUTH/SELECT errors never repeat the password. */
        set_error(tier, "redis %s failed: %.100s", what, reply->str ? reply->str : "");
        conn_drop(c);
        conn_breaker_failure(c);
    } else if (--c->handshake_pending == 0) {
        conn_ready(c);
    }
    leave(tier);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redis_conn *c = ac->data;
    if (!c || ac != c->ac)
        return;
    pgw_redis_tier *tier = c->tier;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        set_error(tier, "redis connect to %s:%d failed: %.60s", tier->url.host, tier->url.port,
                  ac->errstr ? ac->errstr : "");
        c->ac = NULL;
        conn_failed(c);
        return;
    }
    redisEnableKeepAlive(&ac->c);
    /* AUTH and SELECT go first on the connection; commands are only sent once both succeeded. */
    c->handshake_pending = 0;
    if (tier->url.password[0]) {
        const char *argv[3];
        size_t lens[3];
        int argc = 0;
        argv[argc] = "AUTH";
        lens[argc++] = 4;
        if (tier->url.username[0]) {
            argv[argc] = tier->url.username;
            lens[argc++] = strlen(tier->url.username);
        }
        argv[argc] = tier->url.password;
        lens[argc++] = strlen(tier->url.password);
        if (redisAsyncCommandArgv(ac, handshake_cb, (void *)"AUTH", argc, argv, lens) == REDIS_OK)
            c->handshake_pending++;
    }
    if (tier->url.db) {
        if (redisAsyncCommand(ac, handshake_cb, (void *)"SELECT", "SELECT %d", tier->url.db) ==
            REDIS_OK)
            c->handshake_pending++;
    }
    if (c->handshake_pending == 0) {
        enter(tier);
        conn_ready(c);
        leave(tier);
    }
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redis_conn *c = ac->data;
    if (!c || ac != c->ac)
        return;
    pgw_redis_tier *tier = c->tier;
    /* hiredis frees the context after this returns. */
    enter(tier);
    set_error(tier, "redis connection lost: %.80s", ac->errstr ? ac->errstr : "closed");
    int was_ready = c->state == PGW_REDIS_CONN_READY;
    c->ac = NULL;
    c->state = PGW_REDIS_CONN_DISCONNECTED;
    evtimer_del(c->connect_timeout_ev);
    if (was_ready && !c->is_sub)
        tier->stats.disconnects++;
    if (status != REDIS_OK)
        conn_breaker_failure(c);
    set_subscribed(c, 0);
    schedule_reconnect(c);
    leave(tier);
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

static void connect_ip(redis_conn *c, const char *ip)
{
    pgw_redis_tier *tier = c->tier;
    redisAsyncContext *ac = redisAsyncConnect(ip, tier->url.port);
    if (!ac || ac->err) {
        set_error(tier, "redis connect to %s:%d failed: %.60s", tier->url.host, tier->url.port,
                  ac && ac->errstr ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        conn_failed(c);
        return;
    }
    ac->data = c;
    if (pgw_redis_reader_bound(ac->c.reader) != 0 ||
        redisLibeventAttach(ac, tier->base) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_failed(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = PGW_REDIS_CONN_CONNECTING;
    struct timeval tv = ms_to_tv(tier->cfg.connect_timeout_ms);
    evtimer_add(c->connect_timeout_ev, &tv);
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
        set_error(tier, "redis host %.100s: %s", tier->url.host,
                  result ? evutil_gai_strerror(result) : "no address");
        conn_failed(c);
    } else {
        connect_ip(c, ip);
    }
    leave(tier);
}

static void conn_start(redis_conn *c)
{
    pgw_redis_tier *tier = c->tier;
    if (c->ac || c->dns_req || tier->free_pending)
        return;
    unsigned char tmp[sizeof(struct in6_addr)];
    if (evutil_inet_pton(AF_INET, tier->url.host, tmp) == 1 ||
        evutil_inet_pton(AF_INET6, tier->url.host, tmp) == 1) {
        connect_ip(c, tier->url.host);
        return;
    }
    /* hiredis resolves names with blocking getaddrinfo(); resolve on the loop instead and give
     * it a numeric address. */
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    c->state = PGW_REDIS_CONN_RESOLVING;
    /* The callback may run before this returns (hosts file); dns_cb copes with that. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(tier->dns, tier->url.host, NULL, &hints, dns_cb, c);
    if (req && c->state == PGW_REDIS_CONN_RESOLVING && !c->ac)
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
    if (c->ac && c->state == PGW_REDIS_CONN_CONNECTING) {
        set_error(tier, "redis connect to %s:%d timed out", tier->url.host, tier->url.port);
        conn_drop(c);
        conn_breaker_failure(c);
    }
    leave(tier);
}

/* ---- subscriber ---------------------------------------------------------------------------- */

/* Is reply->element[i] a string equal to s (s_len bytes; case-insensitive)? */
static int elem_is(const redisReply *reply, size_t i, const char *s, size_t n)
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
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || !reply->element)
        return PGW_REDIS_SUB_OTHER;
    size_t cl = strlen(channel);
    if (elem_is(reply, 0, "subscribe", 9) && elem_is(reply, 1, channel, cl))
        return PGW_REDIS_SUB_SUBSCRIBED;
    const redisReply *p = reply->element[2];
    if (elem_is(reply, 0, "message", 7) && elem_is(reply, 1, channel, cl) && p &&
        p->type == REDIS_REPLY_STRING) {
        *payload = (const uint8_t *)p->str;
        *len = (size_t)p->len;
        return PGW_REDIS_SUB_MESSAGE;
    }
    return PGW_REDIS_SUB_OTHER;
}

static void sub_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    redis_conn *c = ac->data;
    if (!c || ac != c->ac || !reply)
        return; /* torn down */
    pgw_redis_tier *tier = c->tier;
    enter(tier);
    const uint8_t *payload;
    size_t len;
    switch (pgw_redis_sub_reply(reply, tier->cfg.subscribe_channel, &payload, &len)) {
    case PGW_REDIS_SUB_ERROR:
        /* e.g. NOPERM: the ACL user may not subscribe. */
        set_error(tier, "redis SUBSCRIBE failed: %.100s", reply->str ? reply->str : "");
        conn_drop(c);
        break;
    case PGW_REDIS_SUB_SUBSCRIBED:
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
    leave(tier);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static int conn_init(redis_conn *c, pgw_redis_tier *tier, int is_sub)
{
    c->tier = tier;
    c->is_sub = is_sub;
    c->state = PGW_REDIS_CONN_DISCONNECTED;
    c->backoff_ms = tier->cfg.reconnect_min_ms;
    c->reconnect_ev = evtimer_new(tier->base, reconnect_cb, c);
    c->connect_timeout_ev = evtimer_new(tier->base, connect_timeout_cb, c);
    return c->reconnect_ev && c->connect_timeout_ev ? 0 : -1;
}

static void conn_cleanup(redis_conn *c)
{
    if (c->dns_req) {
        struct evdns_getaddrinfo_request *dr = c->dns_req;
        c->dns_req = NULL;
        evdns_getaddrinfo_cancel(dr);
    }
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (c->reconnect_ev)
        event_free(c->reconnect_ev);
    if (c->connect_timeout_ev)
        event_free(c->connect_timeout_ev);
    c->reconnect_ev = c->connect_timeout_ev = NULL;
}

pgw_redis_tier *pgw_redis_tier_new(struct event_base *base, const pgw_redis_tier_config *cfg,
                                   char *err, size_t errlen)
{
    if (!base || !cfg) {
        if (err && errlen)
            snprintf(err, errlen, "--redis-url: no event loop or config");
        return NULL;
    }
    pgw_redis_tier *tier = calloc(1, sizeof *tier);
    if (!tier) {
        if (err && errlen)
            snprintf(err, errlen, "--redis-url: out of memory");
        return NULL;
    }
    if (pgw_redis_url_parse(cfg->url, &tier->url, err, errlen) != 0) {
        free(tier);
        return NULL;
    }
    tier->base = base;
    tier->cfg = *cfg;
    tier->cfg.url = NULL; /* parsed; the caller's string is not kept */
    tier->cfg.subscribe_channel = NULL;
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
    if (tier->cfg.max_value_bytes == 0)
        tier->cfg.max_value_bytes = defaults.max_value_bytes;
#undef PGW_DEFAULT_IF_UNSET
    if (tier->cfg.reconnect_max_ms < tier->cfg.reconnect_min_ms)
        tier->cfg.reconnect_max_ms = tier->cfg.reconnect_min_ms;
    if (tier->cfg.breaker_cooldown_max_ms < tier->cfg.breaker_cooldown_ms)
        tier->cfg.breaker_cooldown_max_ms = tier->cfg.breaker_cooldown_ms;
    tier->cooldown_ms = tier->cfg.breaker_cooldown_ms;

    int ok = 1;
    if (cfg->subscribe_channel) {
        tier->sub_channel = strdup(cfg->subscribe_channel);
        tier->cfg.subscribe_channel = tier->sub_channel;
        ok = tier->sub_channel != NULL && tier->sub_channel[0] != '\0';
    }
    ok = ok && conn_init(&tier->main, tier, 0) == 0;
    if (ok && tier->sub_channel)
        ok = conn_init(&tier->sub, tier, 1) == 0;
    tier->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!tier->dns) /* no resolv.conf: numeric hosts and /etc/hosts still work */
        tier->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!ok || !tier->dns) {
        if (err && errlen)
            snprintf(err, errlen, "--redis-url: cannot set up the event loop");
        tier->free_pending = 1;
        really_free(tier);
        return NULL;
    }
    evdns_base_load_hosts(tier->dns, NULL);
    conn_start(&tier->main);
    if (tier->sub_channel)
        conn_start(&tier->sub);
    return tier;
}

static void really_free(pgw_redis_tier *tier)
{
    /* Detach every queued command: hiredis still owns them and frees them via the callback. */
    for (redis_req *r = tier->reqs; r;) {
        redis_req *next = r->next;
        if (r->timer)
            event_free(r->timer);
        r->timer = NULL;
        r->tier = NULL;
        r->prev = r->next = NULL;
        r = next;
    }
    tier->reqs = NULL;
    conn_cleanup(&tier->main);
    conn_cleanup(&tier->sub);
    if (tier->dns)
        evdns_base_free(tier->dns, 0);
    memset(&tier->url, 0, sizeof tier->url); /* scrub the password */
    free(tier->sub_channel);
    free(tier);
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
    for (redis_req *r = tier->reqs; r; r = r->next) {
        r->get_cb = NULL;
        r->reply_cb = NULL;
    }
}

/* ---- commands ------------------------------------------------------------------------------ */

static void req_unlink(pgw_redis_tier *tier, redis_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (tier->reqs == r)
        tier->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Runs a GET's user callback unless the tier is being freed. */
static void answer(pgw_redis_tier *tier, pgw_redis_get_cb cb, void *ud, pgw_redis_result res,
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

/* Answers req (already unlinked and freed by the caller: only its copied fields are passed). */
static void answer_req(pgw_redis_tier *tier, const redis_req *req, const redisReply *reply)
{
    if (req->reply_cb) {
        if (reply && reply->type != REDIS_REPLY_ERROR)
            breaker_success(tier);
        else
            breaker_failure(tier);
        answer_reply(tier, req->reply_cb, req->user_data, reply);
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
    answer(tier, req->get_cb, req->user_data, res, value, len);
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
    /* NULL (connection gone), an error reply, or a type GET never returns. */
    return PGW_REDIS_ERROR;
}

static void req_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_req *req = privdata;
    pgw_redis_tier *tier = req->tier;
    if (!tier) {
        free(req);
        return;
    }
    req_unlink(tier, req);
    if (req->timer)
        event_free(req->timer);
    if (req->answered) { /* late reply after a timeout: ignored */
        free(req);
        return;
    }
    redis_req copy = *req;
    free(req);
    enter(tier);
    answer_req(tier, &copy, r);
    leave(tier);
}

static void req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_req *req = arg;
    pgw_redis_tier *tier = req->tier;
    event_free(req->timer);
    req->timer = NULL;
    req->answered = 1;
    redis_req copy = *req;
    /* req stays queued in hiredis; it may be freed by breaker_failure's teardown below, so it
     * is not touched after this point. */
    enter(tier);
    tier->stats.timeouts++;
    answer_req(tier, &copy, NULL);
    leave(tier);
}

/* Answers a command that was not sent, synchronously. */
static void reject(pgw_redis_tier *tier, pgw_redis_get_cb get_cb, pgw_redis_reply_cb reply_cb,
                   void *ud)
{
    tier->stats.rejected++;
    if (reply_cb)
        answer_reply(tier, reply_cb, ud, NULL);
    else
        answer(tier, get_cb, ud, PGW_REDIS_ERROR, NULL, 0);
}

/* The shared path of GET and command: breaker, queueing, timeout. */
static void send_req(pgw_redis_tier *tier, int argc, const char **argv, const size_t *lens,
                     pgw_redis_get_cb get_cb, pgw_redis_reply_cb reply_cb, void *user_data)
{
    int is_probe = 0;
    if (tier->main.state != PGW_REDIS_CONN_READY || !tier->main.ac) {
        /* Counting "no connection" as a failure lets the breaker open while Redis is down,
         * but not during the first connect or an attempt in progress. */
        if (tier->main.state == PGW_REDIS_CONN_DISCONNECTED &&
            tier->breaker == PGW_REDIS_BREAKER_CLOSED)
            breaker_failure(tier);
        reject(tier, get_cb, reply_cb, user_data);
        return;
    }
    if (!breaker_allow(tier, &is_probe)) {
        reject(tier, get_cb, reply_cb, user_data);
        return;
    }
    redis_req *req = calloc(1, sizeof *req);
    if (req)
        req->timer = evtimer_new(tier->base, req_timeout_cb, req);
    if (!req || !req->timer ||
        redisAsyncCommandArgv(tier->main.ac, req_reply_cb, req, argc, argv, lens) != REDIS_OK) {
        if (req && req->timer)
            event_free(req->timer);
        free(req);
        if (is_probe)
            tier->probe_in_flight = 0;
        reject(tier, get_cb, reply_cb, user_data);
        return;
    }
    req->tier = tier;
    req->get_cb = get_cb;
    req->reply_cb = reply_cb;
    req->user_data = user_data;
    req->is_probe = is_probe;
    req->next = tier->reqs;
    if (tier->reqs)
        tier->reqs->prev = req;
    tier->reqs = req;
    struct timeval tv = ms_to_tv(tier->cfg.command_timeout_ms);
    evtimer_add(req->timer, &tv);
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

/* Fire-and-forget replies: only counted. privdata points at the error counter to bump. */
static void count_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_conn *c = ac->data;
    redisReply *reply = r;
    if (!c)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        ++*(uint64_t *)privdata;
}

/* Queues a fire-and-forget command on the main connection. */
static int send_counted(pgw_redis_tier *tier, int argc, const char **argv, const size_t *lens,
                        uint64_t *errors)
{
    if (tier->main.state != PGW_REDIS_CONN_READY || !tier->main.ac ||
        tier->breaker != PGW_REDIS_BREAKER_CLOSED)
        return -1;
    return redisAsyncCommandArgv(tier->main.ac, count_reply_cb, errors, argc, argv, lens) ==
                   REDIS_OK
               ? 0
               : -1;
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
