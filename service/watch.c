/* The watch registry; see watch.h.
 *
 * Lifetimes: a group lives while it has watchers. Watcher callbacks may detach any watcher
 * (themselves included) and attach new ones, so a group that is delivering (or inside a call
 * that may answer synchronously) only marks what leaves, and sweeps when the outermost such
 * frame returns (group_settle). */
#include "service/watch.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/entry.h"
#include "cache/fleet.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/clock.h"
#include "service/lookup.h"
#include "service/metrics.h"

#define GROUP_BUCKETS 1024
/* A poll that AWS keeps failing backs off up to this many intervals. */
#define MAX_BACKOFF_FACTOR 4
/* A poll's own deadline: the upstream retries get time even with a short interval. */
#define POLL_DEADLINE_MIN_MS 10000

/* What "changed" compares: the job's status and last-updated time. */
typedef struct job_key {
    int valid;
    char status[64];
    int64_t updated_s;
    int32_t updated_ns;
} job_key;

typedef struct group group;

struct pgw_watcher {
    group *g;
    pgw_watcher *prev, *next;
    pgw_watch_cb cb; /* NULL once detached (freed at the next settle) */
    void *user_data;
    job_key sent;
};

struct group {
    pgw_watch_registry *reg;
    group *hnext; /* bucket chain */
    pgw_watcher *watchers;
    size_t live;         /* watchers with a callback */
    struct event *timer; /* the poll loop's tick, every interval */
    struct event *catch_up;
    pgw_lookup_req *poll;
    int polling;
    pgw_lookup_poll_mode poll_mode;
    pgw_fleet_role *role;
    int failures;
    int64_t next_fetch_ms; /* backoff: no fetch before then */
    int busy;              /* delivering or inside a call that may call back: defer frees */
    /* The newest job this group has seen, for watchers that attach with an older one. */
    uint8_t *latest;
    size_t latest_len;
    job_key latest_key;
    char arn[];
};

struct pgw_watch_registry {
    pgw_watch_options opt;
    group *buckets[GROUP_BUCKETS];
    pgw_watch_stats stats;
    int shut_down;
};

static size_t bucket_of(const char *arn)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)arn; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)(h % GROUP_BUCKETS);
}

static group *group_find(pgw_watch_registry *reg, const char *arn)
{
    for (group *g = reg->buckets[bucket_of(arn)]; g; g = g->hnext)
        if (strcmp(g->arn, arn) == 0)
            return g;
    return NULL;
}

static int key_of(const uint8_t *job_pb, size_t len, job_key *out)
{
    memset(out, 0, sizeof(*out));
    PersonalizeGateway__V1__BatchInferenceJob *job =
        personalize_gateway__v1__batch_inference_job__unpack(NULL, len, job_pb);
    if (!job)
        return -1;
    snprintf(out->status, sizeof(out->status), "%s", job->status ? job->status : "");
    if (job->last_updated_date_time) {
        out->updated_s = job->last_updated_date_time->seconds;
        out->updated_ns = job->last_updated_date_time->nanos;
    }
    out->valid = 1;
    personalize_gateway__v1__batch_inference_job__free_unpacked(job, NULL);
    return 0;
}

static int key_equal(const job_key *a, const job_key *b)
{
    return a->valid == b->valid && a->updated_s == b->updated_s && a->updated_ns == b->updated_ns &&
           strcmp(a->status, b->status) == 0;
}

/* Nonzero when `k` is older than `than` by its last-updated time: what a lagging tier says. */
static int key_older(const job_key *k, const job_key *than)
{
    if (!than->valid)
        return 0;
    return k->updated_s < than->updated_s ||
           (k->updated_s == than->updated_s && k->updated_ns < than->updated_ns);
}

/* Nonzero when a watcher that was last sent `sent` should be sent `k`. */
static int key_news(const job_key *k, const job_key *sent)
{
    return !key_equal(k, sent) && !key_older(k, sent);
}

static int status_is_terminal(const char *status)
{
    return strcmp(status, "ACTIVE") == 0 || strcmp(status, "CREATE FAILED") == 0;
}

int pgw_watch_job_is_terminal(const uint8_t *job_pb, size_t len)
{
    job_key k;
    return key_of(job_pb, len, &k) == 0 && status_is_terminal(k.status);
}

static void publish_gauges(const pgw_watch_registry *reg)
{
    pgw_metrics_set_watch(reg->stats.streams, reg->stats.arns);
}

