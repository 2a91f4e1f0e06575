/* Redis tier over TLS and with ACL users, against real redis-server processes with --tls-port
 * and certificates made by the openssl CLI at test time: round trip and pub/sub through TLS
 * (by IP and by host name), an untrusted CA, the system store, a certificate for another
 * name, TLS to a plain port and plain to a TLS port, client certificates required, and an ACL
 * user whose password comes from a file re-read at every reconnect. Each failure must mean:
 * not ready, GET answered ERROR at once, the right failure counted and reported once per
 * attempt, and the password never in a message. Skips (77) without redis-server or openssl. */
#include <dirent.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cache/redis_tier.h"
#include "cache_test_redis.h"
#include "test_util.h"

static struct event_base *base;
static char dir[256];

static int wait_ready(pgw_redis_tier *tier, int ms)
{
    int64_t end = pgw_tr_now_ms() + ms;
    while (!pgw_redis_tier_is_ready(tier) && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    return pgw_redis_tier_is_ready(tier);
}

/* ---- PKI -------------------------------------------------------------------------------- */

/* ca, rogue (another CA), server (DNS:localhost, IP:127.0.0.1), other (DNS:other.example),
 * client (a client certificate signed by ca). EC P-256, one day. */
static int make_pki(void)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s';"
             "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout $1.key -out $1.pem -days 1 -subj /CN=$1 "
             "-addext basicConstraints=critical,CA:TRUE "
             "-addext keyUsage=critical,keyCertSign,cRLSign; };"
             "leaf() { printf 'basicConstraints=critical,CA:FALSE\\n"
             "keyUsage=critical,digitalSignature\\nsubjectAltName=%%s\\nextendedKeyUsage=%%s\\n' "
             "\"$3\" \"$4\" > $1.ext;"
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key "
             "-out $1.csr -subj /CN=$1;"
             "openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -out $1.pem "
             "-days 1 -extfile $1.ext; };"
             "ca ca; ca rogue;"
             "leaf server ca DNS:localhost,IP:127.0.0.1 serverAuth;"
             "leaf other ca DNS:other.example serverAuth;"
             "leaf client ca DNS:pgw-client clientAuth"
             ") >/dev/null 2>&1",
             dir);
    /* The subshell's closing parenthesis above needs its opening one. */
    char full[4200];
    snprintf(full, sizeof full, "(%s", cmd);
    return system(full) == 0 ? 0 : -1;
}

static const char *path_of(const char *name)
{
    static char buf[8][320];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
}

/* ---- callbacks -------------------------------------------------------------------------- */

typedef struct events {
    int count[5];
    char last[300];
} events;

static void on_event(pgw_redis_event ev, const char *detail, void *ud)
{
    events *e = ud;
    e->count[ev]++;
    snprintf(e->last, sizeof e->last, "%s", detail ? detail : "");
}

typedef struct get_state {
    int done, calls;
    pgw_redis_result result;
    char value[64];
    size_t len;
} get_state;

static void get_cb(pgw_redis_result result, const uint8_t *value, size_t len, void *ud)
{
    get_state *g = ud;
    g->calls++;
    g->done = 1;
    g->result = result;
    g->len = len;
    if (result == PGW_REDIS_HIT && len < sizeof g->value) {
        memcpy(g->value, value, len);
        g->value[len] = '\0';
    }
}

static get_state do_get(pgw_redis_tier *tier, const char *key)
{
    get_state g;
    memset(&g, 0, sizeof g);
    pgw_redis_tier_get(tier, key, get_cb, &g);
    pgw_tr_run_until(base, &g.done, 2000);
    return g;
}

typedef struct sub_state {
    int ups, messages;
    char last[64];
} sub_state;

static void on_message(const uint8_t *p, size_t len, void *ud)
{
    sub_state *s = ud;
    s->messages++;
    snprintf(s->last, sizeof s->last, "%.*s", (int)len, (const char *)p);
}

static void on_subscription(int up, void *ud)
{
    sub_state *s = ud;
    s->ups += up;
}

static pgw_redis_tier_config cfg_for(const char *url, events *ev)
{
    pgw_redis_tier_config c;
    pgw_redis_tier_config_defaults(&c);
    c.url = url;
    c.command_timeout_ms = 200; /* TLS under sanitizers is slow */
    c.connect_timeout_ms = 1000;
    c.reconnect_min_ms = 50;
    c.reconnect_max_ms = 200;
    c.breaker_cooldown_ms = 200;
    c.breaker_cooldown_max_ms = 400;
    c.on_event = on_event;
    c.event_ud = ev;
    return c;
}

