/* Coalescing across replicas; see fleet.h.
 *
 * Lifetimes: a wait has up to three Redis commands out (the SET/GET/PTTL pipeline of one
 * attempt). The tier calls back exactly once per command, so a wait that has been answered or
 * cancelled stays allocated, detached (cb == NULL, out of the index), until its last reply
 * arrives; `replies_out` counts them. The tier suppresses callbacks once it is freed, which is
 * why pgw_fleet_free may simply free every wait it knows of. */
#include "cache/fleet.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cache/entry.h"
#include "cache/redis_tier.h"
#include "personalize_gateway/fleet/v1/fleet.pb-c.h"

#define INDEX_BUCKETS  1024 /* open waits are bounded by the upstream in-flight bound */
#define REPLICA_ID_MAX 64
#define ARN_KEY_MAX    512

struct pgw_fleet_wait {
    pgw_fleet *fleet;
    pgw_fleet_wait *hnext; /* index chain */
    pgw_fleet_wait *all_prev, *all_next;
    int indexed;
    pgw_fleet_cb cb; /* NULL once answered or cancelled */
    void *user_data;
    int accept_cached;
    int attempts;
    int replies_out;
    int in_acquire; /* pgw_fleet_acquire is still on the stack: keep it allocated */
    /* the current attempt's replies */
    int redis_failed, won;
    long long pttl_ms;
    uint8_t *value;
    size_t value_len;
    struct event *takeover_timer;
    char arn[];
};

/* One poll-role question: SET NX PX, then GET, on one connection. */
struct pgw_fleet_role {
    pgw_fleet *fleet;
    pgw_fleet_role *all_prev, *all_next;
    pgw_fleet_role_cb cb; /* NULL once answered or cancelled */
    void *user_data;
    int in_ask, replies_out, failed, won, ours;
    char key[ARN_KEY_MAX];
    char px[24];
};

struct pgw_fleet {
    struct event_base *base;
    pgw_redis_tier *redis;
    int lease_ms;
    char replica_id[REPLICA_ID_MAX + 1];
    pgw_fleet_wait *index[INDEX_BUCKETS];
    pgw_fleet_wait *all;   /* every allocated wait, answered or not */
    pgw_fleet_role *roles; /* every allocated poll-role question */
    pgw_fleet_listener listener;
    void *listener_ud;
    pgw_fleet_stats stats;
};

void pgw_fleet_config_defaults(pgw_fleet_config *cfg)
{
    cfg->lease_ms = 3000;
    cfg->replica_id = NULL;
}

static size_t bucket_of(const char *arn)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)arn; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % INDEX_BUCKETS);
}

pgw_fleet *pgw_fleet_new(struct event_base *base, const pgw_fleet_config *cfg)
{
    pgw_fleet *fleet = calloc(1, sizeof(*fleet));
    if (!fleet)
        return NULL;
    pgw_fleet_config defaults;
    pgw_fleet_config_defaults(&defaults);
    fleet->base = base;
    fleet->lease_ms = cfg && cfg->lease_ms > 0 ? cfg->lease_ms : defaults.lease_ms;
    if (cfg && cfg->replica_id && cfg->replica_id[0]) {
        snprintf(fleet->replica_id, sizeof(fleet->replica_id), "%s", cfg->replica_id);
    } else {
        unsigned char r[8];
        if (getrandom(r, sizeof(r), GRND_NONBLOCK) != sizeof(r)) {
            unsigned long long t = (unsigned long long)time(NULL);
            memcpy(r, &t, sizeof(r));
        }
        for (size_t i = 0; i < sizeof(r); i++)
            snprintf(fleet->replica_id + 2 * i, 3, "%02x", r[i]);
    }
    return fleet;
}

void pgw_fleet_set_redis(pgw_fleet *fleet, pgw_redis_tier *redis)
{
    fleet->redis = redis;
}

