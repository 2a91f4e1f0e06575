/* Redis tier against real redis-server processes this test starts on loopback: URL parsing,
 * GET/SET round trip with PTTL, miss, AUTH + SELECT (plain and ACL-style URLs), a corrupted
 * value, timeouts with a stopped server, crash -> breaker opens -> restart -> reconnect, and
 * freeing with commands in flight; generic commands (replies, error replies, NULL on timeout
 * and when not sent) and pub/sub (subscribe, publish, re-subscribe after the subscriber is
 * killed, with AUTH + SELECT). Skips (77) when redis-server is not installed. */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache/entry.h"
#include "cache/redis_tier.h"
#include "cache_test_redis.h"
#include "test_util.h"

static struct event_base *base;

typedef struct get_state {
    int done;
    int calls;
    pgw_redis_result result;
    uint8_t value[512];
    size_t len;
    int64_t answered_at;
    pgw_redis_tier **free_me; /* set: free the tier from inside the callback */
} get_state;

static void get_cb(pgw_redis_result result, const uint8_t *value, size_t len, void *ud)
{
    get_state *g = ud;
    g->calls++;
    g->done = 1;
    g->result = result;
    g->answered_at = pgw_tr_now_ms();
    g->len = len;
    if (result == PGW_REDIS_HIT && len <= sizeof g->value)
        memcpy(g->value, value, len);
    if (g->free_me) {
        pgw_redis_tier_free(*g->free_me);
        *g->free_me = NULL;
    }
}

/* One GET, run to its answer (bounded), returning the state. */
static get_state do_get(pgw_redis_tier *tier, const char *key)
{
    get_state g;
    memset(&g, 0, sizeof g);
    pgw_redis_tier_get(tier, key, get_cb, &g);
    pgw_tr_run_until(base, &g.done, 2000);
    return g;
}

static pgw_redis_tier_config test_config(const char *url)
{
    pgw_redis_tier_config c;
    pgw_redis_tier_config_defaults(&c);
    c.url = url;
    c.command_timeout_ms = 100; /* sanitizer builds are slow; the default is 50 */
    c.connect_timeout_ms = 500;
    c.reconnect_min_ms = 20;
    c.reconnect_max_ms = 100;
    c.breaker_failures = 5;
    c.breaker_cooldown_ms = 300;
    c.breaker_cooldown_max_ms = 600;
    return c;
}

