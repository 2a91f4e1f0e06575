/* Cross-replica coalescing (cache/fleet.c) against a real redis-server this test starts on
 * loopback. Two "replicas" are two fleets, each on its own Redis tier (own connections), in one
 * process: the lease is won by one and waited on by the other; a fill notice, a failure notice,
 * a value already in Redis, a holder that never answers (take-over after the lease), a cancelled
 * wait, malformed notices, and Redis down (fetch alone, at once). Skips (77) without
 * redis-server. */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache/entry.h"
#include "cache/fleet.h"
#include "cache/redis_tier.h"
#include "cache_test_redis.h"
#include "test_util.h"

#define ARN "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/fleet"

static struct event_base *base;

typedef struct replica {
    pgw_redis_tier *tier;
    pgw_fleet *fleet;
} replica;

static int replica_open(replica *r, int port, int lease_ms, const char *id)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    pgw_fleet_config fcfg;
    pgw_fleet_config_defaults(&fcfg);
    fcfg.lease_ms = lease_ms;
    fcfg.replica_id = id;
    r->fleet = pgw_fleet_new(base, &fcfg);
    pgw_redis_tier_config cfg;
    pgw_redis_tier_config_defaults(&cfg);
    cfg.url = url;
    cfg.command_timeout_ms = 500; /* ASan on a shared 2-core machine */
    cfg.subscribe_channel = PGW_REDIS_FILL_CHANNEL;
    cfg.on_message = pgw_fleet_on_message;
    cfg.on_subscription = pgw_fleet_on_subscription;
    cfg.message_ud = r->fleet;
    char err[256];
    r->tier = pgw_redis_tier_new(base, &cfg, err, sizeof(err));
    if (!r->fleet || !r->tier)
        return -1;
    pgw_fleet_set_redis(r->fleet, r->tier);
    int64_t end = pgw_tr_now_ms() + 5000;
    pgw_fleet_stats s;
    do {
        pgw_tr_run_for(base, 10);
        pgw_fleet_stats_get(r->fleet, &s);
    } while ((!s.subscribed || !pgw_redis_tier_is_ready(r->tier)) && pgw_tr_now_ms() < end);
    return s.subscribed ? 0 : -1;
}

static void replica_close(replica *r)
{
    pgw_redis_tier_free(r->tier);
    pgw_fleet_free(r->fleet);
}

typedef struct outcome {
    int done, calls;
    pgw_fleet_verdict verdict;
    int holds_lease, taken_over, code;
    char message[128];
    uint8_t entry[512];
    size_t entry_len;
    int64_t at_ms;
} outcome;

static void on_outcome(const pgw_fleet_outcome *o, void *ud)
{
    outcome *out = ud;
    out->calls++;
    out->done = 1;
    out->verdict = o->verdict;
    out->holds_lease = o->holds_lease;
    out->taken_over = o->taken_over;
    out->code = o->code;
    out->at_ms = pgw_tr_now_ms();
    if (o->message)
        snprintf(out->message, sizeof(out->message), "%s", o->message);
    if (o->entry && o->entry_len <= sizeof(out->entry)) {
        memcpy(out->entry, o->entry, o->entry_len);
        out->entry_len = o->entry_len;
    }
}

/* A fresh positive entry, as lookup would write it. */
static uint8_t *make_entry(size_t *len, int64_t fresh_for_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    static const uint8_t job[] = {0x0a, 0x03, 'j', 'o', 'b'};
    pgw_cache_entry e = {
        .kind = PGW_CACHE_ENTRY_POSITIVE,
        .fetched_at_ms = now,
        .fresh_until_ms = now + fresh_for_ms,
        .stale_until_ms = now + fresh_for_ms + 1000,
        .job_pb = job,
        .job_pb_len = sizeof(job),
    };
    return pgw_cache_entry_encode(&e, len);
}

static void flush(redisContext *c)
{
    redisReply *r = redisCommand(c, "FLUSHALL");
    if (r)
        freeReplyObject(r);
}

