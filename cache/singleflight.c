/* Request coalescing; see singleflight.h. Flights live in a chained hash table that doubles
 * when it gets full; each flight holds a doubly linked list of waiters so leave is O(1). */
#include "cache/singleflight.h"

#include <stdlib.h>
#include <string.h>

struct pgw_flight_waiter {
    pgw_flight_waiter *prev, *next;
    pgw_flight *flight;
    pgw_flight_cb cb;
    void *user_data;
};

struct pgw_flight {
    pgw_flight *chain;
    pgw_singleflight *sf;
    uint64_t hash;
    pgw_flight_waiter *head, *tail;
    size_t nwaiters;
    char key[];
};

struct pgw_singleflight {
    pgw_flight **buckets;
    size_t nbuckets; /* power of two */
    pgw_singleflight_stats stats;
};

static uint64_t sf_hash(const char *key)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *key; key++) {
        h ^= (unsigned char)*key;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

pgw_singleflight *pgw_singleflight_new(void)
{
    pgw_singleflight *sf = calloc(1, sizeof *sf);
    if (!sf)
        return NULL;
    sf->nbuckets = 64;
    sf->buckets = calloc(sf->nbuckets, sizeof *sf->buckets);
    if (!sf->buckets) {
        free(sf);
        return NULL;
    }
    return sf;
}

static void flight_free(pgw_flight *f)
{
    pgw_flight_waiter *w = f->head;
    while (w) {
        pgw_flight_waiter *next = w->next;
        free(w);
        w = next;
    }
    free(f);
}

void pgw_singleflight_free(pgw_singleflight *sf)
{
    if (!sf)
        return;
    for (size_t i = 0; i < sf->nbuckets; i++) {
        pgw_flight *f = sf->buckets[i];
        while (f) {
            pgw_flight *next = f->chain;
            flight_free(f);
            f = next;
        }
    }
    free(sf->buckets);
    free(sf);
}

/* Doubles the bucket array; on allocation failure the table just stays denser. */
static void sf_grow(pgw_singleflight *sf)
{
    size_t n = sf->nbuckets * 2;
    pgw_flight **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < sf->nbuckets; i++) {
        pgw_flight *f = sf->buckets[i];
        while (f) {
            pgw_flight *next = f->chain;
            f->chain = b[f->hash & (n - 1)];
            b[f->hash & (n - 1)] = f;
            f = next;
        }
    }
    free(sf->buckets);
    sf->buckets = b;
    sf->nbuckets = n;
}

static pgw_flight *sf_find(pgw_singleflight *sf, const char *key, uint64_t h)
{
    for (pgw_flight *f = sf->buckets[h & (sf->nbuckets - 1)]; f; f = f->chain)
        if (f->hash == h && strcmp(f->key, key) == 0)
            return f;
    return NULL;
}

pgw_flight *pgw_singleflight_join(pgw_singleflight *sf, const char *key, pgw_flight_cb cb,
                                  void *user_data, int *is_leader, pgw_flight_waiter **waiter)
{
    if (waiter)
        *waiter = NULL;
    if (is_leader)
        *is_leader = 0;
    if (!sf || !key)
        return NULL;
    uint64_t h = sf_hash(key);
    pgw_flight *f = sf_find(sf, key, h);
    int created = 0;
    if (!f) {
        size_t key_len = strlen(key);
        f = calloc(1, sizeof *f + key_len + 1);
        if (!f)
            return NULL;
        memcpy(f->key, key, key_len + 1);
        f->hash = h;
        f->sf = sf;
        created = 1;
    }
    pgw_flight_waiter *w = NULL;
    if (cb) {
        w = calloc(1, sizeof *w);
        if (!w) {
            if (created)
                free(f);
            return NULL;
        }
        w->cb = cb;
        w->user_data = user_data;
        w->flight = f;
        w->prev = f->tail;
        if (f->tail)
            f->tail->next = w;
        else
            f->head = w;
        f->tail = w;
        f->nwaiters++;
    }
    if (created) {
        if (sf->stats.in_flight >= sf->nbuckets)
            sf_grow(sf);
        pgw_flight **b = &sf->buckets[h & (sf->nbuckets - 1)];
        f->chain = *b;
        *b = f;
        sf->stats.in_flight++;
        sf->stats.flights++;
    } else {
        sf->stats.coalesced++;
    }
    if (is_leader)
        *is_leader = created;
    if (waiter)
        *waiter = w;
    return f;
}

static void waiter_unlink(pgw_flight_waiter *w)
{
    pgw_flight *f = w->flight;
    if (w->prev)
        w->prev->next = w->next;
    else
        f->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        f->tail = w->prev;
    f->nwaiters--;
    w->prev = w->next = NULL;
    w->flight = NULL;
}

void pgw_singleflight_complete(pgw_singleflight *sf, pgw_flight *flight,
                               const pgw_flight_result *result)
{
    if (!sf || !flight)
        return;
    /* Unregister first: callbacks that look the key up again must start afresh. */
    pgw_flight **slot = &sf->buckets[flight->hash & (sf->nbuckets - 1)];
    while (*slot && *slot != flight)
        slot = &(*slot)->chain;
    if (*slot) {
        *slot = flight->chain;
        sf->stats.in_flight--;
    }
    static const pgw_flight_result empty = {0};
    if (!result)
        result = &empty;
    /* Pop one waiter at a time, so a callback that leaves another waiter of this flight
     * simply removes it from the list still to be served. */
    while (flight->head) {
        pgw_flight_waiter *w = flight->head;
        waiter_unlink(w);
        pgw_flight_cb cb = w->cb;
        void *ud = w->user_data;
        free(w);
        cb(result, ud);
    }
    free(flight);
}

void pgw_singleflight_leave(pgw_flight_waiter *waiter)
{
    if (!waiter || !waiter->flight)
        return;
    pgw_singleflight *sf = waiter->flight->sf;
    waiter_unlink(waiter);
    sf->stats.left++;
    free(waiter);
}

size_t pgw_singleflight_waiters(const pgw_flight *flight)
{
    return flight ? flight->nwaiters : 0;
}

void pgw_singleflight_stats_get(const pgw_singleflight *sf, pgw_singleflight_stats *out)
{
    *out = sf->stats;
}