static void test_url_parsing(void)
{
    pgw_redis_url u;
    char err[256];
    CHECK(pgw_redis_url_parse("redis://127.0.0.1:6380/3", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK(u.port == 6380 && u.db == 3 && !u.password[0] && !u.username[0]);
    CHECK(pgw_redis_url_parse("redis://cache.internal", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "cache.internal");
    CHECK(u.port == 6379 && u.db == 0);
    CHECK(pgw_redis_url_parse("redis://:p%40ss:w0rd@localhost:1/15", &u, err, sizeof err) == 0);
    CHECK_STR(u.password, "p@ss:w0rd");
    CHECK(!u.username[0] && u.port == 1 && u.db == 15);
    CHECK(pgw_redis_url_parse("redis://app:s3cret@[::1]:7000/0", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "::1");
    CHECK_STR(u.username, "app");
    CHECK_STR(u.password, "s3cret");
    CHECK(u.port == 7000);
    CHECK(pgw_redis_url_parse("REDIS://h:65535/", &u, err, sizeof err) == 0 && u.port == 65535);
    CHECK(!u.tls);
    CHECK(pgw_redis_url_parse("rediss://pgw-user:pw@cache.example:6380/0", &u, err, sizeof err) ==
          0);
    CHECK(u.tls && u.port == 6380);
    CHECK_STR(u.username, "pgw-user");
    /* A user without a password parses (the password may come from a file)... */
    CHECK(pgw_redis_url_parse("rediss://pgw-user@cache.example", &u, err, sizeof err) == 0);
    CHECK_STR(u.username, "pgw-user");
    CHECK(!u.password[0] && u.port == 6379);

    const char *bad[] = {
        "",
        "http://h:6379",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:99999999",
        "redis://h:abc",
        "redis://h:6379/16",
        "redis://h:6379/-1",
        "redis://h:6379/1x",
        "redis://h:6379/01/2",
        "redis://h:6379/0?db=1",
        "redis://h:6379/0#frag",
        "redis+tls://h:6379",
        "redis://h:6379/0/",
        "h:6379",
        "redis://:hunter2-secret@h:6379/99",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = pgw_redis_url_parse(bad[i], &u, err, sizeof err);
        CHECK(rc == -1);
        if (rc == 0)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
        CHECK(strstr(err, "--redis-url") != NULL);
        CHECK(strstr(err, "hunter2") == NULL);
    }
    CHECK(pgw_redis_url_parse(NULL, &u, err, sizeof err) == -1);

    /* The constructor reports the same way and never echoes the password. */
    struct event_base *b = event_base_new();
    pgw_redis_tier_config c = test_config("redis://:hunter2-secret@h:6379/99");
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-url") && !strstr(err, "hunter2"));
    /* ...but the tier wants one from somewhere. */
    c = test_config("rediss://pgw-user@127.0.0.1:1");
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-password-file") != NULL);
    /* TLS files without TLS, half a client certificate, unreadable files: clear errors. */
    c = test_config("redis://127.0.0.1:1");
    c.ca_file = "/etc/hostname";
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-ca-file") && strstr(err, "rediss://"));
    c = test_config("rediss://127.0.0.1:1");
    c.cert_file = "/nonexistent/cert.pem";
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-key") != NULL);
    c.key_file = "/nonexistent/key.pem";
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-cert") && strstr(err, "No such file"));
    c = test_config("rediss://127.0.0.1:1");
    c.ca_file = "/nonexistent/ca.pem";
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-ca-file") && strstr(err, "/nonexistent/ca.pem"));
    c.ca_file = "/etc/hostname"; /* readable, not PEM */
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-ca-file") != NULL);
    c = test_config("redis://127.0.0.1:1");
    c.password_file = "/nonexistent/pw";
    CHECK(pgw_redis_tier_new(b, &c, err, sizeof err) == NULL);
    CHECK(strstr(err, "--redis-password-file") != NULL);
    /* System CAs, no client certificate: fine (connecting happens later). */
    c = test_config("rediss://127.0.0.1:1");
    pgw_redis_tier *t = pgw_redis_tier_new(b, &c, err, sizeof err);
    CHECK(t != NULL);
    pgw_redis_tier_free(t);
    event_base_free(b);
}

static void test_key(void)
{
    char k[128];
    const char *arn = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/j1";
    int n = pgw_redis_key_for_arn(arn, k, sizeof k);
    CHECK(n == (int)strlen(k));
    CHECK_STR(k, "pgw:v1:bij:arn:aws:personalize:us-east-1:123456789012:batch-inference-job/j1");
    CHECK(pgw_redis_key_for_arn(arn, k, 20) == -1);
    CHECK(pgw_redis_key_for_arn(arn, k, (size_t)n) == -1);
    CHECK(pgw_redis_key_for_arn(arn, k, (size_t)n + 1) == n);
}

static long long pttl(redisContext *c, const char *key)
{
    redisReply *r = redisCommand(c, "PTTL %s", key);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -100;
    if (r)
        freeReplyObject(r);
    return v;
}

static int wait_ready(pgw_redis_tier *tier, int ms)
{
    int64_t end = pgw_tr_now_ms() + ms;
    while (!pgw_redis_tier_is_ready(tier) && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    return pgw_redis_tier_is_ready(tier);
}

/* Basic round trip, PTTL, miss, corrupted value, timeout, crash and recovery. */
static void test_plain_server(int port, pid_t *pid)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    pgw_redis_tier_config cfg = test_config(url);
    char err[256];
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier != NULL);
    if (!tier)
        return;
    CHECK(wait_ready(tier, 3000));
    redisContext *rc = pgw_tr_connect(port, NULL, 0);
    CHECK(rc != NULL);

    char key[256];
    pgw_redis_key_for_arn("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/rt", key,
                          sizeof key);
    get_state g = do_get(tier, key);
    CHECK(g.calls == 1 && g.result == PGW_REDIS_MISS);

    /* An encoded entry, binary bytes and all, survives the round trip. */
    const uint8_t pb[] = {0x0a, 0x02, 'j', 0x00, 0xff, 0x7f};
    pgw_cache_entry e;
    memset(&e, 0, sizeof e);
    e.kind = PGW_CACHE_ENTRY_POSITIVE;
    e.fetched_at_ms = 1000;
    e.fresh_until_ms = 2000;
    e.stale_until_ms = 3000;
    e.job_pb = pb;
    e.job_pb_len = sizeof pb;
    size_t enc_len = 0;
    uint8_t *enc = pgw_cache_entry_encode(&e, &enc_len);
    CHECK(pgw_redis_tier_set(tier, key, enc, enc_len, 60000) == 0);
    g = do_get(tier, key); /* same connection, so ordered after the SET */
    CHECK(g.result == PGW_REDIS_HIT && g.len == enc_len && memcmp(g.value, enc, enc_len) == 0);
    pgw_cache_entry d;
    CHECK(pgw_cache_entry_decode(g.value, g.len, &d) == 0 && d.job_pb_len == sizeof pb);
    free(enc);
    long long t = pttl(rc, key);
    CHECK(t > 58000 && t <= 60000);

    /* A corrupted value is just bytes to the tier; the codec refuses it. */
    redisReply *r = redisCommand(rc, "SET %s %b", key, "PGW1\x01garbage", (size_t)12);
    if (r)
        freeReplyObject(r);
    g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_HIT && g.len == 12);
    CHECK(pgw_cache_entry_decode(g.value, g.len, &d) == -1);

    /* A wrong-type key is an error reply: ERROR, not a crash. */
    r = redisCommand(rc, "LPUSH pgw:v1:bij:list x");
    if (r)
        freeReplyObject(r);
    g = do_get(tier, "pgw:v1:bij:list");
    CHECK(g.result == PGW_REDIS_ERROR);

    /* A stopped server: the GET answers ERROR at its timeout; the late reply is ignored. */
    pgw_tr_signal(*pid, SIGSTOP);
    int64_t t0 = pgw_tr_now_ms();
    g = do_get(tier, key);
    CHECK(g.calls == 1 && g.result == PGW_REDIS_ERROR);
    CHECK(g.answered_at - t0 >= cfg.command_timeout_ms - 5 &&
          g.answered_at - t0 < cfg.command_timeout_ms + 150);
    pgw_tr_signal(*pid, SIGCONT);
    pgw_tr_run_for(base, 100);
    CHECK(g.calls == 1);
    pgw_redis_tier_stats st;
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.timeouts == 1 && st.breaker == PGW_REDIS_BREAKER_CLOSED);
    g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_HIT);

    /* GETs sent 40 ms apart to a stopped server: one timer serves the whole FIFO, yet each
     * answers at its own deadline, never before. Their late replies (error replies: the key
     * is the list) are matched in order and dropped, so the next GET gets its own value. */
    pgw_tr_signal(*pid, SIGSTOP);
    get_state staggered[3];
    int64_t sent_at[3];
    memset(staggered, 0, sizeof staggered);
    for (int i = 0; i < 3; i++) {
        if (i)
            pgw_tr_run_for(base, 40);
        sent_at[i] = pgw_tr_now_ms();
        pgw_redis_tier_get(tier, "pgw:v1:bij:list", get_cb, &staggered[i]);
    }
    pgw_tr_run_until(base, &staggered[2].done, 2000);
    int each_own_deadline = 1;
    for (int i = 0; i < 3; i++)
        each_own_deadline &= staggered[i].calls == 1 && staggered[i].result == PGW_REDIS_ERROR &&
                             staggered[i].answered_at - sent_at[i] >= cfg.command_timeout_ms - 5 &&
                             staggered[i].answered_at - sent_at[i] < cfg.command_timeout_ms + 150;
    CHECK(each_own_deadline);
    pgw_tr_signal(*pid, SIGCONT);
    pgw_tr_run_for(base, 100);
    g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_HIT && g.len == 12 && g.calls == 1);
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.timeouts == 4 && st.breaker == PGW_REDIS_BREAKER_CLOSED);

    /* Seven GETs time out together: the fifth timeout opens the breaker, whose teardown
     * answers the last two at once; every GET is answered exactly once. */
    uint64_t opens_before = st.breaker_opens;
    pgw_tr_signal(*pid, SIGSTOP);
    get_state burst[7];
    memset(burst, 0, sizeof burst);
    for (int i = 0; i < 7; i++)
        pgw_redis_tier_get(tier, key, get_cb, &burst[i]);
    pgw_tr_run_until(base, &burst[6].done, 2000);
    pgw_tr_run_for(base, 20);
    int all_once = 1;
    for (int i = 0; i < 7; i++)
        all_once &= burst[i].calls == 1 && burst[i].result == PGW_REDIS_ERROR;
    CHECK(all_once);
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.timeouts == 9 && st.breaker_opens == opens_before + 1);
    pgw_tr_signal(*pid, SIGCONT);
    /* After the cool-down the breaker lets a probe through and closes on its HIT. */
    int recovered = 0;
    int64_t until = pgw_tr_now_ms() + 5000;
    while (!recovered && pgw_tr_now_ms() < until) {
        g = do_get(tier, key);
        recovered = g.result == PGW_REDIS_HIT;
        if (!recovered)
            pgw_tr_run_for(base, 50);
    }
    CHECK(recovered);

    /* Crash: every GET still answers within the timeout, and the breaker opens. */
    pgw_tr_signal(*pid, SIGKILL);
    *pid = -1;
    redisFree(rc);
    rc = NULL;
    int all_error = 1, all_prompt = 1;
    for (int i = 0; i < 10; i++) {
        t0 = pgw_tr_now_ms();
        g = do_get(tier, key);
        all_error &= g.calls == 1 && g.result == PGW_REDIS_ERROR;
        all_prompt &= g.answered_at - t0 <= cfg.command_timeout_ms + 50;
        pgw_tr_run_for(base, 5);
    }
    CHECK(all_error && all_prompt);
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.breaker_opens >= 1);
    CHECK(st.breaker != PGW_REDIS_BREAKER_CLOSED);
    CHECK(pgw_redis_tier_set(tier, key, (const uint8_t *)"x", 1, 1000) == -1);
    CHECK(pgw_redis_tier_last_error(tier)[0] != '\0');

    /* Restart on the same port: the tier reconnects and, after the cool-down, hits again. */
    *pid = pgw_tr_start(port, NULL);
    CHECK(*pid > 0);
    rc = pgw_tr_connect(port, NULL, 0);
    CHECK(rc != NULL);
    if (rc) {
        r = redisCommand(rc, "SET %s %s", key, "back");
        if (r)
            freeReplyObject(r);
    }
    int hit = 0;
    int64_t end = pgw_tr_now_ms() + 5000;
    while (!hit && pgw_tr_now_ms() < end) {
        g = do_get(tier, key);
        hit = g.result == PGW_REDIS_HIT && g.len == 4 && memcmp(g.value, "back", 4) == 0;
        if (!hit)
            pgw_tr_run_for(base, 50);
    }
    CHECK(hit);
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.breaker == PGW_REDIS_BREAKER_CLOSED && st.connects >= 2);
    CHECK(pgw_redis_tier_set(tier, key, (const uint8_t *)"again", 5, 5000) == 0);
    g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_HIT && g.len == 5);
    if (rc) {
        t = pttl(rc, key);
        CHECK(t > 3000 && t <= 5000);
    }

    /* Free with a command in flight: its callback is suppressed, nothing leaks (ASan). */
    pgw_tr_signal(*pid, SIGSTOP);
    get_state pending;
    memset(&pending, 0, sizeof pending);
    pgw_redis_tier_get(tier, key, get_cb, &pending);
    pgw_redis_tier_free(tier);
    tier = NULL;
    pgw_tr_run_for(base, 150);
    CHECK(pending.calls == 0);
    pgw_tr_signal(*pid, SIGCONT);
    if (rc)
        redisFree(rc);

    /* Free from inside a callback, with another GET still queued behind it. */
    tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    if (tier) {
        get_state first, second;
        memset(&first, 0, sizeof first);
        memset(&second, 0, sizeof second);
        first.free_me = &tier;
        pgw_redis_tier_get(tier, key, get_cb, &first);
        pgw_redis_tier_get(tier, key, get_cb, &second);
        pgw_tr_run_until(base, &first.done, 2000);
        pgw_tr_run_for(base, 50);
        CHECK(first.calls == 1 && first.result == PGW_REDIS_HIT && tier == NULL);
        CHECK(second.calls == 0);
    }
    pgw_redis_tier_free(tier);
}