static void wait_release(pgw_fleet_wait *w)
{
    pgw_fleet *fleet = w->fleet;
    if (w->all_prev)
        w->all_prev->all_next = w->all_next;
    else
        fleet->all = w->all_next;
    if (w->all_next)
        w->all_next->all_prev = w->all_prev;
    if (w->takeover_timer)
        event_free(w->takeover_timer);
    free(w->value);
    free(w);
}

static void role_release(pgw_fleet_role *r);

void pgw_fleet_free(pgw_fleet *fleet)
{
    if (!fleet)
        return;
    while (fleet->all)
        wait_release(fleet->all);
    while (fleet->roles)
        role_release(fleet->roles);
    free(fleet);
}

static void index_remove(pgw_fleet_wait *w)
{
    if (!w->indexed)
        return;
    pgw_fleet_wait **slot = &w->fleet->index[bucket_of(w->arn)];
    while (*slot && *slot != w)
        slot = &(*slot)->hnext;
    if (*slot)
        *slot = w->hnext;
    w->indexed = 0;
    w->fleet->stats.waiting--;
}

static pgw_fleet_wait *index_find(pgw_fleet *fleet, const char *arn)
{
    for (pgw_fleet_wait *w = fleet->index[bucket_of(arn)]; w; w = w->hnext)
        if (strcmp(w->arn, arn) == 0)
            return w;
    return NULL;
}

/* Frees a detached wait once nothing can reach it any more. */
static void release_if_done(pgw_fleet_wait *w)
{
    if (!w->cb && w->replies_out == 0 && !w->in_acquire)
        wait_release(w);
}

/* Detaches the wait (no more callbacks, out of the index), tells the caller, then frees it
 * unless replies are still due. The outcome may borrow the wait's value: release comes last. */
static void wait_finish(pgw_fleet_wait *w, const pgw_fleet_outcome *outcome)
{
    pgw_fleet_cb cb = w->cb;
    w->cb = NULL;
    index_remove(w);
    if (w->takeover_timer)
        event_del(w->takeover_timer);
    if (cb)
        cb(outcome, w->user_data);
    release_if_done(w);
}

static void finish_fetch(pgw_fleet_wait *w, int holds_lease)
{
    pgw_fleet_outcome o = {.verdict = PGW_FLEET_FETCH, .holds_lease = holds_lease};
    if (holds_lease) {
        w->fleet->stats.leases_won++;
        if (w->attempts > 1) {
            o.taken_over = 1;
            w->fleet->stats.leases_taken_over++;
        }
    } else {
        w->fleet->stats.fallbacks++;
    }
    wait_finish(w, &o);
}

static void finish_filled(pgw_fleet_wait *w, const uint8_t *entry, size_t len)
{
    w->fleet->stats.leases_waited++;
    pgw_fleet_outcome o = {.verdict = PGW_FLEET_FILLED, .entry = entry, .entry_len = len};
    wait_finish(w, &o);
}

static int lease_key(const char *arn, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%s", PGW_REDIS_LEASE_PREFIX, arn);
    return n > 0 && (size_t)n < cap ? n : -1;
}

static void ignore_reply(const struct redisReply *reply, void *user_data)
{
}

static void release_lease(pgw_fleet *fleet, const char *arn)
{
    char key[ARN_KEY_MAX];
    if (lease_key(arn, key, sizeof(key)) < 0)
        return;
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    pgw_redis_tier_command(fleet->redis, 2, argv, lens, ignore_reply, NULL);
}

static int value_is_fresh(const uint8_t *value, size_t len)
{
    pgw_cache_entry e;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return pgw_cache_entry_decode(value, len, &e) == 0 && pgw_cache_entry_is_fresh(&e, now_ms);
}

static void start_attempt(pgw_fleet_wait *w);

static void on_takeover_timer(evutil_socket_t fd, short what, void *arg)
{
    start_attempt(arg);
}

