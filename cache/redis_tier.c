/* Redis tier over hiredis' async API; see redis_tier.h.
 *
 * Lifetimes, which hiredis makes subtle:
 * - Every GET is a `redis_req` handed to hiredis as privdata. hiredis calls our reply callback
 *   exactly once per queued command: with the reply, or with NULL when the context is torn down
 *   (disconnect, redisAsyncFree). That callback is the only place a req is freed once queued,
 *   so a req that timed out stays allocated (answered, callback cleared) until then.
 * - A req points at its tier; pgw_redis_tier_free() sets that pointer to NULL on every pending
 *   req, and sets ac->data to NULL, so callbacks that hiredis runs later touch nothing freed.
 * - hiredis defers redisAsyncFree() called from inside its own reply callbacks until the
 *   callback returns; it must never be called from inside the connect callback (hiredis keeps
 *   using the context after it), which this file never does.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct redis_req {
    struct redis_req *prev, *next;
    pgw_redis_tier *tier; /* NULL once the tier is gone: the callback then only frees */
    struct event *timer;  /* NULL once fired or cancelled */
    pgw_redis_get_cb cb;
    void *user_data;
    int answered;
    int is_probe;
} redis_req;

struct pgw_redis_tier {
    struct event_base *base;
    pgw_redis_tier_config cfg;
    pgw_redis_url url;

    struct evdns_base *dns;
    struct evdns_getaddrinfo_request *dns_req;
    redisAsyncContext *ac;
    pgw_redis_conn_state conn;
    int handshake_pending;
    struct event *reconnect_ev;
    struct event *connect_timeout_ev;
    int backoff_ms;

    pgw_redis_breaker_state breaker;
    int consecutive_failures;
    int64_t open_until_ms;
    int cooldown_ms; /* the next open period */
    int probe_in_flight;

    redis_req *reqs; /* queued GETs, answered or not */
    int depth;
    int free_pending;
    pgw_redis_tier_stats stats;
    char last_error[160];
};

static void start_connect(pgw_redis_tier *tier);
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

static void drop_connection(pgw_redis_tier *tier);

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
     * start over with a fresh one. Pending GETs are answered ERROR by the teardown. */
    drop_connection(tier);
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

/* Whether a GET may be sent now; *is_probe is set when it is the half-open probe. */
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

/* ---- connection ------------------------------------------------------------------------ */

static void schedule_reconnect(pgw_redis_tier *tier)
{
    if (tier->free_pending)
        return;
    struct timeval tv = ms_to_tv(tier->backoff_ms);
    evtimer_add(tier->reconnect_ev, &tv);
    tier->backoff_ms = tier->backoff_ms > tier->cfg.reconnect_max_ms / 2
                           ? tier->cfg.reconnect_max_ms
                           : tier->backoff_ms * 2;
}

/* Closes the current context (if any) and plans the next attempt. Pending GETs are answered
 * ERROR by hiredis' teardown, now or, inside a hiredis callback, right after it returns. */
static void drop_connection(pgw_redis_tier *tier)
{
    redisAsyncContext *ac = tier->ac;
    int was_ready = tier->conn == PGW_REDIS_CONN_READY;
    evtimer_del(tier->connect_timeout_ev);
    if (!ac)
        return;
    tier->ac = NULL;
    tier->conn = PGW_REDIS_CONN_DISCONNECTED;
    tier->handshake_pending = 0;
    if (was_ready)
        tier->stats.disconnects++;
    ac->data = NULL;
    redisAsyncFree(ac);
    schedule_reconnect(tier);
}

/* A connection attempt failed before becoming ready. */
static void connect_failed(pgw_redis_tier *tier)
{
    tier->conn = PGW_REDIS_CONN_DISCONNECTED;
    evtimer_del(tier->connect_timeout_ev);
    if (tier->breaker == PGW_REDIS_BREAKER_CLOSED)
        breaker_failure(tier);
    schedule_reconnect(tier);
}

static void became_ready(pgw_redis_tier *tier)
{
    tier->conn = PGW_REDIS_CONN_READY;
    tier->backoff_ms = tier->cfg.reconnect_min_ms;
    tier->stats.connects++;
    tier->last_error[0] = '\0';
    evtimer_del(tier->connect_timeout_ev);
}