static void test_auth_server(int port)
{
    char url[128], err[256];
    const char *pw = "t3st-only-pw";
    char key[] = "pgw:v1:bij:auth-test";

    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d/3", pw, port);
    pgw_redis_tier_config cfg = test_config(url);
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    CHECK(tier && pgw_redis_tier_set(tier, key, (const uint8_t *)"in-db-3", 7, 10000) == 0);
    get_state g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_HIT && g.len == 7);
    redisContext *db3 = pgw_tr_connect(port, pw, 3);
    redisContext *db0 = pgw_tr_connect(port, pw, 0);
    CHECK(db3 && db0);
    if (db3 && db0) {
        redisReply *r = redisCommand(db3, "GET %s", key);
        CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "in-db-3") == 0);
        if (r)
            freeReplyObject(r);
        r = redisCommand(db0, "EXISTS %s", key);
        CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
        if (r)
            freeReplyObject(r);
    }
    pgw_redis_tier_free(tier);

    /* ACL-style URL with the default user, another database. */
    snprintf(url, sizeof url, "redis://default:%s@127.0.0.1:%d/5", pw, port);
    cfg = test_config(url);
    tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    g = do_get(tier, key);
    CHECK(g.result == PGW_REDIS_MISS); /* db 5 does not have it */
    pgw_redis_tier_free(tier);

    /* Wrong password: never ready, GETs answer ERROR at once, error text has no password. */
    snprintf(url, sizeof url, "redis://:wrong-%s@127.0.0.1:%d", pw, port);
    cfg = test_config(url);
    tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier != NULL);
    pgw_tr_run_for(base, 300);
    CHECK(tier && !pgw_redis_tier_is_ready(tier));
    if (tier) {
        CHECK(strstr(pgw_redis_tier_last_error(tier), "AUTH") != NULL);
        CHECK(strstr(pgw_redis_tier_last_error(tier), pw) == NULL);
        get_state sync;
        memset(&sync, 0, sizeof sync);
        pgw_redis_tier_get(tier, key, get_cb, &sync);
        CHECK(sync.calls == 1 && sync.result == PGW_REDIS_ERROR); /* synchronous */
    }
    pgw_redis_tier_free(tier);

    /* No password at all against a server that wants one: the handshake's PING gets NOAUTH, so
     * the tier never becomes ready, counts an AUTH failure, and GETs answer ERROR at once. */
    snprintf(url, sizeof url, "redis://localhost:%d", port); /* also exercises evdns */
    cfg = test_config(url);
    tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier != NULL);
    pgw_tr_run_for(base, 300);
    if (tier) {
        CHECK(!pgw_redis_tier_is_ready(tier));
        CHECK(strstr(pgw_redis_tier_last_error(tier), "NOAUTH") != NULL);
        pgw_redis_tier_stats st;
        pgw_redis_tier_stats_get(tier, &st);
        CHECK(st.auth_failures >= 1 && st.connects == 0);
        g = do_get(tier, key);
        CHECK(g.result == PGW_REDIS_ERROR);
    }
    pgw_redis_tier_free(tier);
    if (db3)
        redisFree(db3);
    if (db0)
        redisFree(db0);
}

