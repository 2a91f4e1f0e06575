/* In-process tier: hits and misses, LRU eviction by count and by bytes, expiry with injected
 * monotonic times, replacement, deletion, the disabled mode, and a churn run. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cache/l1.h"
#include "test_util.h"

static pgw_l1 *make(size_t entries, size_t bytes)
{
    pgw_l1_config c = {entries, bytes};
    return pgw_l1_new(&c);
}

static int has(pgw_l1 *l1, const char *key, int64_t now)
{
    size_t len;
    return pgw_l1_get(l1, key, now, &len) != NULL;
}

static void test_basic(void)
{
    pgw_l1 *l1 = make(10, 1000);
    CHECK(l1 != NULL);
    size_t len = 0;
    CHECK(pgw_l1_get(l1, "arn:a", 0, &len) == NULL);
    const uint8_t v[] = {1, 0, 2, 0xff};
    CHECK(pgw_l1_put(l1, "arn:a", v, sizeof v, 100, 0) == 0);
    const uint8_t *got = pgw_l1_get(l1, "arn:a", 50, &len);
    CHECK(got && len == sizeof v && memcmp(got, v, len) == 0);
    CHECK(got != v); /* copied */

    /* Replace: new value, bytes accounted once. */
    CHECK(pgw_l1_put(l1, "arn:a", (const uint8_t *)"xyz", 3, 100, 0) == 0);
    got = pgw_l1_get(l1, "arn:a", 50, &len);
    CHECK(got && len == 3 && memcmp(got, "xyz", 3) == 0);
    pgw_l1_stats s;
    pgw_l1_stats_get(l1, &s);
    CHECK(s.entries == 1 && s.bytes == strlen("arn:a") + 3);
    CHECK(s.hits == 2 && s.misses == 1);

    /* Zero-length value is a valid entry. */
    CHECK(pgw_l1_put(l1, "arn:empty", NULL, 0, 100, 0) == 0);
    CHECK(pgw_l1_get(l1, "arn:empty", 0, &len) != NULL && len == 0);

    CHECK(pgw_l1_delete(l1, "arn:a") == 1);
    CHECK(pgw_l1_delete(l1, "arn:a") == 0);
    CHECK(!has(l1, "arn:a", 0));
    pgw_l1_stats_get(l1, &s);
    CHECK(s.entries == 1 && s.bytes == strlen("arn:empty"));
    pgw_l1_free(l1);
    pgw_l1_free(NULL);
}

static void test_expiry(void)
{
    pgw_l1 *l1 = make(10, 1000);
    CHECK(pgw_l1_put(l1, "k", (const uint8_t *)"v", 1, 1000, 0) == 0);
    CHECK(has(l1, "k", 999));
    CHECK(!has(l1, "k", 1000)); /* expiry is exclusive */
    pgw_l1_stats s;
    pgw_l1_stats_get(l1, &s);
    CHECK(s.expirations == 1 && s.entries == 0 && s.bytes == 0);
    CHECK(!has(l1, "k", 0)); /* removed for good, not resurrected by an earlier clock */
    CHECK(pgw_l1_put(l1, "k", (const uint8_t *)"v", 1, 1000, 1000) == -1); /* already expired */
    CHECK(pgw_l1_put(l1, "k", (const uint8_t *)"v", 1, 500, 1000) == -1);
    pgw_l1_free(l1);
}

static void test_evict_by_count(void)
{
    pgw_l1 *l1 = make(3, 1 << 20);
    CHECK(pgw_l1_put(l1, "a", (const uint8_t *)"1", 1, 100, 0) == 0);
    CHECK(pgw_l1_put(l1, "b", (const uint8_t *)"2", 1, 100, 0) == 0);
    CHECK(pgw_l1_put(l1, "c", (const uint8_t *)"3", 1, 100, 0) == 0);
    CHECK(has(l1, "a", 1)); /* a is now most recent; b is the oldest */
    CHECK(pgw_l1_put(l1, "d", (const uint8_t *)"4", 1, 100, 0) == 0);
    CHECK(!has(l1, "b", 1));
    CHECK(has(l1, "a", 1) && has(l1, "c", 1) && has(l1, "d", 1));
    pgw_l1_stats s;
    pgw_l1_stats_get(l1, &s);
    CHECK(s.evictions == 1 && s.entries == 3);
    /* Replacing an existing key does not evict anyone. */
    CHECK(pgw_l1_put(l1, "c", (const uint8_t *)"33", 2, 100, 0) == 0);
    pgw_l1_stats_get(l1, &s);
    CHECK(s.evictions == 1 && s.entries == 3);
    pgw_l1_free(l1);
}