pgw_watch_registry *pgw_watch_registry_new(const pgw_watch_options *options)
{
    pgw_watch_registry *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return NULL;
    reg->opt = *options;
    if (reg->opt.poll_interval_ms <= 0)
        reg->opt.poll_interval_ms = 1000;
    return reg;
}

/* --- groups --- */

static void group_unlink_and_free(group *g)
{
    pgw_watch_registry *reg = g->reg;
    group **slot = &reg->buckets[bucket_of(g->arn)];
    while (*slot && *slot != g)
        slot = &(*slot)->hnext;
    if (*slot)
        *slot = g->hnext;
    reg->stats.arns--;
    if (g->poll)
        pgw_lookup_cancel(g->poll);
    pgw_fleet_role_cancel(g->role);
    if (g->timer)
        event_free(g->timer);
    if (g->catch_up)
        event_free(g->catch_up);
    while (g->watchers) {
        pgw_watcher *w = g->watchers;
        g->watchers = w->next;
        if (w->cb)
            reg->stats.streams--; /* dropped without a callback (registry freed) */
        free(w);
    }
    free(g->latest);
    free(g);
    publish_gauges(reg);
}

/* Frees detached watchers, and the group once nobody watches; only when no frame of this
 * group is on the stack. Returns 1 if the group is gone. */
static int group_settle(group *g)
{
    if (g->busy)
        return 0;
    for (pgw_watcher *w = g->watchers; w;) {
        pgw_watcher *next = w->next;
        if (!w->cb) {
            if (w->prev)
                w->prev->next = w->next;
            else
                g->watchers = w->next;
            if (w->next)
                w->next->prev = w->prev;
            free(w);
        }
        w = next;
    }
    if (g->live == 0) {
        group_unlink_and_free(g);
        return 1;
    }
    return 0;
}

static void watcher_drop(pgw_watcher *w)
{
    if (!w->cb)
        return;
    w->cb = NULL;
    w->g->live--;
    w->g->reg->stats.streams--;
    publish_gauges(w->g->reg);
}

/* Remembers `job` as the newest the group has seen, unless it knows a newer one. */
static void remember(group *g, const uint8_t *job_pb, size_t len, const job_key *k)
{
    if (g->latest && (key_equal(k, &g->latest_key) || key_older(k, &g->latest_key)))
        return;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return;
    memcpy(copy, job_pb, len);
    free(g->latest);
    g->latest = copy;
    g->latest_len = len;
    g->latest_key = *k;
}

/* Tells every watcher for whom `job` is news; a terminal job ends them. */
static void deliver_job(group *g, const uint8_t *job_pb, size_t len)
{
    job_key k;
    if (key_of(job_pb, len, &k) != 0)
        return;
    remember(g, job_pb, len, &k);
    int terminal = status_is_terminal(k.status);
    pgw_watch_update u = {
        .code = PGW_OK,
        .message = "OK",
        .job_pb = job_pb,
        .job_pb_len = len,
        .final = terminal,
    };
    g->busy++;
    for (pgw_watcher *w = g->watchers; w; w = w->next) {
        if (!w->cb || !key_news(&k, &w->sent))
            continue;
        w->sent = k;
        pgw_watch_cb cb = w->cb;
        void *ud = w->user_data;
        if (terminal)
            watcher_drop(w);
        g->reg->stats.updates_sent++;
        cb(&u, ud);
    }
    g->busy--;
}

/* Ends every watcher of the group with `code`. */
static void deliver_final(group *g, pgw_code code, const char *message)
{
    pgw_watch_update u = {.code = code, .message = message, .final = 1};
    g->busy++;
    for (pgw_watcher *w = g->watchers; w; w = w->next) {
        if (!w->cb)
            continue;
        pgw_watch_cb cb = w->cb;
        void *ud = w->user_data;
        watcher_drop(w);
        cb(&u, ud);
    }
    g->busy--;
}

/* An encoded cache entry (a fill notice). */
static void deliver_entry(group *g, const uint8_t *bytes, size_t len)
{
    pgw_cache_entry e;
    if (pgw_cache_entry_decode(bytes, len, &e) != 0)
        return;
    if (e.kind == PGW_CACHE_ENTRY_POSITIVE)
        deliver_job(g, e.job_pb, e.job_pb_len);
    else
        deliver_final(g, PGW_NOT_FOUND, "the batch inference job no longer exists");
}