/* ---- generic commands ---------------------------------------------------------------------- */

typedef struct cmd_state {
    int done;
    int calls;
    int null_reply;
    int type;
    long long integer;
    char str[256];
    size_t len;
    int64_t answered_at;
} cmd_state;

static void cmd_cb(const struct redisReply *reply, void *ud)
{
    cmd_state *c = ud;
    c->calls++;
    c->done = 1;
    c->answered_at = pgw_tr_now_ms();
    c->null_reply = reply == NULL;
    if (reply) {
        c->type = reply->type;
        c->integer = reply->integer;
        c->len = reply->str ? (size_t)reply->len : 0;
        if (reply->str && c->len < sizeof c->str) {
            memcpy(c->str, reply->str, c->len);
            c->str[c->len] = '\0';
        }
    }
}

/* One command from a NULL-terminated list of string arguments, run to its answer. */
static cmd_state do_cmd(pgw_redis_tier *tier, const char *a0, ...)
{
    const char *argv[8];
    size_t lens[8];
    int argc = 0;
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && argc < 8; a = va_arg(ap, const char *)) {
        argv[argc] = a;
        lens[argc++] = strlen(a);
    }
    va_end(ap);
    cmd_state c;
    memset(&c, 0, sizeof c);
    pgw_redis_tier_command(tier, argc, argv, lens, cmd_cb, &c);
    pgw_tr_run_until(base, &c.done, 2000);
    return c;
}

