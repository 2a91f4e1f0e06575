#include "service/rate_limit.h"

#include <event2/event.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Old buckets looked at per call when sweeping idle ones: bounded work per call, and still
 * faster than buckets can go idle. */
#define SWEEP_PER_CALL 4

typedef struct bucket {
    double tokens;
    int64_t last_ms;
} bucket;

typedef struct caller_entry {
    struct caller_entry *hash_next;
    struct caller_entry *lru_prev, *lru_next; /* head = most recently used */
    uint64_t hash;
    bucket b;
    char key[]; /* the identity, NUL-terminated */
} caller_entry;

struct pgw_rate_limit_wait {
    pgw_rate_limit *rl;
    struct event *timer;
    pgw_rate_limit_cb cb;
    void *user_data;
    pgw_rate_limit_wait *prev, *next;
};

struct pgw_rate_limit {
    struct event_base *base;
    pgw_rate_limit_options o;

    caller_entry **table;
    size_t n_slots; /* a power of two */
    size_t n_entries;
    caller_entry *lru_head, *lru_tail;
    int64_t idle_ms; /* a bucket untouched this long is full again: dropping it changes nothing */
    uint64_t seed;   /* per process, so nobody can pick identities that collide */

    bucket upstream;
    pgw_rate_limit_wait *waits;
    size_t n_waits;
};

/* Adds the tokens earned since the last refill, up to the burst. */
static void refill(bucket *b, double rate, double burst, int64_t now_ms)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * rate / 1000.0;
        if (b->tokens > burst)
            b->tokens = burst;
        b->last_ms = now_ms;
    }
}

/* Milliseconds until the bucket holds one whole token (0 if it does). */
static int64_t ms_until_token(const bucket *b, double rate)
{
    if (b->tokens >= 1.0)
        return 0;
    /* The epsilon keeps float error (0.99 tokens -> 1.0000000001 ms) from adding a whole ms. */
    return (int64_t)ceil((1.0 - b->tokens) * 1000.0 / rate - 1e-6);
}

