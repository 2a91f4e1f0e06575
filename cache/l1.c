/* In-process LRU tier; see l1.h. A chained hash table (one bucket array sized once from
 * max_entries, so it never rehashes) threaded with a doubly linked recency list. Each node is
 * one allocation holding key and value side by side. */
#include "cache/l1.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define PGW_L1_MAX_BUCKETS ((size_t)1 << 20)

typedef struct l1_node {
    struct l1_node *chain;         /* next in bucket */
    struct l1_node *newer, *older; /* recency list */
    uint64_t hash;
    int64_t expires_at_ms;
    size_t key_len;
    size_t val_len;
    char data[]; /* key, NUL, value */
} l1_node;

struct pgw_l1 {
    pgw_l1_config cfg;
    l1_node **buckets;
    size_t nbuckets; /* power of two */
    uint64_t seed;   /* per-table, so bucket placement is not predictable from outside */
    l1_node *newest, *oldest;
    pgw_l1_stats stats;
};

void pgw_l1_config_defaults(pgw_l1_config *cfg)
{
    cfg->max_entries = 10000;
    cfg->max_bytes = 64u * 1024 * 1024;
}

/* FNV-1a over the key, started from a random seed. Not a defence against a determined
 * flooder, but keys are validated ARNs and max_entries bounds every chain. */
static uint64_t l1_hash(uint64_t seed, const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ULL ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

pgw_l1 *pgw_l1_new(const pgw_l1_config *cfg)
{
    pgw_l1 *l1 = calloc(1, sizeof *l1);
    if (!l1)
        return NULL;
    l1->cfg = *cfg;
    size_t n = 16;
    while (n < cfg->max_entries && n < PGW_L1_MAX_BUCKETS)
        n <<= 1;
    l1->nbuckets = n;
    l1->buckets = calloc(n, sizeof *l1->buckets);
    if (!l1->buckets) {
        free(l1);
        return NULL;
    }
    if (getrandom(&l1->seed, sizeof l1->seed, GRND_NONBLOCK) != (ssize_t)sizeof l1->seed)
        l1->seed = (uint64_t)(uintptr_t)l1;
    return l1;
}

void pgw_l1_free(pgw_l1 *l1)
{
    if (!l1)
        return;
    l1_node *n = l1->newest;
    while (n) {
        l1_node *next = n->older;
        free(n);
        n = next;
    }
    free(l1->buckets);
    free(l1);
}

static l1_node **l1_find_slot(pgw_l1 *l1, const char *key, size_t key_len, uint64_t h)
{
    l1_node **slot = &l1->buckets[h & (l1->nbuckets - 1)];
    while (*slot) {
        l1_node *n = *slot;
        if (n->hash == h && n->key_len == key_len && memcmp(n->data, key, key_len) == 0)
            return slot;
        slot = &n->chain;
    }
    return slot;
}

static void lru_unlink(pgw_l1 *l1, l1_node *n)
{
    if (n->newer)
        n->newer->older = n->older;
    else
        l1->newest = n->older;
    if (n->older)
        n->older->newer = n->newer;
    else
        l1->oldest = n->newer;
    n->newer = n->older = NULL;
}

static void lru_push_newest(pgw_l1 *l1, l1_node *n)
{
    n->newer = NULL;
    n->older = l1->newest;
    if (l1->newest)
        l1->newest->newer = n;
    l1->newest = n;
    if (!l1->oldest)
        l1->oldest = n;
}

/* Unlinks the node at *slot from both structures and frees it. */
static void l1_remove_at(pgw_l1 *l1, l1_node **slot)
{
    l1_node *n = *slot;
    *slot = n->chain;
    lru_unlink(l1, n);
    l1->stats.entries--;
    l1->stats.bytes -= n->key_len + n->val_len;
    free(n);
}

static void l1_remove_node(pgw_l1 *l1, l1_node *n)
{
    l1_node **slot = l1_find_slot(l1, n->data, n->key_len, n->hash);
    l1_remove_at(l1, slot);
}

const uint8_t *pgw_l1_get(pgw_l1 *l1, const char *key, int64_t now_ms, size_t *len)
{
    if (!l1 || !key || l1->cfg.max_entries == 0) {
        if (l1)
            l1->stats.misses++;
        return NULL;
    }
    size_t key_len = strlen(key);
    uint64_t h = l1_hash(l1->seed, key, key_len);
    l1_node **slot = l1_find_slot(l1, key, key_len, h);
    if (!*slot) {
        l1->stats.misses++;
        return NULL;
    }
    l1_node *n = *slot;
    if (now_ms >= n->expires_at_ms) {
        l1_remove_at(l1, slot);
        l1->stats.expirations++;
        l1->stats.misses++;
        return NULL;
    }
    lru_unlink(l1, n);
    lru_push_newest(l1, n);
    l1->stats.hits++;
    if (len)
        *len = n->val_len;
    return (const uint8_t *)n->data + n->key_len + 1;
}

int pgw_l1_delete(pgw_l1 *l1, const char *key)
{
    if (!l1 || !key)
        return 0;
    size_t key_len = strlen(key);
    l1_node **slot = l1_find_slot(l1, key, key_len, l1_hash(l1->seed, key, key_len));
    if (!*slot)
        return 0;
    l1_remove_at(l1, slot);
    return 1;
}

int pgw_l1_put(pgw_l1 *l1, const char *key, const uint8_t *value, size_t len, int64_t expires_at_ms,
               int64_t now_ms)
{
    if (!l1 || !key || (len && !value))
        return -1;
    size_t key_len = strlen(key);
    uint64_t h = l1_hash(l1->seed, key, key_len);
    l1_node **slot = l1_find_slot(l1, key, key_len, h);
    if (*slot)
        l1_remove_at(l1, slot);

    if (l1->cfg.max_entries == 0 || expires_at_ms <= now_ms)
        return -1;
    if (key_len > l1->cfg.max_bytes || len > l1->cfg.max_bytes - key_len)
        return -1;

    l1_node *n = malloc(sizeof *n + key_len + 1 + len);
    if (!n)
        return -1;
    memset(n, 0, sizeof *n);
    n->hash = h;
    n->expires_at_ms = expires_at_ms;
    n->key_len = key_len;
    n->val_len = len;
    memcpy(n->data, key, key_len);
    n->data[key_len] = '\0';
    if (len)
        memcpy(n->data + key_len + 1, value, len);

    /* Make room first, so the new node itself is never the victim. The slot pointer may go
     * stale when evictions relink its chain, so the insert below looks the slot up again. */
    while (l1->oldest && (l1->stats.entries + 1 > l1->cfg.max_entries ||
                          l1->stats.bytes + key_len + len > l1->cfg.max_bytes)) {
        l1_node *victim = l1->oldest;
        if (now_ms >= victim->expires_at_ms)
            l1->stats.expirations++;
        else
            l1->stats.evictions++;
        l1_remove_node(l1, victim);
    }
    l1_node **bucket = &l1->buckets[h & (l1->nbuckets - 1)];
    n->chain = *bucket;
    *bucket = n;
    lru_push_newest(l1, n);
    l1->stats.entries++;
    l1->stats.bytes += key_len + len;
    return 0;
}

void pgw_l1_stats_get(const pgw_l1 *l1, pgw_l1_stats *out)
{
    *out = l1->stats;
}