static void test_commands(int port, pid_t pid)
{
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    pgw_redis_tier_config cfg = test_config(url);
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier && wait_ready(tier, 3000));
    if (!tier)
        return;
    const char *lease =
        PGW_REDIS_LEASE_PREFIX "arn:aws:personalize:us-east-1:1:batch-inference-job/c";

    /* The lease idiom the fleet uses: SET NX PX -> OK, then nil while held. */
    cmd_state c = do_cmd(tier, "SET", lease, "replica-a", "NX", "PX", "5000", NULL);
    CHECK(c.calls == 1 && !c.null_reply && c.type == REDIS_REPLY_STATUS &&
          strcmp(c.str, "OK") == 0);
    c = do_cmd(tier, "SET", lease, "replica-b", "NX", "PX", "5000", NULL);
    CHECK(c.calls == 1 && !c.null_reply && c.type == REDIS_REPLY_NIL);
    c = do_cmd(tier, "GET", lease, NULL);
    CHECK(c.type == REDIS_REPLY_STRING && strcmp(c.str, "replica-a") == 0);
    c = do_cmd(tier, "PTTL", lease, NULL);
    CHECK(c.type == REDIS_REPLY_INTEGER && c.integer > 4000 && c.integer <= 5000);

    /* Binary arguments go through intact (lens, not strlen). */
    const char *argv[3] = {"SET", "pgw:v1:bin", "a\0b"};
    size_t lens[3] = {3, 10, 3};
    cmd_state b;
    memset(&b, 0, sizeof b);
    pgw_redis_tier_command(tier, 3, argv, lens, cmd_cb, &b);
    pgw_tr_run_until(base, &b.done, 2000);
    c = do_cmd(tier, "STRLEN", "pgw:v1:bin", NULL);
    CHECK(c.type == REDIS_REPLY_INTEGER && c.integer == 3);

    /* An error reply is a reply; it still counts against the breaker, as for GET. */
    c = do_cmd(tier, "INCR", lease, NULL);
    CHECK(c.calls == 1 && !c.null_reply && c.type == REDIS_REPLY_ERROR);
    c = do_cmd(tier, "NOSUCHCOMMAND", NULL);
    CHECK(!c.null_reply && c.type == REDIS_REPLY_ERROR);
    c = do_cmd(tier, "PING", NULL); /* success resets the failure run */
    CHECK(c.type == REDIS_REPLY_STATUS && strcmp(c.str, "PONG") == 0);

    /* Bad arguments: NULL, synchronously. */
    cmd_state bad;
    memset(&bad, 0, sizeof bad);
    pgw_redis_tier_command(tier, 0, argv, lens, cmd_cb, &bad);
    CHECK(bad.calls == 1 && bad.null_reply);

    /* A stopped server: NULL at the command timeout, the late reply ignored. */
    pgw_tr_signal(pid, SIGSTOP);
    int64_t t0 = pgw_tr_now_ms();
    c = do_cmd(tier, "GET", lease, NULL);
    CHECK(c.calls == 1 && c.null_reply);
    CHECK(c.answered_at - t0 >= cfg.command_timeout_ms - 5 &&
          c.answered_at - t0 < cfg.command_timeout_ms + 150);
    pgw_tr_signal(pid, SIGCONT);
    pgw_tr_run_for(base, 100);
    CHECK(c.calls == 1);
    pgw_redis_tier_stats st;
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.commands >= 9 && st.command_failures == 2 && st.timeouts == 1);

    /* Breaker: a run of failures opens it; commands are then refused synchronously. */
    for (int i = 0; i < cfg.breaker_failures; i++)
        do_cmd(tier, "INCR", lease, NULL);
    pgw_redis_tier_stats_get(tier, &st);
    CHECK(st.breaker_opens == 1);
    cmd_state sync;
    memset(&sync, 0, sizeof sync);
    const char *ping[1] = {"PING"};
    size_t ping_len[1] = {4};
    pgw_redis_tier_command(tier, 1, ping, ping_len, cmd_cb, &sync);
    CHECK(sync.calls == 1 && sync.null_reply);
    CHECK(pgw_redis_tier_publish(tier, PGW_REDIS_FILL_CHANNEL, (const uint8_t *)"x", 1) == -1);
    pgw_redis_tier_free(tier);

    /* A server refusing for reasons of its own (out of clients) is a connect failure, not
     * an AUTH one. */
    redisContext *adm = pgw_tr_connect(port, NULL, 0);
    CHECK(adm != NULL);
    if (adm) {
        redisReply *r = redisCommand(adm, "CONFIG SET maxclients 1");
        CHECK(r && r->type == REDIS_REPLY_STATUS);
        if (r)
            freeReplyObject(r);
        tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
        CHECK(tier != NULL);
        pgw_tr_run_for(base, 300);
        pgw_redis_tier_stats_get(tier, &st);
        CHECK(!pgw_redis_tier_is_ready(tier) && st.connect_failures >= 1 && st.auth_failures == 0);
        CHECK(strstr(pgw_redis_tier_last_error(tier), "max number of clients") != NULL);
        pgw_redis_tier_free(tier);
        r = redisCommand(adm, "CONFIG SET maxclients 10000");
        if (r)
            freeReplyObject(r);
        redisFree(adm);
    }

    /* No server at all: NULL synchronously. */
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", pgw_tr_free_port());
    cfg = test_config(url);
    tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier != NULL);
    pgw_tr_run_for(base, 50);
    memset(&sync, 0, sizeof sync);
    pgw_redis_tier_command(tier, 1, ping, ping_len, cmd_cb, &sync);
    CHECK(sync.calls == 1 && sync.null_reply);
    pgw_redis_tier_free(tier);
}