/* A tier that must never become ready: the failure of `kind` is counted once per attempt, the
 * message names it, GETs answer ERROR synchronously and the breaker is open. */
static void expect_failure(pgw_redis_tier_config *cfg, events *ev, pgw_redis_event kind,
                           const char *needle, const char *secret)
{
    char err[256];
    pgw_redis_tier *tier = pgw_redis_tier_new(base, cfg, err, sizeof err);
    CHECK(tier != NULL);
    if (!tier) {
        fprintf(stderr, "  new: %s\n", err);
        return;
    }
    /* Until it has failed twice (it keeps retrying), bounded. */
    pgw_redis_tier_stats st;
    uint64_t n = 0;
    int64_t end = pgw_tr_now_ms() + 5000;
    do {
        pgw_tr_run_for(base, 20);
        pgw_redis_tier_stats_get(tier, &st);
        n = kind == PGW_REDIS_EVENT_TLS_FAILED    ? st.tls_failures
            : kind == PGW_REDIS_EVENT_AUTH_FAILED ? st.auth_failures
                                                  : st.connect_failures;
    } while (n < 2 && pgw_tr_now_ms() < end);
    CHECK(!pgw_redis_tier_is_ready(tier));
    CHECK(n >= 2); /* it kept retrying */
    CHECK((uint64_t)ev->count[kind] == n);
    CHECK(ev->count[PGW_REDIS_EVENT_CONNECTED] == 0 && st.connects == 0);
    /* TLS and AUTH failures open the breaker at once; others count toward it. */
    if (kind != PGW_REDIS_EVENT_CONNECT_FAILED)
        CHECK(st.breaker != PGW_REDIS_BREAKER_CLOSED && st.breaker_opens >= 1);
    const char *le = pgw_redis_tier_last_error(tier);
    CHECK(strstr(le, needle) != NULL);
    CHECK(strstr(ev->last, needle) != NULL);
    if (!strstr(le, needle))
        fprintf(stderr, "  last error: %s (wanted %s)\n", le, needle);
    if (secret)
        CHECK(strstr(le, secret) == NULL && strstr(ev->last, secret) == NULL);
    get_state g;
    memset(&g, 0, sizeof g);
    pgw_redis_tier_get(tier, "pgw:v1:bij:x", get_cb, &g);
    CHECK(g.calls == 1 && g.result == PGW_REDIS_ERROR); /* synchronous */
    pgw_redis_tier_free(tier);
}

static redisReply *admin(redisContext *rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    return r;
}

static void admin_ok(redisContext *rc, const char *fmt, const char *arg)
{
    redisReply *r = admin(rc, fmt, arg);
    CHECK(r && r->type != REDIS_REPLY_ERROR);
    if (r && r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "  admin: %s\n", r->str);
    if (r)
        freeReplyObject(r);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    chmod(path, 0600);
}

/* ---- the cases ---------------------------------------------------------------------------- */

static uint8_t big[300000];

typedef struct big_state {
    int done, same;
} big_state;

static void big_cb(pgw_redis_result result, const uint8_t *value, size_t len, void *ud)
{
    big_state *b = ud;
    b->done = 1;
    b->same = result == PGW_REDIS_HIT && len == sizeof big && memcmp(value, big, len) == 0;
}

