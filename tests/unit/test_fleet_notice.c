/* fleet: what arrives from Redis, checked without Redis: FillNotice parsing (a failure code
 * outside 1..16 or a notice with neither entry nor code is malformed; a failure message is
 * bounded, control characters become spaces, invalid UTF-8 is dropped), the takeover wait
 * (bounded by the lease life whatever PTTL says: a PTTL of 2^63 - 1 overflowed; seen while
 * factoring fleet.c for fuzz_redis_reply, whose invariant now checks it) and the SET NX reply
 * that wins a lease. */
#include <hiredis/hiredis.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/fleet.h"
#include "personalize_gateway/fleet/v1/fleet.pb-c.h"
#include "test_util.h"

#define ARN "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/x"

static size_t pack(const char *arn, const uint8_t *entry, size_t entry_len, int code,
                   const char *message, uint8_t *out)
{
    PersonalizeGateway__Fleet__V1__FillNotice n = PERSONALIZE_GATEWAY__FLEET__V1__FILL_NOTICE__INIT;
    n.batch_inference_job_arn = (char *)arn;
    n.cache_entry.data = (uint8_t *)entry;
    n.cache_entry.len = entry_len;
    n.code = code;
    n.message = (char *)message;
    n.replica_id = "r1";
    return personalize_gateway__fleet__v1__fill_notice__pack(&n, out);
}

static void test_notice(void)
{
    static uint8_t buf[4096];
    pgw_fleet_notice n;
    const uint8_t entry[] = {1, 2, 3};
    size_t len = pack(ARN, entry, sizeof(entry), 0, "", buf);
    CHECK(pgw_fleet_notice_parse(buf, len, &n) == 0);
    CHECK_STR(n.arn, ARN);
    CHECK(n.entry_len == 3 && memcmp(n.entry, entry, 3) == 0 && n.code == 0);
    CHECK_STR(n.replica_id, "r1");
    pgw_fleet_notice_cleanup(&n);
    CHECK(n.msg == NULL);

    len = pack(ARN, NULL, 0, 14, "Throttling\r\nFAKE: line", buf);
    CHECK(pgw_fleet_notice_parse(buf, len, &n) == 0);
    CHECK(n.code == 14 && n.entry == NULL);
    CHECK_STR(n.message, "Throttling  FAKE: line");
    pgw_fleet_notice_cleanup(&n);

    /* Not UTF-8: dropped (the waiter then says "upstream fetch failed"). */
    len = pack(ARN, NULL, 0, 14, "bad \xff byte", buf);
    CHECK(pgw_fleet_notice_parse(buf, len, &n) == 0);
    CHECK_STR(n.message, "");
    pgw_fleet_notice_cleanup(&n);

    /* Too long: cut at a character boundary. */
    char longmsg[PGW_FLEET_MESSAGE_MAX + 8];
    memset(longmsg, 'a', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = '\0';
    memcpy(longmsg + PGW_FLEET_MESSAGE_MAX - 1, "\xc3\xa9", 2); /* é across the cut */
    len = pack(ARN, NULL, 0, 13, longmsg, buf);
    CHECK(pgw_fleet_notice_parse(buf, len, &n) == 0);
    CHECK(strlen(n.message) == PGW_FLEET_MESSAGE_MAX - 1);
    pgw_fleet_notice_cleanup(&n);

    /* Malformed: code out of range, OK without an entry, no ARN, not protobuf. */
    static const int bad_codes[] = {0, 17, -1, 1000, INT_MIN};
    for (size_t i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++) {
        len = pack(ARN, NULL, 0, bad_codes[i], "m", buf);
        CHECK(pgw_fleet_notice_parse(buf, len, &n) == -1 && n.msg == NULL);
    }
    len = pack("", entry, sizeof(entry), 0, "", buf);
    CHECK(pgw_fleet_notice_parse(buf, len, &n) == -1);
    const uint8_t junk[] = {0x0a, 0x05, 'a'};
    CHECK(pgw_fleet_notice_parse(junk, sizeof(junk), &n) == -1);
    CHECK(pgw_fleet_notice_parse(NULL, 0, &n) == -1);
}

static void test_takeover_wait(void)
{
    CHECK(pgw_fleet_takeover_wait_ms(1200, 3000, 0) == 1205);
    CHECK(pgw_fleet_takeover_wait_ms(-2, 3000, 19) == 1 + 5 + 19);
    CHECK(pgw_fleet_takeover_wait_ms(-1, 3000, 20) == 3005);
    CHECK(pgw_fleet_takeover_wait_ms(0, 3000, 0) == 3005);
    CHECK(pgw_fleet_takeover_wait_ms(LLONG_MAX, 3000, 7) == 3012);
    CHECK(pgw_fleet_takeover_wait_ms(LLONG_MIN, 3000, 0) == 3005);
    CHECK(pgw_fleet_takeover_wait_ms(86400000, 500, 0) == 505);
}

static void test_lease_won(void)
{
    redisReply ok = {.type = REDIS_REPLY_STATUS, .str = "OK", .len = 2};
    redisReply queued = {.type = REDIS_REPLY_STATUS, .str = "QUEUED", .len = 6};
    redisReply str_ok = {.type = REDIS_REPLY_STRING, .str = "OK", .len = 2};
    redisReply nil = {.type = REDIS_REPLY_NIL};
    CHECK(pgw_fleet_lease_won(&ok));
    CHECK(!pgw_fleet_lease_won(&queued));
    CHECK(!pgw_fleet_lease_won(&str_ok));
    CHECK(!pgw_fleet_lease_won(&nil));
    CHECK(!pgw_fleet_lease_won(NULL));
}

int main(void)
{
    test_notice();
    test_takeover_wait();
    test_lease_won();
    return pgw_test_finish("test_fleet_notice");
}