/* ---- pub/sub ------------------------------------------------------------------------------- */

typedef struct sub_state {
    int ups, downs;
    int messages;
    uint8_t last[64];
    size_t last_len;
    pgw_redis_tier **free_me; /* set: free the tier from inside on_message */
} sub_state;

static void on_message(const uint8_t *payload, size_t len, void *ud)
{
    sub_state *s = ud;
    s->messages++;
    s->last_len = len < sizeof s->last ? len : sizeof s->last;
    memcpy(s->last, payload, s->last_len);
    if (s->free_me) {
        pgw_redis_tier_free(*s->free_me);
        *s->free_me = NULL;
    }
}

static void on_subscription(int up, void *ud)
{
    sub_state *s = ud;
    if (up)
        s->ups++;
    else
        s->downs++;
}

static int wait_flag_ge(const int *v, int want, int ms)
{
    int64_t end = pgw_tr_now_ms() + ms;
    while (*v < want && pgw_tr_now_ms() < end)
        pgw_tr_run_for(base, 10);
    return *v >= want;
}

static void kill_clients(int port, const char *password, const char *type)
{
    redisContext *rc = pgw_tr_connect(port, password, 0);
    CHECK(rc != NULL);
    if (!rc)
        return;
    redisReply *r = redisCommand(rc, "CLIENT KILL TYPE %s", type);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1);
    if (r)
        freeReplyObject(r);
    redisFree(rc);
}

