/* l1: the in-process cache tier. A hash map from key (the job ARN) to an opaque value (an
 * encoded cache entry, see entry.h), with least-recently-used eviction bounded both by entry
 * count and by total bytes (key + value), and a per-entry expiry on the monotonic clock.
 *
 * Single-threaded: every call happens on the event-loop thread, so there are no locks. Times
 * are inputs (CLOCK_MONOTONIC ms), so tests need no sleeping. */
#ifndef PGW_CACHE_L1_H
#define PGW_CACHE_L1_H

#include <stddef.h>
#include <stdint.h>

typedef struct pgw_l1 pgw_l1;

typedef struct pgw_l1_config {
    size_t max_entries; /* 0 disables the tier: every get misses, every put is dropped */
    size_t max_bytes;   /* bound on the sum of key + value lengths */
} pgw_l1_config;

typedef struct pgw_l1_stats {
    uint64_t hits;
    uint64_t misses;      /* includes lookups that found only an expired entry */
    uint64_t evictions;   /* removed to make room (count or byte bound) */
    uint64_t expirations; /* removed because their time was up */
    size_t entries;       /* current */
    size_t bytes;         /* current, key + value */
} pgw_l1_stats;

/* Defaults: 10000 entries, 64 MiB. */
void pgw_l1_config_defaults(pgw_l1_config *cfg);

/* Creates an empty tier. Returns NULL on allocation failure. Free with pgw_l1_free(). */
pgw_l1 *pgw_l1_new(const pgw_l1_config *cfg);

/* Frees the tier and every value in it. NULL is fine. */
void pgw_l1_free(pgw_l1 *l1);

/* Looks key up at monotonic time now_ms. Returns the stored value and its length in *len, or
 * NULL on a miss (an expired entry is removed and counts as a miss). A hit becomes the most
 * recently used. The pointer is BORROWED: valid only until the next call into this l1 (get,
 * put, delete, free), so decode or copy it first. */
const uint8_t *pgw_l1_get(pgw_l1 *l1, const char *key, int64_t now_ms, size_t *len);

/* Stores a copy of key and value, expiring at monotonic time expires_at_ms, replacing any
 * entry with the same key, then evicts least-recently-used entries until both bounds hold.
 * Returns 0 when stored, -1 when not (tier disabled, entry alone exceeds max_bytes, already
 * expired, out of memory); on -1 any previous entry for key is removed too, since it is older
 * than what the caller just tried to store. */
int pgw_l1_put(pgw_l1 *l1, const char *key, const uint8_t *value, size_t len, int64_t expires_at_ms,
               int64_t now_ms);

/* Removes key if present. Returns 1 if an entry was removed, else 0. */
int pgw_l1_delete(pgw_l1 *l1, const char *key);

/* Copies the counters into *out. */
void pgw_l1_stats_get(const pgw_l1 *l1, pgw_l1_stats *out);

#endif