/* --- the poll loop --- */

static void on_poll(const pgw_lookup_result *r, void *user_data)
{
    group *g = user_data;
    pgw_watch_registry *reg = g->reg;
    g->poll = NULL;
    g->polling = 0;
    g->busy++;
    if (r->code == PGW_OK) {
        g->failures = 0;
        g->next_fetch_ms = 0;
        deliver_job(g, r->job_pb, r->job_pb_len);
    } else if (r->code == PGW_NOT_FOUND) {
        deliver_final(g, PGW_NOT_FOUND, r->message);
    } else if (g->poll_mode == PGW_LOOKUP_POLL_FETCH) {
        /* Throttled, 5xx, network, no credentials yet: the streams stay, fetches back off.
         * (A peek that finds nothing fresh is no failure: the poller refreshes the cache.) */
        int factor = 1;
        for (int i = 0; i < g->failures && factor < MAX_BACKOFF_FACTOR; i++)
            factor *= 2;
        g->failures++;
        g->next_fetch_ms = pgw_now_mono_ms() + (int64_t)factor * reg->opt.poll_interval_ms -
                           reg->opt.poll_interval_ms / 2;
        reg->stats.poll_failures++;
    }
    g->busy--;
    group_settle(g);
}

static void start_poll(group *g, pgw_lookup_poll_mode mode)
{
    pgw_watch_registry *reg = g->reg;
    if (g->polling)
        return; /* the last one is still out (slow upstream, retries): this tick skips */
    if (mode == PGW_LOOKUP_POLL_FETCH && g->next_fetch_ms && pgw_now_mono_ms() < g->next_fetch_ms)
        return; /* backing off */
    if (mode == PGW_LOOKUP_POLL_FETCH) {
        reg->stats.polls++;
        pgw_metrics_watch_poll("fetch");
    } else {
        reg->stats.peeks++;
        pgw_metrics_watch_poll("peek");
    }
    int64_t budget = reg->opt.poll_interval_ms;
    if (budget < POLL_DEADLINE_MIN_MS)
        budget = POLL_DEADLINE_MIN_MS;
    g->polling = 1;
    g->poll_mode = mode;
    g->busy++;
    pgw_lookup_req *req =
        pgw_lookup_poll(reg->opt.lookup, g->arn, mode, pgw_now_mono_ms() + budget, on_poll, g);
    g->busy--;
    if (g->polling)
        g->poll = req;
    group_settle(g);
}

static void on_role(int poller, int changed_hands, void *user_data)
{
    group *g = user_data;
    g->role = NULL;
    if (changed_hands) {
        g->reg->stats.poller_changes++;
        pgw_metrics_watch_poller_change();
    }
    start_poll(g, poller ? PGW_LOOKUP_POLL_FETCH : PGW_LOOKUP_POLL_PEEK);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    group *g = arg;
    pgw_watch_registry *reg = g->reg;
    if (!reg->opt.fleet) {
        start_poll(g, PGW_LOOKUP_POLL_FETCH);
        return;
    }
    if (g->role)
        return; /* Redis has not answered the last tick's question yet */
    /* Held for two intervals and renewed at every tick, so it lapses only when its holder
     * stops ticking (dies, or its last watcher left). */
    g->busy++;
    pgw_fleet_role *role =
        pgw_fleet_poll_role(reg->opt.fleet, g->arn, 2 * reg->opt.poll_interval_ms, on_role, g);
    g->busy--;
    if (role)
        g->role = role;
    group_settle(g);
}

/* A watcher attached with an older state than the group's newest: tell it (and any other such
 * watcher) now, from the loop, never inside pgw_watch_attach. */
static void on_catch_up(evutil_socket_t fd, short what, void *arg)
{
    group *g = arg;
    if (!g->latest)
        return;
    /* A copy: deliver_job may replace g->latest under us. */
    uint8_t *bytes = malloc(g->latest_len ? g->latest_len : 1);
    if (!bytes)
        return;
    memcpy(bytes, g->latest, g->latest_len);
    size_t len = g->latest_len;
    uint64_t before = g->reg->stats.updates_sent;
    g->busy++;
    deliver_job(g, bytes, len);
    g->busy--;
    g->reg->stats.catch_ups += g->reg->stats.updates_sent - before;
    free(bytes);
    group_settle(g);
}