static void test_pubsub(int port, const char *password, int db)
{
    char url[128], err[256];
    if (password)
        snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d/%d", password, port, db);
    else
        snprintf(url, sizeof url, "redis://127.0.0.1:%d/%d", port, db);
    sub_state s;
    memset(&s, 0, sizeof s);
    pgw_redis_tier_config cfg = test_config(url);
    cfg.subscribe_channel = PGW_REDIS_FILL_CHANNEL;
    cfg.on_message = on_message;
    cfg.on_subscription = on_subscription;
    cfg.message_ud = &s;
    pgw_redis_tier *sub = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    pgw_redis_tier_config pcfg = test_config(url); /* a second tier: another replica */
    pgw_redis_tier *pub = pgw_redis_tier_new(base, &pcfg, err, sizeof err);
    CHECK(sub && pub);
    if (!sub || !pub) {
        pgw_redis_tier_free(sub);
        pgw_redis_tier_free(pub);
        return;
    }
    CHECK(wait_ready(pub, 3000));
    CHECK(wait_flag_ge(&s.ups, 1, 3000));
    CHECK(pgw_redis_tier_is_subscribed(sub) && s.downs == 0);

    const uint8_t payload[] = {'a', 'r', 'n', 0x00, 0xff};
    CHECK(pgw_redis_tier_publish(pub, PGW_REDIS_FILL_CHANNEL, payload, sizeof payload) == 0);
    CHECK(wait_flag_ge(&s.messages, 1, 2000));
    CHECK(s.last_len == sizeof payload && memcmp(s.last, payload, sizeof payload) == 0);
    /* Another channel is not delivered. */
    CHECK(pgw_redis_tier_publish(pub, "pgw:v1:other", payload, 1) == 0);
    CHECK(pgw_redis_tier_publish(sub, PGW_REDIS_FILL_CHANNEL, (const uint8_t *)"self", 4) == 0);
    CHECK(wait_flag_ge(&s.messages, 2, 2000));
    pgw_tr_run_for(base, 50);
    CHECK(s.messages == 2 && s.last_len == 4 && memcmp(s.last, "self", 4) == 0);

    /* The subscriber connection is killed: down, then up again after the reconnect, and
     * messages flow again. The main connections were not touched. */
    kill_clients(port, password, "pubsub");
    CHECK(wait_flag_ge(&s.downs, 1, 2000));
    CHECK(wait_flag_ge(&s.ups, 2, 3000));
    CHECK(pgw_redis_tier_publish(pub, PGW_REDIS_FILL_CHANNEL, (const uint8_t *)"again", 5) == 0);
    CHECK(wait_flag_ge(&s.messages, 3, 2000));
    CHECK(s.last_len == 5 && memcmp(s.last, "again", 5) == 0);
    pgw_redis_tier_stats st;
    pgw_redis_tier_stats_get(sub, &st);
    CHECK(st.sub_connects == 2 && st.messages == 3 && st.subscribed == 1);
    CHECK(st.disconnects == 0 && st.breaker == PGW_REDIS_BREAKER_CLOSED);
    pgw_redis_tier_stats_get(pub, &st);
    CHECK(st.publishes == 3 && st.publish_errors == 0);

    /* Freed from inside on_message: nothing runs afterwards, nothing leaks (ASan). */
    s.free_me = &sub;
    int downs = s.downs;
    CHECK(pgw_redis_tier_publish(pub, PGW_REDIS_FILL_CHANNEL, (const uint8_t *)"last", 4) == 0);
    CHECK(wait_flag_ge(&s.messages, 4, 2000));
    pgw_tr_run_for(base, 50);
    CHECK(sub == NULL && s.downs == downs);
    pgw_redis_tier_free(sub);
    pgw_redis_tier_free(pub);
}