static void handshake_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    pgw_redis_tier *tier = ac->data;
    redisReply *reply = r;
    const char *what = privdata;
    if (!tier || ac != tier->ac || !reply)
        return; /* torn down: the disconnect path handles it */
    enter(tier);
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Redis' AUTH/SELECT errors never repeat the password. */
        set_error(tier, "redis %s failed: %.100s", what, reply->str ? reply->str : "");
        drop_connection(tier);
        if (tier->breaker == PGW_REDIS_BREAKER_CLOSED)
            breaker_failure(tier);
    } else if (--tier->handshake_pending == 0) {
        became_ready(tier);
    }
    leave(tier);
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    pgw_redis_tier *tier = ac->data;
    if (!tier || ac != tier->ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        set_error(tier, "redis connect to %s:%d failed: %.60s", tier->url.host, tier->url.port,
                  ac->errstr ? ac->errstr : "");
        tier->ac = NULL;
        connect_failed(tier);
        return;
    }
    redisEnableKeepAlive(&ac->c);
    /* AUTH and SELECT go first on the connection; GETs are only sent once both succeeded. */
    tier->handshake_pending = 0;
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
            tier->handshake_pending++;
    }
    if (tier->url.db) {
        if (redisAsyncCommand(ac, handshake_cb, (void *)"SELECT", "SELECT %d", tier->url.db) ==
            REDIS_OK)
            tier->handshake_pending++;
    }
    if (tier->handshake_pending == 0)
        became_ready(tier);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    pgw_redis_tier *tier = ac->data;
    if (!tier || ac != tier->ac)
        return;
    /* hiredis frees the context after this returns. */
    enter(tier);
    set_error(tier, "redis connection lost: %.80s", ac->errstr ? ac->errstr : "closed");
    int was_ready = tier->conn == PGW_REDIS_CONN_READY;
    tier->ac = NULL;
    tier->conn = PGW_REDIS_CONN_DISCONNECTED;
    evtimer_del(tier->connect_timeout_ev);
    if (was_ready)
        tier->stats.disconnects++;
    if (tier->breaker == PGW_REDIS_BREAKER_CLOSED && status != REDIS_OK)
        breaker_failure(tier);
    schedule_reconnect(tier);
    leave(tier);
}