static void test_tls_ok(int port, int tls_port)
{
    char url[128], err[256];
    events ev;
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", tls_port);
    pgw_redis_tier_config cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    if (!tier)
        return;
    CHECK(ev.count[PGW_REDIS_EVENT_CONNECTED] == 1 && strstr(ev.last, "TLS") != NULL);
    const char *key = "pgw:v1:bij:tls-rt";
    CHECK(pgw_redis_tier_set(tier, key, (const uint8_t *)"through-tls", 11, 60000) == 0);
    get_state g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_HIT && strcmp(g.value, "through-tls") == 0);
    /* It really is in that server (read over its plain port). */
    redisContext *rc = pgw_tr_connect(port, NULL, 0);
    CHECK(rc != NULL);
    if (rc) {
        redisReply *r = admin(rc, "GET %s", key);
        CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "through-tls") == 0);
        if (r)
            freeReplyObject(r);
        /* Every client of ours is on the TLS port: redis lists them with their laddr. */
        r = admin(rc, "CLIENT LIST TYPE normal");
        char laddr[64];
        snprintf(laddr, sizeof laddr, "laddr=127.0.0.1:%d", tls_port);
        CHECK(r && r->type == REDIS_REPLY_STRING && strstr(r->str, laddr) != NULL);
        if (r)
            freeReplyObject(r);
        redisFree(rc);
    }

    /* A large value crosses many TLS records intact. */
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    CHECK(pgw_redis_tier_set(tier, "pgw:v1:bij:big", big, sizeof big, 60000) == 0);
    big_state bs;
    memset(&bs, 0, sizeof bs);
    pgw_redis_tier_get(tier, "pgw:v1:bij:big", big_cb, &bs);
    pgw_tr_run_until(base, &bs.done, 3000);
    CHECK(bs.done && bs.same);

    /* Pub/sub through TLS, from another tier (another replica). */
    sub_state s;
    memset(&s, 0, sizeof s);
    events ev2;
    memset(&ev2, 0, sizeof ev2);
    snprintf(url, sizeof url, "rediss://localhost:%d", tls_port); /* by name: SNI, DNS SAN */
    pgw_redis_tier_config scfg = cfg_for(url, &ev2);
    scfg.ca_file = path_of("ca.pem");
    scfg.subscribe_channel = PGW_REDIS_FILL_CHANNEL;
    scfg.on_message = on_message;
    scfg.on_subscription = on_subscription;
    scfg.message_ud = &s;
    pgw_redis_tier *sub = pgw_redis_tier_new(base, &scfg, err, sizeof err);
    CHECK(sub && wait_ready(sub, 3000));
    int64_t end = pgw_tr_now_ms() + 3000;
    while (s.ups < 1 && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    CHECK(s.ups == 1);
    g = do_get(sub, key);
    CHECK(g.result == PGW_REDIS_HIT && strcmp(g.value, "through-tls") == 0);
    CHECK(pgw_redis_tier_publish(tier, PGW_REDIS_FILL_CHANNEL, (const uint8_t *)"filled", 6) == 0);
    end = pgw_tr_now_ms() + 2000;
    while (s.messages < 1 && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    CHECK(s.messages == 1 && strcmp(s.last, "filled") == 0);
    pgw_redis_tier_stats st;
    pgw_redis_tier_stats_get(sub, &st);
    CHECK(st.tls_failures == 0 && st.connect_failures == 0 && st.auth_failures == 0);
    CHECK(ev2.count[PGW_REDIS_EVENT_CONNECTED] == 2); /* main + subscriber */
    pgw_redis_tier_free(sub);
    pgw_redis_tier_free(tier);
}

static void test_tls_failures(int port, int tls_port, int other_tls_port)
{
    char url[128];
    events ev;

    /* A CA that did not sign the server's certificate. */
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", tls_port);
    pgw_redis_tier_config cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("rogue.pem");
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_TLS_FAILED, "certificate verify failed", NULL);

    /* The system store does not know our test CA either. */
    memset(&ev, 0, sizeof ev);
    cfg = cfg_for(url, &ev);
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_TLS_FAILED, "certificate verify failed", NULL);

    /* A valid certificate (our CA) for another name: by address, then by host name. */
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", other_tls_port);
    cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_TLS_FAILED, "IP address mismatch", NULL);
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://localhost:%d", other_tls_port);
    cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_TLS_FAILED, "hostname mismatch", NULL);

    /* TLS to the plain port: Redis reads the ClientHello as an inline command and waits for
     * its end, so the handshake times out. */
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://127.0.0.1:%d", port);
    cfg = cfg_for(url, &ev);
    cfg.connect_timeout_ms = 300;
    cfg.ca_file = path_of("ca.pem");
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_TLS_FAILED, "TLS handshake", NULL);

    /* Plain text to the TLS port: the server hangs up on the handshake. */
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", tls_port);
    cfg = cfg_for(url, &ev);
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_CONNECT_FAILED, "handshake", NULL);
}