/* A subscriber whose server stops answering (SIGSTOP: no FIN, like a dead NAT entry) is
 * called lost within two PING intervals, and comes back once the server does. */
static void test_sub_liveness(int port, pid_t pid)
{
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    sub_state s;
    memset(&s, 0, sizeof s);
    pgw_redis_tier_config cfg = test_config(url);
    cfg.subscribe_channel = PGW_REDIS_FILL_CHANNEL;
    cfg.on_message = on_message;
    cfg.on_subscription = on_subscription;
    cfg.message_ud = &s;
    cfg.sub_ping_interval_ms = 100;
    pgw_redis_tier *tier = pgw_redis_tier_new(base, &cfg, err, sizeof err);
    CHECK(tier != NULL);
    if (!tier)
        return;
    CHECK(wait_flag_ge(&s.ups, 1, 3000));
    pgw_tr_run_for(base, 350); /* a few PINGs answered: still up */
    CHECK(s.downs == 0 && pgw_redis_tier_is_subscribed(tier));
    pgw_tr_signal(pid, SIGSTOP);
    int64_t t0 = pgw_tr_now_ms();
    CHECK(wait_flag_ge(&s.downs, 1, 2000));
    CHECK(pgw_tr_now_ms() - t0 <= 2 * cfg.sub_ping_interval_ms + 150);
    CHECK(!pgw_redis_tier_is_subscribed(tier));
    CHECK(strstr(pgw_redis_tier_last_error(tier), "PONG") != NULL);
    pgw_tr_signal(pid, SIGCONT);
    CHECK(wait_flag_ge(&s.ups, 2, 5000));
    pgw_redis_tier_free(tier);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_url_parsing();
    test_key();

    int port = pgw_tr_free_port();
    pid_t pid = pgw_tr_start(port, NULL);
    if (pid == 0) {
        printf("test_cache_redis_tier: SKIP: redis-server is not installed "
               "(URL and key tests passed: %d failures)\n",
               pgw_test_failures);
        return pgw_test_failures ? 1 : 77;
    }
    CHECK(pid > 0);
    base = event_base_new();
    if (pid > 0)
        test_plain_server(port, &pid);
    if (pid > 0) {
        test_commands(port, pid);
        test_pubsub(port, NULL, 0);
        test_sub_liveness(port, pid);
    }
    pgw_tr_signal(pid, SIGKILL);

    int port2 = pgw_tr_free_port();
    pid_t pid2 = pgw_tr_start(port2, "t3st-only-pw");
    CHECK(pid2 > 0);
    if (pid2 > 0) {
        test_auth_server(port2);
        test_pubsub(port2, "t3st-only-pw", 4);
    }
    pgw_tr_signal(pid2, SIGKILL);

    event_base_free(base);
    return pgw_test_finish("test_cache_redis_tier");
}
