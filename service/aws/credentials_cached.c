#include "service/aws/credentials_cached.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "service/clock.h"
#include "service/log.h"

/* A caller with no usable credentials right after a failed fetch gets the error at once
 * instead of starting another fetch: a burst of calls must not hammer a failing source. */
#define MIN_FETCH_GAP_MS 1000

typedef struct waiter {
    pgw_credentials_cb cb;
    void *user_data;
    struct waiter *next;
} waiter;

typedef struct cached_provider {
    pgw_credentials_provider base;
    pgw_credentials_provider *source;
    char name[32];
    int64_t window_ms, margin_ms, backoff_base_ms, backoff_max_ms;
    pgw_credentials_change_cb on_change;
    void *on_change_data;
    int64_t (*now_fn)(void *);
    void *clock_data;

    pgw_credentials *current;
    int64_t installed_ms;
    int refreshing;
    int force;        /* invalidated: the next get waits for a refresh */
    int hold_waiters; /* the refresh in flight was forced: callers wait for it */
    waiter *head, **tail;
    int n_waiting;
    int64_t next_attempt_ms; /* 0: none scheduled */
    int64_t last_attempt_ms;
    char last_error[512];
    struct event *timer;
    uint64_t rng;
    pgw_credentials_cached_stats stats;
} cached_provider;

static int64_t now_ms(const cached_provider *c)
{
    return c->now_fn ? c->now_fn(c->clock_data) : pgw_now_wall_ms();
}

static int usable(const cached_provider *c, int64_t now)
{
    return c->current && !pgw_credentials_expired(c->current, now, c->margin_ms);
}

static uint64_t next_random(cached_provider *c)
{
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ULL;
}

static void format_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, len, "?");
}

static void reschedule(cached_provider *c, int64_t now)
{
    int64_t due = 0;
    if (!c->refreshing && c->next_attempt_ms)
        due = c->next_attempt_ms;
    if (c->current && c->current->expires_wall_ms) {
        int64_t drop_at = c->current->expires_wall_ms - c->margin_ms;
        if (!due || drop_at < due)
            due = drop_at;
    }
    if (!due) {
        evtimer_del(c->timer);
        return;
    }
    int64_t delay = due > now ? due - now : 0;
    struct timeval tv = {(time_t)(delay / 1000), (suseconds_t)((delay % 1000) * 1000)};
    evtimer_add(c->timer, &tv);
}

/* When to refresh credentials obtained at `installed` that expire at `expires`. */
static int64_t refresh_at(const cached_provider *c, int64_t installed, int64_t expires, int64_t now)
{
    int64_t ahead = expires - c->window_ms;
    int64_t half_life = installed + (expires - installed) / 2;
    int64_t at = ahead > half_life ? ahead : half_life;
    int64_t latest = expires - c->margin_ms - 1000;
    if (at > latest)
        at = latest;
    if (at < now + 1000)
        at = now + 1000; /* never a refresh loop, even for credentials about to lapse */
    return at;
}

static int64_t backoff_ms(cached_provider *c)
{
    int shift = c->stats.consecutive_failures - 1;
    if (shift > 20)
        shift = 20;
    int64_t d = c->backoff_base_ms << (shift < 0 ? 0 : shift);
    if (d > c->backoff_max_ms)
        d = c->backoff_max_ms;
    return d / 2 + (int64_t)(next_random(c) % (uint64_t)(d / 2 + 1));
}

static void serve_waiters(cached_provider *c)
{
    /* Detach first: a callback may call get again. */
    waiter *w = c->head;
    c->head = NULL;
    c->tail = &c->head;
    c->n_waiting = 0;
    while (w) {
        waiter *next = w->next;
        int64_t now = now_ms(c);
        if (usable(c, now))
            w->cb(c->current, NULL, w->user_data);
        else
            w->cb(NULL, c->last_error[0] ? c->last_error : "no AWS credentials", w->user_data);
        free(w);
        w = next;
    }
}

