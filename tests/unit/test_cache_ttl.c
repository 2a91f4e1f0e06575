/* TTL policy: status classes, jitter bounds with fixed random inputs, entry planning, L1 cap. */
#include <stdint.h>

#include "cache/ttl.h"
#include "test_util.h"

static void test_defaults_and_classes(void)
{
    pgw_ttl_config c;
    pgw_ttl_config_defaults(&c);
    CHECK(c.terminal_ttl_ms == 3600000 && c.running_ttl_ms == 10000 && c.negative_ttl_ms == 5000);
    CHECK(c.stale_window_ms == 300000 && c.jitter_pct == 10 && c.l1_ttl_ms == 1000);

    CHECK(pgw_ttl_status_is_terminal("ACTIVE"));
    CHECK(pgw_ttl_status_is_terminal("CREATE FAILED"));
    CHECK(!pgw_ttl_status_is_terminal("PENDING"));
    CHECK(!pgw_ttl_status_is_terminal("IN PROGRESS"));
    CHECK(!pgw_ttl_status_is_terminal("active"));
    CHECK(!pgw_ttl_status_is_terminal("ACTIVE "));
    CHECK(!pgw_ttl_status_is_terminal("SOMETHING NEW"));
    CHECK(!pgw_ttl_status_is_terminal(""));
    CHECK(!pgw_ttl_status_is_terminal(NULL));

    c.jitter_pct = 0;
    CHECK(pgw_ttl_for_status(&c, "ACTIVE", 12345) == 3600000);
    CHECK(pgw_ttl_for_status(&c, "CREATE FAILED", 0) == 3600000);
    CHECK(pgw_ttl_for_status(&c, "PENDING", 0) == 10000);
    CHECK(pgw_ttl_for_status(&c, "IN PROGRESS", 0) == 10000);
    CHECK(pgw_ttl_for_status(&c, "STOPPED", 0) == 10000);
    CHECK(pgw_ttl_for_status(&c, NULL, 0) == 10000);
    CHECK(pgw_ttl_negative(&c, 99) == 5000);
}

static void test_jitter(void)
{
    pgw_ttl_config c;
    pgw_ttl_config_defaults(&c);
    CHECK(pgw_ttl_for_status(&c, "ACTIVE", 0) == 3240000);          /* -10% */
    CHECK(pgw_ttl_for_status(&c, "ACTIVE", UINT32_MAX) == 3960000); /* +10% */
    int64_t mid = pgw_ttl_for_status(&c, "ACTIVE", 0x80000000u);
    CHECK(mid >= 3599999 && mid <= 3600001);
    CHECK(pgw_ttl_for_status(&c, "PENDING", 0) == 9000);
    CHECK(pgw_ttl_for_status(&c, "PENDING", UINT32_MAX) == 11000);
    CHECK(pgw_ttl_negative(&c, 0) == 4500);

    /* Bounds and spread over many inputs. */
    int64_t lo = INT64_MAX, hi = 0;
    uint32_t r = 1;
    for (int i = 0; i < 100000; i++) {
        r = r * 1664525u + 1013904223u;
        int64_t v = pgw_ttl_jitter(10000, 10, r);
        CHECK(v >= 9000 && v <= 11000);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    CHECK(lo < 9100 && hi > 10900);
    CHECK(pgw_ttl_jitter(10000, 0, 0) == 10000);
    CHECK(pgw_ttl_jitter(10000, 250, 0) == 1); /* clamped to 100%: never below 1 */
    CHECK(pgw_ttl_jitter(10000, 250, UINT32_MAX) == 20000);
    CHECK(pgw_ttl_jitter(1, 10, 0) == 1);
    CHECK(pgw_ttl_jitter(0, 10, 0) == 0);
}

static void test_plan_and_l1(void)
{
    pgw_ttl_config c;
    pgw_ttl_config_defaults(&c);
    c.jitter_pct = 0;
    pgw_ttl_plan p;
    pgw_ttl_plan_entry(&c, "ACTIVE", 0, 1000000, 7, &p);
    CHECK(p.fetched_at_ms == 1000000 && p.fresh_until_ms == 1000000 + 3600000);
    CHECK(p.stale_until_ms == p.fresh_until_ms + 300000);
    CHECK(p.redis_ttl_ms == 3600000 + 300000);
    pgw_ttl_plan_entry(&c, NULL, 1, 5, 7, &p);
    CHECK(p.fresh_until_ms == 5005 && p.stale_until_ms == 305005 && p.redis_ttl_ms == 305000);
    c.stale_window_ms = 0;
    pgw_ttl_plan_entry(&c, "IN PROGRESS", 0, 0, 0, &p);
    CHECK(p.fresh_until_ms == 10000 && p.stale_until_ms == 10000 && p.redis_ttl_ms == 10000);

    CHECK(pgw_ttl_l1_ms(&c, 50000, 0) == 1000);    /* capped by l1_ttl */
    CHECK(pgw_ttl_l1_ms(&c, 50000, 49700) == 300); /* capped by the entry's freshness */
    CHECK(pgw_ttl_l1_ms(&c, 50000, 50000) <= 0);
    CHECK(pgw_ttl_l1_ms(&c, 50000, 60000) <= 0);
}

int main(void)
{
    test_defaults_and_classes();
    test_jitter();
    test_plan_and_l1();
    return pgw_test_finish("test_cache_ttl");
}