/* All three replies of an attempt are in: decide. */
static void attempt_done(pgw_fleet_wait *w)
{
    int fresh = w->value && value_is_fresh(w->value, w->value_len);
    if (w->redis_failed) {
        finish_fetch(w, 0);
    } else if (w->won) {
        if (fresh && w->accept_cached) {
            /* The previous holder finished (and released) between our miss and our SET. */
            release_lease(w->fleet, w->arn);
            finish_filled(w, w->value, w->value_len);
        } else {
            finish_fetch(w, 1);
        }
    } else if (fresh && w->accept_cached) {
        finish_filled(w, w->value, w->value_len);
    } else {
        /* Someone else fetches: wait for its notice, or for its lease to run out. */
        long long wait_ms =
            pgw_fleet_takeover_wait_ms(w->pttl_ms, w->fleet->lease_ms, (unsigned)rand());
        struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000};
        if (!w->takeover_timer)
            w->takeover_timer = evtimer_new(w->fleet->base, on_takeover_timer, w);
        if (!w->takeover_timer || evtimer_add(w->takeover_timer, &tv) != 0)
            finish_fetch(w, 0);
    }
}

/* One reply of the pipeline. Replies come in order: SET, GET, PTTL. */
static void on_reply(const struct redisReply *reply, int which, pgw_fleet_wait *w)
{
    w->replies_out--;
    if (!w->cb) { /* answered (by a notice) or cancelled while the pipeline was out */
        release_if_done(w);
        return;
    }
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        w->redis_failed = 1;
    } else if (which == 0) {
        w->won = pgw_fleet_lease_won(reply);
    } else if (which == 1) {
        if (reply->type == REDIS_REPLY_STRING && reply->len > 0) {
            free(w->value);
            w->value = malloc(reply->len);
            if (w->value) {
                memcpy(w->value, reply->str, reply->len);
                w->value_len = reply->len;
            }
        }
    } else if (reply->type == REDIS_REPLY_INTEGER) {
        w->pttl_ms = reply->integer;
    }
    if (w->replies_out == 0)
        attempt_done(w);
}

static void on_set_reply(const struct redisReply *r, void *w)
{
    on_reply(r, 0, w);
}

static void on_get_reply(const struct redisReply *r, void *w)
{
    on_reply(r, 1, w);
}

static void on_pttl_reply(const struct redisReply *r, void *w)
{
    on_reply(r, 2, w);
}

static void start_attempt(pgw_fleet_wait *w)
{
    pgw_fleet *fleet = w->fleet;
    if (!fleet->stats.subscribed || !fleet->redis) {
        /* Without pub/sub nobody would tell us when the holder is done. */
        finish_fetch(w, 0);
        return;
    }
    char lkey[ARN_KEY_MAX], vkey[ARN_KEY_MAX], px[24];
    if (lease_key(w->arn, lkey, sizeof(lkey)) < 0 ||
        pgw_redis_key_for_arn(w->arn, vkey, sizeof(vkey)) < 0) {
        finish_fetch(w, 0);
        return;
    }
    snprintf(px, sizeof(px), "%d", fleet->lease_ms);
    w->attempts++;
    w->redis_failed = w->won = 0;
    w->pttl_ms = -2;
    free(w->value);
    w->value = NULL;
    w->value_len = 0;
    w->replies_out = 3;

    const char *set_argv[] = {"SET", lkey, fleet->replica_id, "NX", "PX", px};
    size_t set_lens[] = {3, strlen(lkey), strlen(fleet->replica_id), 2, 2, strlen(px)};
    const char *get_argv[] = {"GET", vkey};
    size_t get_lens[] = {3, strlen(vkey)};
    const char *pttl_argv[] = {"PTTL", lkey};
    size_t pttl_lens[] = {4, strlen(lkey)};
    /* A command that cannot be sent answers NULL at once; the wait survives those calls
     * because replies_out keeps it allocated until the third. */
    pgw_redis_tier_command(fleet->redis, 6, set_argv, set_lens, on_set_reply, w);
    pgw_redis_tier_command(fleet->redis, 2, get_argv, get_lens, on_get_reply, w);
    pgw_redis_tier_command(fleet->redis, 2, pttl_argv, pttl_lens, on_pttl_reply, w);
}