static void on_source(pgw_credentials *creds, const char *error, void *user_data);

static void start_refresh(cached_provider *c, int64_t now)
{
    c->refreshing = 1;
    c->hold_waiters = c->force;
    c->force = 0;
    c->next_attempt_ms = 0;
    c->last_attempt_ms = now;
    c->stats.refreshes++;
    if (pgw_credentials_provider_get(c->source, on_source, c) != 0)
        on_source(NULL, "the credentials source could not start a fetch", c);
}

static void on_source(pgw_credentials *creds, const char *error, void *user_data)
{
    cached_provider *c = user_data;
    int64_t now = now_ms(c);
    c->refreshing = 0;
    c->hold_waiters = 0;
    if (creds && !pgw_credentials_expired(creds, now, c->margin_ms)) {
        pgw_credentials *old = c->current;
        c->current = pgw_credentials_ref(creds);
        c->installed_ms = now;
        c->stats.consecutive_failures = 0;
        c->last_error[0] = '\0';
        c->next_attempt_ms =
            creds->expires_wall_ms ? refresh_at(c, now, creds->expires_wall_ms, now) : 0;
        pgw_credentials_unref(old);
        char exp[32] = "never", next[32] = "never";
        if (creds->expires_wall_ms)
            format_time(creds->expires_wall_ms, exp, sizeof(exp));
        if (c->next_attempt_ms)
            format_time(c->next_attempt_ms, next, sizeof(next));
        pgw_log(PGW_LOG_INFO, "AWS credentials obtained",
                json_pack("{s:s, s:s, s:s, s:s}", "source", c->name, "credentials_source",
                          creds->source, "expiration", exp, "next_refresh", next));
        if (c->on_change)
            c->on_change(c->current, c->on_change_data);
    } else {
        c->stats.failures++;
        c->stats.consecutive_failures++;
        if (creds)
            snprintf(c->last_error, sizeof(c->last_error),
                     "%s returned credentials that expire too soon", c->name);
        else
            snprintf(c->last_error, sizeof(c->last_error), "%s", error ? error : "unknown error");
        int64_t delay = backoff_ms(c);
        c->next_attempt_ms = now + delay;
        pgw_log(PGW_LOG_WARN, "AWS credentials fetch failed",
                json_pack("{s:s, s:s, s:i, s:I, s:b}", "source", c->name, "error", c->last_error,
                          "consecutive_failures", c->stats.consecutive_failures, "retry_in_ms",
                          (json_int_t)delay, "still_valid", usable(c, now)));
    }
    serve_waiters(c);
    reschedule(c, now_ms(c));
}

void pgw_credentials_cached_tick(pgw_credentials_provider *p)
{
    cached_provider *c = (cached_provider *)p;
    int64_t now = now_ms(c);
    if (c->current && pgw_credentials_expired(c->current, now, c->margin_ms)) {
        pgw_credentials_unref(c->current);
        c->current = NULL;
        pgw_log(PGW_LOG_WARN, "AWS credentials expired without a replacement",
                json_pack("{s:s, s:s}", "source", c->name, "last_error",
                          c->last_error[0] ? c->last_error : "none"));
        if (c->on_change)
            c->on_change(NULL, c->on_change_data);
        if (!c->refreshing && !c->next_attempt_ms)
            c->next_attempt_ms = now;
    }
    if (!c->refreshing && c->next_attempt_ms && now >= c->next_attempt_ms)
        start_refresh(c, now);
    reschedule(c, now_ms(c));
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pgw_credentials_cached_tick(arg);
}