static void test_evict_by_bytes(void)
{
    uint8_t v[30];
    memset(v, 'v', sizeof v);
    pgw_l1 *l1 = make(100, 100); /* each entry: 1 + 30 = 31 bytes, so 3 fit */
    CHECK(pgw_l1_put(l1, "a", v, 30, 100, 0) == 0);
    CHECK(pgw_l1_put(l1, "b", v, 30, 100, 0) == 0);
    CHECK(pgw_l1_put(l1, "c", v, 30, 100, 0) == 0);
    pgw_l1_stats s;
    pgw_l1_stats_get(l1, &s);
    CHECK(s.bytes == 93 && s.entries == 3);
    CHECK(pgw_l1_put(l1, "d", v, 30, 100, 0) == 0);
    CHECK(!has(l1, "a", 1) && has(l1, "b", 1) && has(l1, "c", 1) && has(l1, "d", 1));
    /* A big one pushes out several. */
    uint8_t big[128];
    memset(big, 'B', sizeof big);
    CHECK(pgw_l1_put(l1, "e", big, 80, 100, 0) == 0);
    pgw_l1_stats_get(l1, &s);
    CHECK(s.bytes <= 100 && s.entries == 1 && has(l1, "e", 1));
    /* Exactly the bound fits; one more byte does not, and removes the stale old value. */
    CHECK(pgw_l1_put(l1, "f", big, 99, 100, 0) == 0);
    CHECK(pgw_l1_put(l1, "f", big, 100, 100, 0) == -1);
    CHECK(!has(l1, "f", 1));
    pgw_l1_stats_get(l1, &s);
    CHECK(s.bytes == 0 && s.entries == 0);
    pgw_l1_free(l1);
}

static void test_disabled(void)
{
    pgw_l1 *l1 = make(0, 1000);
    CHECK(l1 != NULL);
    CHECK(pgw_l1_put(l1, "a", (const uint8_t *)"1", 1, 100, 0) == -1);
    CHECK(!has(l1, "a", 1));
    pgw_l1_stats s;
    pgw_l1_stats_get(l1, &s);
    CHECK(s.entries == 0 && s.misses == 1);
    pgw_l1_free(l1);
}

static void test_churn(void)
{
    pgw_l1 *l1 = make(100, 1 << 20);
    char key[128];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key,
                 "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/j%d", i);
        CHECK(pgw_l1_put(l1, key, (const uint8_t *)&i, sizeof i, 1000000, 0) == 0);
        if (i % 7 == 0) {
            snprintf(key, sizeof key,
                     "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/j%d", i / 2);
            pgw_l1_delete(l1, key);
        }
    }
    pgw_l1_stats s;
    pgw_l1_stats_get(l1, &s);
    CHECK(s.entries <= 100 && s.entries >= 90);
    int found = 0;
    for (int i = 4900; i < 5000; i++) {
        snprintf(key, sizeof key,
                 "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/j%d", i);
        size_t len;
        const uint8_t *v = pgw_l1_get(l1, key, 1, &len);
        if (v) {
            int got;
            memcpy(&got, v, sizeof got);
            CHECK(len == sizeof got && got == i);
            found++;
        }
    }
    CHECK(found == (int)s.entries);
    pgw_l1_free(l1);
}

int main(void)
{
    test_basic();
    test_expiry();
    test_evict_by_count();
    test_evict_by_bytes();
    test_disabled();
    test_churn();
    return pgw_test_finish("test_cache_l1");
}