pgw_fleet_wait *pgw_fleet_acquire(pgw_fleet *fleet, const char *arn, int accept_cached,
                                  pgw_fleet_cb cb, void *user_data)
{
    size_t arn_len = strlen(arn);
    pgw_fleet_wait *w = calloc(1, sizeof(*w) + arn_len + 1);
    if (!w) {
        pgw_fleet_outcome o = {.verdict = PGW_FLEET_FETCH};
        fleet->stats.fallbacks++;
        cb(&o, user_data);
        return NULL;
    }
    w->fleet = fleet;
    w->cb = cb;
    w->user_data = user_data;
    w->accept_cached = accept_cached;
    memcpy(w->arn, arn, arn_len + 1);
    w->all_next = fleet->all;
    if (w->all_next)
        w->all_next->all_prev = w;
    fleet->all = w;
    size_t b = bucket_of(arn);
    w->hnext = fleet->index[b];
    fleet->index[b] = w;
    w->indexed = 1;
    fleet->stats.waiting++;

    w->in_acquire = 1;
    start_attempt(w);
    w->in_acquire = 0;
    if (w->cb)
        return w; /* still waiting: hand the handle out */
    release_if_done(w);
    return NULL;
}

void pgw_fleet_cancel(pgw_fleet_wait *w)
{
    if (!w || !w->cb)
        return;
    w->cb = NULL;
    index_remove(w);
    if (w->takeover_timer)
        event_del(w->takeover_timer);
    release_if_done(w);
}

static void publish(pgw_fleet *fleet, const PersonalizeGateway__Fleet__V1__FillNotice *n)
{
    size_t len = personalize_gateway__fleet__v1__fill_notice__get_packed_size(n);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    personalize_gateway__fleet__v1__fill_notice__pack(n, buf);
    if (pgw_redis_tier_publish(fleet->redis, PGW_REDIS_FILL_CHANNEL, buf, len) == 0)
        fleet->stats.notices_published++;
    free(buf);
}

void pgw_fleet_publish_fill(pgw_fleet *fleet, const char *arn, const uint8_t *entry,
                            size_t entry_len)
{
    PersonalizeGateway__Fleet__V1__FillNotice n = PERSONALIZE_GATEWAY__FLEET__V1__FILL_NOTICE__INIT;
    n.batch_inference_job_arn = (char *)arn;
    n.cache_entry.data = (uint8_t *)entry;
    n.cache_entry.len = entry_len;
    n.replica_id = fleet->replica_id;
    publish(fleet, &n);
    release_lease(fleet, arn);
}

void pgw_fleet_publish_failure(pgw_fleet *fleet, const char *arn, int code, const char *message)
{
    /* Release first: a waiter that retries on the notice must find the lease free. */
    release_lease(fleet, arn);
    PersonalizeGateway__Fleet__V1__FillNotice n = PERSONALIZE_GATEWAY__FLEET__V1__FILL_NOTICE__INIT;
    n.batch_inference_job_arn = (char *)arn;
    n.code = code;
    n.message = (char *)(message ? message : "");
    n.replica_id = fleet->replica_id;
    publish(fleet, &n);
}

/* Copies a failure message for callers: bounded (cut at a character boundary), control
 * characters as spaces, and dropped ("" ) unless the result is UTF-8. */
static void copy_message(const char *src, char *dst, size_t cap)
{
    size_t n = strlen(src);
    if (n > cap - 1) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--; /* src[n] is where the cut falls: never inside a character */
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    dst[n] = '\0';
    json_t *check = json_stringn(dst, n);
    if (!check)
        dst[0] = '\0';
    json_decref(check);
}

int pgw_fleet_notice_parse(const uint8_t *payload, size_t len, pgw_fleet_notice *out)
{
    memset(out, 0, sizeof(*out));
    static const uint8_t empty[1];
    PersonalizeGateway__Fleet__V1__FillNotice *n =
        personalize_gateway__fleet__v1__fill_notice__unpack(NULL, len, payload ? payload : empty);
    if (!n)
        return -1;
    int ok = n->batch_inference_job_arn && n->batch_inference_job_arn[0] &&
             (n->cache_entry.len > 0 || (n->code >= 1 && n->code <= 16));
    if (!ok) {
        personalize_gateway__fleet__v1__fill_notice__free_unpacked(n, NULL);
        return -1;
    }
    out->msg = n;
    out->arn = n->batch_inference_job_arn;
    out->entry = n->cache_entry.len > 0 ? n->cache_entry.data : NULL;
    out->entry_len = n->cache_entry.len;
    out->code = out->entry_len ? 0 : n->code;
    if (!out->entry_len && n->message)
        copy_message(n->message, out->message, sizeof(out->message));
    out->replica_id = n->replica_id ? n->replica_id : "";
    return 0;
}