static void test_won_then_filled(replica *a, replica *b, redisContext *c)
{
    flush(c);
    outcome oa = {0}, ob = {0};
    pgw_fleet_wait *wa = pgw_fleet_acquire(a->fleet, ARN, 1, on_outcome, &oa);
    pgw_tr_run_until(base, &oa.done, 2000);
    CHECK(wa != NULL);
    CHECK(oa.done && oa.verdict == PGW_FLEET_FETCH && oa.holds_lease && !oa.taken_over);
    redisReply *r = redisCommand(c, "GET %s%s", PGW_REDIS_LEASE_PREFIX, ARN);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "replica-a") == 0);
    if (r)
        freeReplyObject(r);

    pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &ob);
    pgw_tr_run_for(base, 200);
    CHECK(!ob.done); /* someone else holds the lease: B waits */
    pgw_fleet_stats sb;
    pgw_fleet_stats_get(b->fleet, &sb);
    CHECK(sb.waiting == 1);

    size_t len;
    uint8_t *entry = make_entry(&len, 60000);
    pgw_fleet_publish_fill(a->fleet, ARN, entry, len);
    pgw_tr_run_until(base, &ob.done, 2000);
    CHECK(ob.done && ob.calls == 1 && ob.verdict == PGW_FLEET_FILLED);
    CHECK(ob.entry_len == len && memcmp(ob.entry, entry, len) == 0);
    free(entry);
    pgw_tr_run_for(base, 50);
    r = redisCommand(c, "EXISTS %s%s", PGW_REDIS_LEASE_PREFIX, ARN);
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0); /* released */
    if (r)
        freeReplyObject(r);
    pgw_fleet_stats_get(b->fleet, &sb);
    CHECK(sb.waiting == 0 && sb.leases_waited >= 1 && sb.notices_received >= 1);
    CHECK(oa.calls == 1);
}

static void test_failure_notice(replica *a, replica *b, redisContext *c)
{
    flush(c);
    outcome oa = {0}, ob = {0};
    pgw_fleet_acquire(a->fleet, ARN, 1, on_outcome, &oa);
    pgw_tr_run_until(base, &oa.done, 2000);
    CHECK(oa.holds_lease);
    pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &ob);
    pgw_tr_run_for(base, 100);
    CHECK(!ob.done);
    pgw_fleet_publish_failure(a->fleet, ARN, 14, "AWS Personalize: ThrottlingException");
    pgw_tr_run_until(base, &ob.done, 2000);
    CHECK(ob.done && ob.verdict == PGW_FLEET_FAILED && ob.code == 14);
    CHECK_STR(ob.message, "AWS Personalize: ThrottlingException");
    /* The lease was released with the failure: the next fetch may take it at once. */
    outcome oc = {0};
    pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &oc);
    pgw_tr_run_until(base, &oc.done, 2000);
    CHECK(oc.verdict == PGW_FLEET_FETCH && oc.holds_lease);
}

/* The holder dies: nobody publishes. The waiter takes over once the lease expires. */
static void test_takeover(replica *a, replica *b, redisContext *c, int lease_ms)
{
    flush(c);
    outcome oa = {0}, ob = {0};
    pgw_fleet_acquire(a->fleet, ARN, 1, on_outcome, &oa);
    pgw_tr_run_until(base, &oa.done, 2000);
    CHECK(oa.holds_lease);
    int64_t t0 = pgw_tr_now_ms();
    pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &ob);
    pgw_tr_run_until(base, &ob.done, lease_ms + 3000);
    CHECK(ob.done && ob.verdict == PGW_FLEET_FETCH && ob.holds_lease && ob.taken_over);
    CHECK(ob.at_ms - t0 <= lease_ms + 1000); /* within the lease (plus loop slack) */
    CHECK(ob.at_ms - t0 >= lease_ms / 2);    /* and not before the holder's lease ran out */
    pgw_fleet_stats sb;
    pgw_fleet_stats_get(b->fleet, &sb);
    CHECK(sb.leases_taken_over >= 1);
}

/* The holder finished between our miss and our SET: the value in Redis answers. */
static void test_value_already_there(replica *a, replica *b, redisContext *c)
{
    flush(c);
    size_t len;
    uint8_t *entry = make_entry(&len, 60000);
    redisReply *r = redisCommand(c, "SET %s%s %b", PGW_REDIS_KEY_PREFIX, ARN, entry, len);
    if (r)
        freeReplyObject(r);
    outcome oa = {0}, ob = {0};
    /* With the lease free, A wins it, sees the value, and answers from it. */
    pgw_fleet_acquire(a->fleet, ARN, 1, on_outcome, &oa);
    pgw_tr_run_until(base, &oa.done, 2000);
    CHECK(oa.verdict == PGW_FLEET_FILLED && oa.entry_len == len);
    /* With the lease held, B answers from the value too, without waiting. */
    r = redisCommand(c, "SET %s%s other NX PX 60000", PGW_REDIS_LEASE_PREFIX, ARN);
    if (r)
        freeReplyObject(r);
    pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &ob);
    pgw_tr_run_until(base, &ob.done, 2000);
    CHECK(ob.verdict == PGW_FLEET_FILLED && ob.entry_len == len);
    /* A no-cache caller does not take the cached value: it waits for the holder. */
    outcome oc = {0};
    pgw_fleet_wait *w = pgw_fleet_acquire(b->fleet, ARN, 0, on_outcome, &oc);
    pgw_tr_run_for(base, 300);
    CHECK(!oc.done && w != NULL);
    pgw_fleet_cancel(w);
    pgw_tr_run_for(base, 100);
    CHECK(oc.calls == 0);
    free(entry);
}