static uint64_t hash_key(uint64_t seed, const char *s)
{
    /* FNV-1a over a random basis. */
    uint64_t h = 14695981039346656037ULL ^ seed;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

pgw_rate_limit *pgw_rate_limit_new(struct event_base *base, const pgw_rate_limit_options *options)
{
    if (options->caller_rate < 0 || options->upstream_rate < 0 || options->upstream_max_wait_ms < 0)
        return NULL;
    pgw_rate_limit *rl = calloc(1, sizeof(*rl));
    if (!rl)
        return NULL;
    rl->base = base;
    rl->o = *options;
    if (rl->o.caller_burst < 1)
        rl->o.caller_burst = rl->o.caller_rate > 1 ? rl->o.caller_rate : 1;
    if (rl->o.upstream_burst < 1)
        rl->o.upstream_burst = rl->o.upstream_rate > 1 ? rl->o.upstream_rate : 1;
    if (rl->o.caller_max_entries == 0)
        rl->o.caller_max_entries = 10000;
    if (rl->o.caller_rate > 0) {
        rl->n_slots = 16;
        while (rl->n_slots < rl->o.caller_max_entries && rl->n_slots < ((size_t)1 << 30))
            rl->n_slots <<= 1;
        rl->table = calloc(rl->n_slots, sizeof(*rl->table));
        if (!rl->table) {
            free(rl);
            return NULL;
        }
        rl->idle_ms = (int64_t)ceil(rl->o.caller_burst * 1000.0 / rl->o.caller_rate);
    }
    if (getrandom(&rl->seed, sizeof(rl->seed), GRND_NONBLOCK) != sizeof(rl->seed))
        rl->seed = (uint64_t)(uintptr_t)rl; /* only collision resistance is lost */
    rl->upstream.tokens = rl->o.upstream_burst;
    rl->upstream.last_ms = INT64_MIN; /* set by the first acquire */
    return rl;
}

/* --- per caller ------------------------------------------------------------------------------ */

static void lru_unlink(pgw_rate_limit *rl, caller_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        rl->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        rl->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_head(pgw_rate_limit *rl, caller_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = rl->lru_head;
    if (rl->lru_head)
        rl->lru_head->lru_prev = e;
    rl->lru_head = e;
    if (!rl->lru_tail)
        rl->lru_tail = e;
}

static void remove_entry(pgw_rate_limit *rl, caller_entry *e)
{
    caller_entry **pp = &rl->table[e->hash & (rl->n_slots - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->hash_next;
    if (*pp)
        *pp = e->hash_next;
    lru_unlink(rl, e);
    rl->n_entries--;
    free(e);
}

int pgw_rate_limit_caller_take(pgw_rate_limit *rl, const char *identity, int64_t now_ms,
                               int64_t *retry_after_ms)
{
    if (!rl || rl->o.caller_rate <= 0)
        return 1;
    const char *key = identity ? identity : "";

    /* Drop a few buckets that have been idle long enough to be full again. */
    for (int i = 0; i < SWEEP_PER_CALL && rl->lru_tail; i++) {
        if (now_ms - rl->lru_tail->b.last_ms < rl->idle_ms)
            break;
        remove_entry(rl, rl->lru_tail);
    }

    uint64_t h = hash_key(rl->seed, key);
    caller_entry *e = rl->table[h & (rl->n_slots - 1)];
    while (e && !(e->hash == h && strcmp(e->key, key) == 0))
        e = e->hash_next;
    if (e) {
        lru_unlink(rl, e);
    } else {
        if (rl->n_entries >= rl->o.caller_max_entries)
            remove_entry(rl, rl->lru_tail);
        size_t len = strlen(key);
        e = calloc(1, sizeof(*e) + len + 1);
        if (!e)
            return 1; /* fail open: a limiter must not turn memory pressure into an outage */
        memcpy(e->key, key, len + 1);
        e->hash = h;
        e->b.tokens = rl->o.caller_burst;
        e->b.last_ms = now_ms;
        size_t slot = h & (rl->n_slots - 1);
        e->hash_next = rl->table[slot];
        rl->table[slot] = e;
        rl->n_entries++;
    }
    lru_push_head(rl, e);

    refill(&e->b, rl->o.caller_rate, rl->o.caller_burst, now_ms);
    if (e->b.tokens >= 1.0) {
        e->b.tokens -= 1.0;
        return 1;
    }
    if (retry_after_ms)
        *retry_after_ms = ms_until_token(&e->b, rl->o.caller_rate);
    return 0;
}

size_t pgw_rate_limit_caller_entries(const pgw_rate_limit *rl)
{
    return rl ? rl->n_entries : 0;
}

/* --- upstream -------------------------------------------------------------------------------- */

static void wait_unlink(pgw_rate_limit *rl, pgw_rate_limit_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        rl->waits = w->next;
    if (w->next)
        w->next->prev = w->prev;
    rl->n_waits--;
}

static void on_token_due(evutil_socket_t fd, short what, void *arg)
{
    pgw_rate_limit_wait *w = arg;
    pgw_rate_limit_cb cb = w->cb;
    void *ud = w->user_data;
    wait_unlink(w->rl, w);
    event_free(w->timer);
    free(w);
    cb(ud); /* last: the callback may start another acquire or free anything of its own */
}

pgw_rate_limit_result pgw_rate_limit_upstream_acquire(pgw_rate_limit *rl, int64_t now_ms,
                                                      int64_t deadline_ms, pgw_rate_limit_cb cb,
                                                      void *user_data, pgw_rate_limit_wait **wait)
{
    if (wait)
        *wait = NULL;
    if (!rl || rl->o.upstream_rate <= 0)
        return PGW_RATE_LIMIT_GRANTED;
    bucket *b = &rl->upstream;
    if (b->last_ms == INT64_MIN)
        b->last_ms = now_ms;
    refill(b, rl->o.upstream_rate, rl->o.upstream_burst, now_ms);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return PGW_RATE_LIMIT_GRANTED;
    }
    /* Tokens below zero are reservations of earlier waiters: this call's token comes after
     * theirs. */
    int64_t due_ms = ms_until_token(b, rl->o.upstream_rate);
    int64_t allowed = rl->o.upstream_max_wait_ms;
    if (deadline_ms > 0 && deadline_ms - now_ms < allowed)
        allowed = deadline_ms - now_ms;
    if (due_ms > allowed || !cb || !wait)
        return PGW_RATE_LIMIT_REJECTED;

    pgw_rate_limit_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return PGW_RATE_LIMIT_REJECTED;
    w->rl = rl;
    w->cb = cb;
    w->user_data = user_data;
    w->timer = evtimer_new(rl->base, on_token_due, w);
    struct timeval tv = {(time_t)(due_ms / 1000), (suseconds_t)((due_ms % 1000) * 1000)};
    if (!w->timer || evtimer_add(w->timer, &tv) != 0) {
        if (w->timer)
            event_free(w->timer);
        free(w);
        return PGW_RATE_LIMIT_REJECTED;
    }
    b->tokens -= 1.0;
    w->next = rl->waits;
    if (rl->waits)
        rl->waits->prev = w;
    rl->waits = w;
    rl->n_waits++;
    *wait = w;
    return PGW_RATE_LIMIT_WAIT;
}

void pgw_rate_limit_upstream_cancel(pgw_rate_limit *rl, pgw_rate_limit_wait *w)
{
    if (!rl || !w)
        return;
    wait_unlink(rl, w);
    event_free(w->timer);
    free(w);
    /* Give the reservation back: the next caller gets it instead of it going to waste. */
    rl->upstream.tokens += 1.0;
    if (rl->upstream.tokens > rl->o.upstream_burst)
        rl->upstream.tokens = rl->o.upstream_burst;
}

size_t pgw_rate_limit_upstream_waiting(const pgw_rate_limit *rl)
{
    return rl ? rl->n_waits : 0;
}

void pgw_rate_limit_free(pgw_rate_limit *rl)
{
    if (!rl)
        return;
    while (rl->waits) {
        pgw_rate_limit_wait *w = rl->waits;
        rl->waits = w->next;
        event_free(w->timer);
        free(w);
    }
    for (caller_entry *e = rl->lru_head; e;) {
        caller_entry *next = e->lru_next;
        free(e);
        e = next;
    }
    free(rl->table);
    free(rl);
}

int pgw_rate_limit_caller_enabled(const pgw_rate_limit *rl)
{
    return rl && rl->o.caller_rate > 0;
}