void pgw_fleet_notice_cleanup(pgw_fleet_notice *notice)
{
    if (notice->msg)
        personalize_gateway__fleet__v1__fill_notice__free_unpacked(notice->msg, NULL);
    memset(notice, 0, sizeof(*notice));
}

long long pgw_fleet_takeover_wait_ms(long long pttl_ms, int lease_ms, unsigned spread)
{
    long long lease = lease_ms > 0 ? lease_ms : 1;
    long long wait_ms = pttl_ms > 0 ? pttl_ms : pttl_ms == -2 ? 1 : lease;
    /* A PTTL beyond the lease life would park the waiter, and a PTTL of 2^63 - 1 plus the
     * spread was a signed overflow. */
    if (wait_ms > lease)
        wait_ms = lease;
    return wait_ms + 5 + (long long)(spread % 20); /* spread the replicas' retries */
}

int pgw_fleet_lease_won(const struct redisReply *reply)
{
    return reply && reply->type == REDIS_REPLY_STATUS && reply->len == 2 &&
           memcmp(reply->str, "OK", 2) == 0;
}

void pgw_fleet_on_message(const uint8_t *payload, size_t len, void *user_data)
{
    pgw_fleet *fleet = user_data;
    if (!fleet)
        return;
    pgw_fleet_notice n;
    if (pgw_fleet_notice_parse(payload, len, &n) != 0) {
        fleet->stats.notices_malformed++;
        return;
    }
    fleet->stats.notices_received++;
    if (fleet->listener && n.entry_len > 0)
        fleet->listener(n.arn, n.entry, n.entry_len, fleet->listener_ud);
    pgw_fleet_wait *w = index_find(fleet, n.arn);
    if (w && strcmp(n.replica_id, fleet->replica_id) != 0) {
        if (n.entry_len > 0) {
            finish_filled(w, n.entry, n.entry_len);
        } else {
            fleet->stats.leases_waited++;
            pgw_fleet_outcome o = {
                .verdict = PGW_FLEET_FAILED,
                .code = n.code,
                .message = n.message[0] ? n.message : "upstream fetch failed",
            };
            wait_finish(w, &o);
        }
    }
    pgw_fleet_notice_cleanup(&n);
}

void pgw_fleet_on_subscription(int up, void *user_data)
{
    pgw_fleet *fleet = user_data;
    if (!fleet)
        return;
    fleet->stats.subscribed = up;
    if (up)
        return;
    /* Notices may be lost from now on: nobody waits for one. */
    for (size_t b = 0; b < INDEX_BUCKETS; b++) {
        /* Rescan the chain after each answer: the callback may add or end other waits. Waits
         * with a pipeline out decide when it returns, and see subscribed == 0 next time. */
        for (;;) {
            pgw_fleet_wait *w = fleet->index[b];
            while (w && w->replies_out > 0)
                w = w->hnext;
            if (!w)
                break;
            finish_fetch(w, 0);
        }
    }
}

void pgw_fleet_set_listener(pgw_fleet *fleet, pgw_fleet_listener fn, void *user_data)
{
    fleet->listener = fn;
    fleet->listener_ud = user_data;
}

/* --- poll roles --- */

static void role_release(pgw_fleet_role *r)
{
    pgw_fleet *fleet = r->fleet;
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        fleet->roles = r->all_next;
    if (r->all_next)
        r->all_next->all_prev = r->all_prev;
    free(r);
}