static void test_cancel_and_malformed(replica *a, replica *b, redisContext *c)
{
    flush(c);
    outcome oa = {0}, ob = {0};
    pgw_fleet_acquire(a->fleet, ARN, 1, on_outcome, &oa);
    pgw_tr_run_until(base, &oa.done, 2000);
    /* Cancelled while its pipeline is still out, then again while waiting. */
    pgw_fleet_wait *w = pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &ob);
    pgw_fleet_cancel(w);
    pgw_tr_run_for(base, 100);
    w = pgw_fleet_acquire(b->fleet, ARN, 1, on_outcome, &ob);
    pgw_tr_run_for(base, 100);
    pgw_fleet_cancel(w);
    pgw_fleet_stats sb0, sb1;
    pgw_fleet_stats_get(b->fleet, &sb0);
    CHECK(sb0.waiting == 0);
    /* Junk on the channel: counted, ignored. */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02};
    redisReply *r = redisCommand(c, "PUBLISH %s %b", PGW_REDIS_FILL_CHANNEL, junk, sizeof(junk));
    if (r)
        freeReplyObject(r);
    size_t len;
    uint8_t *entry = make_entry(&len, 60000);
    pgw_fleet_publish_fill(a->fleet, ARN, entry, len);
    free(entry);
    pgw_tr_run_for(base, 200);
    CHECK(ob.calls == 0);
    pgw_fleet_stats_get(b->fleet, &sb1);
    CHECK(sb1.notices_malformed == sb0.notices_malformed + 1);
    CHECK(sb1.notices_received >= sb0.notices_received + 1);
}

/* Redis down: the answer is "fetch alone", synchronously, without waiting on anything. */
static void test_redis_down(void)
{
    int port = pgw_tr_free_port();
    replica r = {0};
    CHECK(replica_open(&r, port, 1000, "lonely") == -1); /* nothing listens there */
    outcome o = {0};
    int64_t t0 = pgw_tr_now_ms();
    pgw_fleet_wait *w = pgw_fleet_acquire(r.fleet, ARN, 1, on_outcome, &o);
    CHECK(w == NULL && o.done && o.verdict == PGW_FLEET_FETCH && !o.holds_lease);
    CHECK(pgw_tr_now_ms() - t0 < 100);
    pgw_fleet_stats s;
    pgw_fleet_stats_get(r.fleet, &s);
    CHECK(s.fallbacks == 1 && s.waiting == 0);
    replica_close(&r);
}

int main(void)
{
    base = event_base_new();
    int port = pgw_tr_free_port();
    pid_t pid = pgw_tr_start(port, NULL);
    if (pid == 0) {
        printf("redis-server not installed: skipped\n");
        return 77;
    }
    CHECK(pid > 0);
    if (pid > 0) {
        const int lease_ms = 600;
        replica a = {0}, b = {0};
        CHECK(replica_open(&a, port, lease_ms, "replica-a") == 0);
        CHECK(replica_open(&b, port, lease_ms, "replica-b") == 0);
        redisContext *c = pgw_tr_connect(port, NULL, 0);
        CHECK(c != NULL);
        if (c) {
            test_won_then_filled(&a, &b, c);
            test_failure_notice(&a, &b, c);
            test_takeover(&a, &b, c, lease_ms);
            test_value_already_there(&a, &b, c);
            test_cancel_and_malformed(&a, &b, c);
            /* Redis goes away under a waiting replica: it stops waiting and fetches alone. */
            flush(c);
            outcome oa = {0}, ob = {0};
            pgw_fleet_acquire(a.fleet, ARN, 1, on_outcome, &oa);
            pgw_tr_run_until(base, &oa.done, 2000);
            pgw_fleet_acquire(b.fleet, ARN, 1, on_outcome, &ob);
            pgw_tr_run_for(base, 100);
            CHECK(!ob.done);
            redisFree(c);
            pgw_tr_signal(pid, SIGKILL);
            pid = 0;
            pgw_tr_run_until(base, &ob.done, 3000);
            CHECK(ob.done && ob.verdict == PGW_FLEET_FETCH && !ob.holds_lease);
        }
        replica_close(&a);
        replica_close(&b);
        pgw_tr_signal(pid, SIGKILL);
    }
    test_redis_down();
    event_base_free(base);
    return pgw_test_finish("test_cache_fleet");
}