static void test_client_certificates(int tls_port)
{
    char url[128], err[256];
    events ev;
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://localhost:%d", tls_port);
    pgw_redis_tier_config cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    /* Without one: refused (TLS 1.3 tells us after our side of the handshake). */
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_TLS_FAILED, "TLS", NULL);

    memset(&ev, 0, sizeof ev);
    cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    cfg.cert_file = path_of("client.pem");
    cfg.key_file = path_of("client.key");
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    if (tier) {
        CHECK(pgw_redis_tier_set(tier, "pgw:v1:bij:mtls", (const uint8_t *)"m", 1, 5000) == 0);
        get_state g = do_get(tier, "pgw:v1:bij:mtls");
        CHECK(g.result == PGW_REDIS_HIT && strcmp(g.value, "m") == 0);
        pgw_redis_tier_stats st;
        pgw_redis_tier_stats_get(tier, &st);
        CHECK(st.tls_failures == 0);
    }
    pgw_redis_tier_free(tier);

    /* A key that is not the certificate's: a startup error naming the flag. */
    cfg.key_file = path_of("server.key");
    CHECK(pgw_redis_tier_new(base, &cfg, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-key") != NULL);
}

/* An ACL user with the minimum the gateway needs (README "Running a fleet"), its password in a
 * file that is re-read at every reconnect. */
static void test_acl_and_password_file(int port, int tls_port)
{
    const char *pw1 = "first-Secret-4c1e";
    const char *pw2 = "second-Secret-9a7d";
    char url[128], err[256];
    redisContext *rc = pgw_tr_connect(port, NULL, 0);
    CHECK(rc != NULL);
    if (!rc)
        return;
    admin_ok(rc,
             "ACL SETUSER %s reset on ~pgw:* &pgw:* +get +set +del +pttl +pexpire +publish "
             "+subscribe +unsubscribe +ping +select",
             "pgw-user");
    admin_ok(rc, "ACL SETUSER pgw-user >%s", pw1);
    const char *pwfile = path_of("redis-password");
    char text[64];
    snprintf(text, sizeof text, "%s\n", pw1); /* as `kubectl create secret` often leaves it */
    write_file(pwfile, text);

    events ev;
    memset(&ev, 0, sizeof ev);
    sub_state s;
    memset(&s, 0, sizeof s);
    snprintf(url, sizeof url, "rediss://pgw-user@localhost:%d/0", tls_port);
    pgw_redis_tier_config cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    cfg.password_file = pwfile;
    cfg.subscribe_channel = PGW_REDIS_FILL_CHANNEL;
    cfg.on_message = on_message;
    cfg.on_subscription = on_subscription;
    cfg.message_ud = &s;
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    if (!tier) {
        redisFree(rc);
        return;
    }
    int64_t end = pgw_tr_now_ms() + 3000;
    while (s.ups < 1 && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    CHECK(s.ups == 1);
    CHECK(pgw_redis_tier_set(tier, "pgw:v1:bij:acl", (const uint8_t *)"ok", 2, 60000) == 0);
    get_state g = do_get(tier, "pgw:v1:bij:acl");
    CHECK(g.result == PGW_REDIS_HIT && strcmp(g.value, "ok") == 0);
    CHECK(pgw_redis_tier_publish(tier, PGW_REDIS_FILL_CHANNEL, (const uint8_t *)"p", 1) == 0);
    end = pgw_tr_now_ms() + 2000;
    while (s.messages < 1 && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    CHECK(s.messages == 1);
    /* The ACL does restrict: another key prefix is refused. */
    g = do_get(tier, "elsewhere:key");
    CHECK(g.result == PGW_REDIS_ERROR);
    pgw_redis_tier_stats st;
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.set_errors == 0 && st.publish_errors == 0 && st.auth_failures == 0);

    /* Rotate: new password in the file and on the server, connections killed; both come
     * back with the new one. */
    admin_ok(rc, "ACL SETUSER pgw-user resetpass >%s", pw2);
    snprintf(text, sizeof text, "%s\r\n", pw2);
    write_file(pwfile, text);
    redisReply *r = admin(rc, "CLIENT KILL USER %s", "pgw-user");
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 2);
    if (r)
        freeReplyObject(r);
    end = pgw_tr_now_ms() + 5000;
    while ((st.connects < 2 || s.ups < 2) && pgw_tr_now_ms() < end) {
        pgw_tr_run_for(base, 20);
        pgw_redis_tier_stats_get(tier, &st);
    }
    CHECK(st.connects == 2 && s.ups == 2 && st.auth_failures == 0);
    g = do_get(tier, "pgw:v1:bij:acl");
    if (g.result != PGW_REDIS_HIT) { /* the first GET after the drop may find the breaker open */
        pgw_tr_run_for(base, 500);
        g = do_get(tier, "pgw:v1:bij:acl");
    }
    CHECK(g.result == PGW_REDIS_HIT);

    /* A wrong password in the file: AUTH failures, counted once per attempt, no secret in the
     * messages, GETs fall through at once. */
    write_file(pwfile, "not-the-password\n");
    r = admin(rc, "CLIENT KILL USER %s", "pgw-user");
    if (r)
        freeReplyObject(r);
    pgw_tr_run_for(base, 800);
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(!pgw_redis_tier_is_ready(tier));
    CHECK(st.auth_failures >= 2 &&
          (uint64_t)ev.count[PGW_REDIS_EVENT_AUTH_FAILED] == st.auth_failures);
    CHECK(strstr(pgw_redis_tier_last_error(tier), "WRONGPASS") != NULL);
    CHECK(strstr(pgw_redis_tier_last_error(tier), "not-the-password") == NULL);
    CHECK(strstr(ev.last, "not-the-password") == NULL && strstr(ev.last, pw2) == NULL);
    memset(&g, 0, sizeof g);
    pgw_redis_tier_get(tier, "pgw:v1:bij:acl", get_cb, &g);
    CHECK(g.calls == 1 && g.result == PGW_REDIS_ERROR);

    /* An unreadable file at reconnect: an AUTH failure that says so. */
    unlink(pwfile);
    pgw_tr_run_for(base, 500);
    CHECK(strstr(pgw_redis_tier_last_error(tier), "--redis-password-file") != NULL);
    /* And back: the next attempt reads the right password again. */
    snprintf(text, sizeof text, "%s", pw2); /* no newline this time */
    write_file(pwfile, text);
    CHECK(wait_ready(tier, 3000));
    pgw_redis_tier_free(tier);

    /* The URL's password wins over the file; ACL user in the URL. */
    memset(&ev, 0, sizeof ev);
    snprintf(url, sizeof url, "rediss://pgw-user:%s@127.0.0.1:%d", pw2, tls_port);
    cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    write_file(pwfile, "wrong\n");
    cfg.password_file = pwfile;
    tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    pgw_redis_tier_free(tier);

    /* A user lacking +ping (an ACL below the minimum) is told apart from a wrong password. */
    admin_ok(rc, "ACL SETUSER pgw-user -ping", NULL);
    memset(&ev, 0, sizeof ev);
    cfg = cfg_for(url, &ev);
    cfg.ca_file = path_of("ca.pem");
    expect_failure(&cfg, &ev, PGW_REDIS_EVENT_AUTH_FAILED, "NOPERM", pw2);
    redisFree(rc);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Failed attempts at every stage leave no socket behind. */
static void test_no_fd_leak(int port, int tls_port)
{
    char url[128], err[256];
    events ev;
    int before = open_fds();
    const int ports[3] = {pgw_tr_free_port(), port, tls_port}; /* refused, TLS to plain, ok */
    const char *cas[3] = {"ca.pem", "ca.pem", "rogue.pem"};
    for (int i = 0; i < 3; i++) {
        memset(&ev, 0, sizeof ev);
        snprintf(url, sizeof url, "rediss://127.0.0.1:%d", ports[i]);
        pgw_redis_tier_config cfg = cfg_for(url, &ev);
        cfg.connect_timeout_ms = 100;
        cfg.ca_file = path_of(cas[i]);
        pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
        CHECK(tier != NULL);
        pgw_tr_run_for(base, 700);
        pgw_redis_tier_stats st;
        if (tier) {
            pgw_redis_tier_stats_get(tier, &st);
            CHECK(st.connect_failures + st.tls_failures >= 3);
        }
        pgw_redis_tier_free(tier);
    }
    pgw_tr_run_for(base, 50);
    CHECK(open_fds() == before);
    if (open_fds() != before)
        fprintf(stderr, "  fds: %d before, %d after\n", before, open_fds());
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/pgw-redis-tls-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    if (make_pki() != 0) {
        printf("test_cache_redis_tls: SKIP: openssl could not make the test certificates\n");
        return 77;
    }
    int port = pgw_tr_free_port(), tls_port = pgw_tr_free_port();
    pid_t a = pgw_tr_start_tls(port, tls_port, dir, "server", 0);
    if (a == 0) {
        printf("test_cache_redis_tls: SKIP: redis-server is not installed\n");
        return 77;
    }
    CHECK(a > 0);
    int port_b = pgw_tr_free_port(), tls_b = pgw_tr_free_port();
    pid_t b = pgw_tr_start_tls(port_b, tls_b, dir, "other", 0);
    int port_c = pgw_tr_free_port(), tls_c = pgw_tr_free_port();
    pid_t c = pgw_tr_start_tls(port_c, tls_c, dir, "server", 1);
    CHECK(b > 0 && c > 0);
    base = event_base_new();
    if (a > 0 && b > 0 && c > 0) {
        test_tls_ok(port, tls_port);
        test_tls_failures(port, tls_port, tls_b);
        test_client_certificates(tls_c);
        test_acl_and_password_file(port, tls_port);
        test_no_fd_leak(port, tls_port);
    }
    pgw_tr_signal(a, SIGKILL);
    pgw_tr_signal(b, SIGKILL);
    pgw_tr_signal(c, SIGKILL);
    event_base_free(base);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
    if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return pgw_test_finish("test_cache_redis_tls");
}