static group *group_new(pgw_watch_registry *reg, const char *arn)
{
    size_t len = strlen(arn);
    group *g = calloc(1, sizeof(*g) + len + 1);
    if (!g)
        return NULL;
    g->reg = reg;
    memcpy(g->arn, arn, len + 1);
    g->timer = event_new(reg->opt.base, -1, EV_PERSIST, on_tick, g);
    g->catch_up = evtimer_new(reg->opt.base, on_catch_up, g);
    int64_t ms = reg->opt.poll_interval_ms;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    /* The watcher's first message is the lookup's answer of a moment ago: poll next interval. */
    if (!g->timer || !g->catch_up || event_add(g->timer, &tv) != 0) {
        if (g->timer)
            event_free(g->timer);
        if (g->catch_up)
            event_free(g->catch_up);
        free(g);
        return NULL;
    }
    size_t b = bucket_of(arn);
    g->hnext = reg->buckets[b];
    reg->buckets[b] = g;
    reg->stats.arns++;
    publish_gauges(reg);
    return g;
}

/* --- the API --- */

pgw_watch_reserve_result pgw_watch_reserve(pgw_watch_registry *reg)
{
    if (reg->shut_down)
        return PGW_WATCH_SHUT_DOWN;
    if (reg->stats.streams >= (size_t)(reg->opt.max_streams > 0 ? reg->opt.max_streams : 0))
        return PGW_WATCH_FULL;
    reg->stats.streams++;
    publish_gauges(reg);
    return PGW_WATCH_RESERVED;
}

void pgw_watch_unreserve(pgw_watch_registry *reg)
{
    if (reg->stats.streams > 0)
        reg->stats.streams--;
    publish_gauges(reg);
}

int pgw_watch_max_streams(const pgw_watch_registry *reg)
{
    return reg->opt.max_streams;
}

pgw_watcher *pgw_watch_attach(pgw_watch_registry *reg, const char *arn, const uint8_t *sent_pb,
                              size_t sent_len, pgw_watch_cb cb, void *user_data)
{
    group *g = reg->shut_down ? NULL : group_find(reg, arn);
    if (reg->shut_down || (!g && !(g = group_new(reg, arn)))) {
        pgw_watch_unreserve(reg);
        return NULL;
    }
    pgw_watcher *w = calloc(1, sizeof(*w));
    if (!w) {
        pgw_watch_unreserve(reg);
        group_settle(g);
        return NULL;
    }
    w->g = g;
    w->cb = cb;
    w->user_data = user_data;
    key_of(sent_pb, sent_len, &w->sent);
    w->next = g->watchers;
    if (w->next)
        w->next->prev = w;
    g->watchers = w;
    g->live++;
    if (g->latest && key_news(&g->latest_key, &w->sent))
        event_active(g->catch_up, EV_TIMEOUT, 0);
    return w;
}

void pgw_watch_detach(pgw_watcher *w)
{
    if (!w)
        return;
    watcher_drop(w);
    group_settle(w->g); /* the last watcher gone: the poll loop stops */
}

void pgw_watch_on_fill(const char *arn, const uint8_t *entry, size_t len, void *user_data)
{
    pgw_watch_registry *reg = user_data;
    group *g = group_find(reg, arn);
    if (!g)
        return;
    reg->stats.notices++;
    g->busy++;
    deliver_entry(g, entry, len);
    g->busy--;
    group_settle(g);
}

void pgw_watch_shutdown(pgw_watch_registry *reg)
{
    reg->shut_down = 1;
    for (size_t b = 0; b < GROUP_BUCKETS; b++) {
        /* Each pass ends one group (settle unlinks it); attach refuses from now on. */
        group *g;
        while ((g = reg->buckets[b])) {
            g->busy++;
            deliver_final(g, PGW_UNAVAILABLE, "the gateway is shutting down: reconnect");
            g->busy--;
            if (!group_settle(g))
                group_unlink_and_free(g);
        }
    }
}

int pgw_watch_is_shut_down(const pgw_watch_registry *reg)
{
    return reg->shut_down;
}

void pgw_watch_registry_free(pgw_watch_registry *reg)
{
    if (!reg)
        return;
    for (size_t b = 0; b < GROUP_BUCKETS; b++)
        while (reg->buckets[b])
            group_unlink_and_free(reg->buckets[b]);
    free(reg);
}

void pgw_watch_stats_get(const pgw_watch_registry *reg, pgw_watch_stats *out)
{
    *out = reg->stats;
}