static void role_answer(pgw_fleet_role *r, int poller, int changed_hands)
{
    pgw_fleet_role_cb cb = r->cb;
    r->cb = NULL;
    if (cb)
        cb(poller, changed_hands, r->user_data);
    if (r->replies_out == 0 && !r->in_ask)
        role_release(r);
}

static void on_role_renewed(const struct redisReply *reply, void *user_data)
{
    pgw_fleet_role *r = user_data;
    r->replies_out--;
    role_answer(r, 1, 0);
}

/* SET NX and GET are both in: won, ours already (renew), or someone else's. */
static void role_decide(pgw_fleet_role *r)
{
    if (!r->cb) {
        if (r->replies_out == 0 && !r->in_ask)
            role_release(r);
        return;
    }
    if (r->failed) {
        role_answer(r, 1, 0); /* Redis cannot say: poll for ourselves */
    } else if (r->won) {
        r->fleet->stats.poll_roles_won++;
        role_answer(r, 1, 1);
    } else if (r->ours) {
        const char *argv[] = {"PEXPIRE", r->key, r->px};
        size_t lens[] = {7, strlen(r->key), strlen(r->px)};
        r->replies_out++;
        pgw_redis_tier_command(r->fleet->redis, 3, argv, lens, on_role_renewed, r);
    } else {
        role_answer(r, 0, 0);
    }
}

static void on_role_reply(const struct redisReply *reply, int which, pgw_fleet_role *r)
{
    r->replies_out--;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        r->failed = 1;
    else if (which == 0)
        r->won = pgw_fleet_lease_won(reply);
    else
        r->ours = reply->type == REDIS_REPLY_STRING && reply->len == strlen(r->fleet->replica_id) &&
                  memcmp(reply->str, r->fleet->replica_id, reply->len) == 0;
    if (r->replies_out == 0)
        role_decide(r);
}

static void on_role_set(const struct redisReply *reply, void *r)
{
    on_role_reply(reply, 0, r);
}

static void on_role_get(const struct redisReply *reply, void *r)
{
    on_role_reply(reply, 1, r);
}

pgw_fleet_role *pgw_fleet_poll_role(pgw_fleet *fleet, const char *arn, int lease_ms,
                                    pgw_fleet_role_cb cb, void *user_data)
{
    pgw_fleet_role *r = calloc(1, sizeof(*r));
    int n = r ? snprintf(r->key, sizeof(r->key), "%s%s", PGW_REDIS_POLL_PREFIX, arn) : -1;
    if (!r || n <= 0 || (size_t)n >= sizeof(r->key) || !fleet->redis) {
        free(r);
        cb(1, 0, user_data);
        return NULL;
    }
    r->fleet = fleet;
    r->cb = cb;
    r->user_data = user_data;
    snprintf(r->px, sizeof(r->px), "%d", lease_ms > 0 ? lease_ms : 1);
    r->all_next = fleet->roles;
    if (r->all_next)
        r->all_next->all_prev = r;
    fleet->roles = r;
    const char *set_argv[] = {"SET", r->key, fleet->replica_id, "NX", "PX", r->px};
    size_t set_lens[] = {3, strlen(r->key), strlen(fleet->replica_id), 2, 2, strlen(r->px)};
    const char *get_argv[] = {"GET", r->key};
    size_t get_lens[] = {3, strlen(r->key)};
    r->in_ask = 1;
    r->replies_out = 2;
    pgw_redis_tier_command(fleet->redis, 6, set_argv, set_lens, on_role_set, r);
    pgw_redis_tier_command(fleet->redis, 2, get_argv, get_lens, on_role_get, r);
    r->in_ask = 0;
    if (r->cb)
        return r;
    if (r->replies_out == 0)
        role_release(r);
    return NULL;
}

void pgw_fleet_role_cancel(pgw_fleet_role *r)
{
    if (!r || !r->cb)
        return;
    r->cb = NULL;
    if (r->replies_out == 0 && !r->in_ask)
        role_release(r);
}

void pgw_fleet_stats_get(const pgw_fleet *fleet, pgw_fleet_stats *out)
{
    *out = fleet->stats;
}