static int cached_get(pgw_credentials_provider *p, pgw_credentials_cb cb, void *user_data)
{
    cached_provider *c = (cached_provider *)p;
    int64_t now = now_ms(c);
    if (!c->refreshing && c->next_attempt_ms && now >= c->next_attempt_ms)
        start_refresh(c, now); /* due (the timer may lag behind a busy loop) */
    if (usable(c, now) && !c->force && !c->hold_waiters) {
        cb(c->current, NULL, user_data);
        return 0;
    }
    if (!c->refreshing && !c->force && c->stats.consecutive_failures > 0 &&
        now - c->last_attempt_ms < MIN_FETCH_GAP_MS) {
        cb(NULL, c->last_error, user_data);
        return 0;
    }
    waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return -1;
    w->cb = cb;
    w->user_data = user_data;
    *c->tail = w;
    c->tail = &w->next;
    c->n_waiting++;
    if (!c->refreshing) {
        start_refresh(c, now);
        reschedule(c, now_ms(c));
    }
    return 0;
}

static void cached_invalidate(pgw_credentials_provider *p, const pgw_credentials *rejected)
{
    cached_provider *c = (cached_provider *)p;
    if (rejected && rejected != c->current)
        return; /* already replaced: the caller's retry will get the new ones */
    if (c->refreshing) {
        c->hold_waiters = 1; /* the fetch in flight brings the replacement */
        return;
    }
    c->force = 1;
}

static void cached_destroy(pgw_credentials_provider *p)
{
    cached_provider *c = (cached_provider *)p;
    if (c->timer)
        event_free(c->timer);
    pgw_credentials_provider_free(c->source); /* cancels its fetch: on_source will not run */
    for (waiter *w = c->head; w;) {
        waiter *next = w->next;
        free(w);
        w = next;
    }
    pgw_credentials_unref(c->current);
    free(c);
}

static const pgw_credentials_provider_vtable cached_vtable = {cached_get, cached_invalidate,
                                                              cached_destroy};

pgw_credentials_provider *
pgw_credentials_provider_cached_new(const pgw_credentials_cached_options *o)
{
    cached_provider *c = calloc(1, sizeof(*c));
    if (!c) {
        pgw_credentials_provider_free(o->source);
        return NULL;
    }
    c->base.vtable = &cached_vtable;
    c->source = o->source;
    snprintf(c->name, sizeof(c->name), "%s", o->name ? o->name : "unknown");
    c->window_ms =
        o->refresh_window_ms > 0 ? o->refresh_window_ms : PGW_CREDENTIALS_REFRESH_WINDOW_MS;
    c->margin_ms = o->expiry_margin_ms > 0 ? o->expiry_margin_ms : PGW_CREDENTIALS_EXPIRY_MARGIN_MS;
    c->backoff_base_ms =
        o->backoff_base_ms > 0 ? o->backoff_base_ms : PGW_CREDENTIALS_BACKOFF_BASE_MS;
    c->backoff_max_ms = o->backoff_max_ms > 0 ? o->backoff_max_ms : PGW_CREDENTIALS_BACKOFF_MAX_MS;
    if (c->backoff_max_ms < c->backoff_base_ms)
        c->backoff_max_ms = c->backoff_base_ms;
    c->on_change = o->on_change;
    c->on_change_data = o->on_change_data;
    c->now_fn = o->now_wall_ms;
    c->clock_data = o->clock_data;
    c->tail = &c->head;
    if (getrandom(&c->rng, sizeof(c->rng), 0) != sizeof(c->rng) || c->rng == 0)
        c->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)pgw_now_mono_ms();
    c->timer = evtimer_new(o->base, on_timer, c);
    if (!c->timer || !c->source) {
        cached_destroy(&c->base);
        return NULL;
    }
    if (o->eager) {
        c->next_attempt_ms = now_ms(c);
        reschedule(c, c->next_attempt_ms);
    }
    return &c->base;
}

int64_t pgw_credentials_cached_next_refresh_ms(const pgw_credentials_provider *p)
{
    const cached_provider *c = (const cached_provider *)p;
    return c->refreshing ? 0 : c->next_attempt_ms;
}

void pgw_credentials_cached_get_stats(const pgw_credentials_provider *p,
                                      pgw_credentials_cached_stats *out)
{
    const cached_provider *c = (const cached_provider *)p;
    *out = c->stats;
    out->refreshing = c->refreshing;
    out->waiting = c->n_waiting;
}