static void connect_ip(pgw_redis_tier *tier, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, tier->url.port);
    if (!ac || ac->err) {
        set_error(tier, "redis connect to %s:%d failed: %.60s", tier->url.host, tier->url.port,
                  ac && ac->errstr ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        connect_failed(tier);
        return;
    }
    ac->data = tier;
    if (redisLibeventAttach(ac, tier->base) != REDIS_OK) {
        redisAsyncFree(ac);
        connect_failed(tier);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    tier->ac = ac;
    tier->conn = PGW_REDIS_CONN_CONNECTING;
    struct timeval tv = ms_to_tv(tier->cfg.connect_timeout_ms);
    evtimer_add(tier->connect_timeout_ev, &tv);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    if (result == EVUTIL_EAI_CANCEL) {
        /* Cancelled by pgw_redis_tier_free: the tier may be half gone. */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    pgw_redis_tier *tier = arg;
    char ip[INET6_ADDRSTRLEN] = "";
    tier->dns_req = NULL;
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
        connect_failed(tier);
    } else {
        connect_ip(tier, ip);
    }
    leave(tier);
}

static void start_connect(pgw_redis_tier *tier)
{
    if (tier->ac || tier->dns_req || tier->free_pending)
        return;
    unsigned char tmp[sizeof(struct in6_addr)];
    if (evutil_inet_pton(AF_INET, tier->url.host, tmp) == 1 ||
        evutil_inet_pton(AF_INET6, tier->url.host, tmp) == 1) {
        connect_ip(tier, tier->url.host);
        return;
    }
    /* hiredis resolves names with blocking getaddrinfo(); resolve on the loop instead and give
     * it a numeric address. */
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    tier->conn = PGW_REDIS_CONN_RESOLVING;
    /* The callback may run before this returns (hosts file); dns_cb copes with that. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(tier->dns, tier->url.host, NULL, &hints, dns_cb, tier);
    if (req && tier->conn == PGW_REDIS_CONN_RESOLVING && !tier->ac)
        tier->dns_req = req;
}

static void reconnect_cb(evutil_socket_t fd, short what, void *arg)
{
    pgw_redis_tier *tier = arg;
    enter(tier);
    start_connect(tier);
    leave(tier);
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    pgw_redis_tier *tier = arg;
    enter(tier);
    if (tier->ac && tier->conn == PGW_REDIS_CONN_CONNECTING) {
        set_error(tier, "redis connect to %s:%d timed out", tier->url.host, tier->url.port);
        drop_connection(tier);
        if (tier->breaker == PGW_REDIS_BREAKER_CLOSED)
            breaker_failure(tier);
    }
    leave(tier);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

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
    tier->backoff_ms = tier->cfg.reconnect_min_ms;
    tier->cooldown_ms = tier->cfg.breaker_cooldown_ms;

    tier->reconnect_ev = evtimer_new(base, reconnect_cb, tier);
    tier->connect_timeout_ev = evtimer_new(base, connect_timeout_cb, tier);
    tier->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!tier->dns) /* no resolv.conf: numeric hosts and /etc/hosts still work */
        tier->dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!tier->reconnect_ev || !tier->connect_timeout_ev || !tier->dns) {
        if (err && errlen)
            snprintf(err, errlen, "--redis-url: cannot set up the event loop");
        tier->free_pending = 1;
        really_free(tier);
        return NULL;
    }
    if (tier->dns)
        evdns_base_load_hosts(tier->dns, NULL);
    start_connect(tier);
    return tier;
}

static void really_free(pgw_redis_tier *tier)
{
    /* Detach every queued GET: hiredis still owns them and frees them via the callback. */
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
    if (tier->dns_req) {
        struct evdns_getaddrinfo_request *dr = tier->dns_req;
        tier->dns_req = NULL;
        evdns_getaddrinfo_cancel(dr);
    }
    if (tier->ac) {
        redisAsyncContext *ac = tier->ac;
        tier->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (tier->reconnect_ev)
        event_free(tier->reconnect_ev);
    if (tier->connect_timeout_ev)
        event_free(tier->connect_timeout_ev);
    if (tier->dns)
        evdns_base_free(tier->dns, 0);
    memset(&tier->url, 0, sizeof tier->url); /* scrub the password */
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
    for (redis_req *r = tier->reqs; r; r = r->next)
        r->cb = NULL;
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

/* Runs a user callback unless the tier is being freed. */
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

static void get_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redis_req *req = privdata;
    redisReply *reply = r;
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
    pgw_redis_get_cb cb = req->cb;
    void *ud = req->user_data;
    free(req);

    enter(tier);
    if (reply && reply->type == REDIS_REPLY_STRING) {
        breaker_success(tier);
        if ((size_t)reply->len > tier->cfg.max_value_bytes) {
            tier->stats.oversize++;
            answer(tier, cb, ud, PGW_REDIS_MISS, NULL, 0);
        } else {
            answer(tier, cb, ud, PGW_REDIS_HIT, (const uint8_t *)reply->str, (size_t)reply->len);
        }
    } else if (reply && reply->type == REDIS_REPLY_NIL) {
        breaker_success(tier);
        answer(tier, cb, ud, PGW_REDIS_MISS, NULL, 0);
    } else {
        /* NULL (connection gone), an error reply, or a type GET never returns. */
        breaker_failure(tier);
        answer(tier, cb, ud, PGW_REDIS_ERROR, NULL, 0);
    }
    leave(tier);
}

static void get_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    redis_req *req = arg;
    pgw_redis_tier *tier = req->tier;
    event_free(req->timer);
    req->timer = NULL;
    req->answered = 1;
    pgw_redis_get_cb cb = req->cb;
    void *ud = req->user_data;
    /* req stays queued in hiredis; it may be freed by breaker_failure's teardown below, so it
     * is not touched after this point. */
    enter(tier);
    tier->stats.timeouts++;
    breaker_failure(tier);
    answer(tier, cb, ud, PGW_REDIS_ERROR, NULL, 0);
    leave(tier);
}

void pgw_redis_tier_get(pgw_redis_tier *tier, const char *key, pgw_redis_get_cb cb, void *user_data)
{
    if (!tier || !key || tier->free_pending) {
        return;
    }
    enter(tier);
    tier->stats.gets++;
    int is_probe = 0;
    if (tier->conn != PGW_REDIS_CONN_READY || !tier->ac) {
        /* Counting "no connection" as a failure lets the breaker open while Redis is down,
         * but not during the first connect or an attempt in progress. */
        if (tier->conn == PGW_REDIS_CONN_DISCONNECTED && tier->breaker == PGW_REDIS_BREAKER_CLOSED)
            breaker_failure(tier);
        tier->stats.rejected++;
        answer(tier, cb, user_data, PGW_REDIS_ERROR, NULL, 0);
        goto out;
    }
    if (!breaker_allow(tier, &is_probe)) {
        tier->stats.rejected++;
        answer(tier, cb, user_data, PGW_REDIS_ERROR, NULL, 0);
        goto out;
    }
    redis_req *req = calloc(1, sizeof *req);
    if (req)
        req->timer = evtimer_new(tier->base, get_timeout_cb, req);
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, strlen(key)};
    if (!req || !req->timer ||
        redisAsyncCommandArgv(tier->ac, get_reply_cb, req, 2, argv, lens) != REDIS_OK) {
        if (req && req->timer)
            event_free(req->timer);
        free(req);
        if (is_probe)
            tier->probe_in_flight = 0;
        tier->stats.rejected++;
        answer(tier, cb, user_data, PGW_REDIS_ERROR, NULL, 0);
        goto out;
    }
    req->tier = tier;
    req->cb = cb;
    req->user_data = user_data;
    req->is_probe = is_probe;
    req->next = tier->reqs;
    if (tier->reqs)
        tier->reqs->prev = req;
    tier->reqs = req;
    struct timeval tv = ms_to_tv(tier->cfg.command_timeout_ms);
    evtimer_add(req->timer, &tv);
out:
    leave(tier);
}

static void set_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    pgw_redis_tier *tier = ac->data;
    redisReply *reply = r;
    if (!tier)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        tier->stats.set_errors++;
}

int pgw_redis_tier_set(pgw_redis_tier *tier, const char *key, const uint8_t *value, size_t len,
                       int64_t ttl_ms)
{
    if (!tier || !key || (len && !value) || ttl_ms <= 0 || tier->free_pending)
        return -1;
    if (tier->conn != PGW_REDIS_CONN_READY || !tier->ac ||
        tier->breaker != PGW_REDIS_BREAKER_CLOSED) {
        tier->stats.set_skipped++;
        return -1;
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%" PRId64, ttl_ms);
    const char *argv[5] = {"SET", key, value ? (const char *)value : "", "PX", ttl};
    size_t lens[5] = {3, strlen(key), len, 2, strlen(ttl)};
    if (redisAsyncCommandArgv(tier->ac, set_reply_cb, NULL, 5, argv, lens) != REDIS_OK) {
        tier->stats.set_skipped++;
        return -1;
    }
    tier->stats.sets++;
    return 0;
}

void pgw_redis_tier_stats_get(const pgw_redis_tier *tier, pgw_redis_tier_stats *out)
{
    *out = tier->stats;
    out->breaker = tier->breaker;
    /* Report an open breaker whose cool-down is over as half-open: the next GET probes. */
    if (out->breaker == PGW_REDIS_BREAKER_OPEN && mono_ms() >= tier->open_until_ms)
        out->breaker = PGW_REDIS_BREAKER_HALF_OPEN;
    out->conn = tier->conn;
}

int pgw_redis_tier_is_ready(const pgw_redis_tier *tier)
{
    return tier && tier->conn == PGW_REDIS_CONN_READY;
}

const char *pgw_redis_tier_last_error(const pgw_redis_tier *tier)
{
    return tier ? tier->last_error : "";
}
