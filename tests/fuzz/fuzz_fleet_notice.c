/* Fuzz target: the fleet's FillNotice (proto/personalize_gateway/fleet/v1/fleet.proto), as a
 * replica receives it on the Redis channel pgw:v1:fill (cache/fleet.c). Any bytes can arrive:
 * Redis is not trusted. Invariants: a notice accepted names an ARN and carries either an
 * entry or a failure code in 1..16 with a bounded, JSON-safe message without control
 * characters; a real fleet coordinator counts every notice as received or malformed and keeps
 * going. */
#include <event2/event.h>
#include <stdint.h>
#include <string.h>

#include "cache/fleet.h"
#include "fuzz_util.h"

static struct event_base *base;
static pgw_fleet *fleet;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    base = event_base_new();
    pgw_fleet_config cfg;
    pgw_fleet_config_defaults(&cfg);
    cfg.replica_id = "fuzz-replica";
    fleet = pgw_fleet_new(base, &cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgw_fleet_notice n;
    int rc = pgw_fleet_notice_parse(data, size, &n);
    if (rc == 0) {
        FUZZ_ASSERT(n.arn && n.arn[0] && n.replica_id && n.msg);
        if (n.entry_len > 0) {
            FUZZ_ASSERT(n.entry != NULL && n.code == 0);
        } else {
            FUZZ_ASSERT(n.code >= 1 && n.code <= 16 && n.entry == NULL);
            size_t ml = strlen(n.message);
            FUZZ_ASSERT(ml <= PGW_FLEET_MESSAGE_MAX && fuzz_json_safe(n.message, ml));
            for (size_t i = 0; i < ml; i++)
                FUZZ_ASSERT((unsigned char)n.message[i] >= 0x20 && n.message[i] != 0x7f);
        }
        pgw_fleet_notice_cleanup(&n);
        FUZZ_ASSERT(n.msg == NULL);
    } else {
        FUZZ_ASSERT(n.msg == NULL && n.arn == NULL);
    }
    pgw_fleet_stats before, after;
    pgw_fleet_stats_get(fleet, &before);
    pgw_fleet_on_message(data, size, fleet);
    pgw_fleet_stats_get(fleet, &after);
    FUZZ_ASSERT(after.notices_received + after.notices_malformed ==
                before.notices_received + before.notices_malformed + 1);
    FUZZ_ASSERT((rc == 0) == (after.notices_received == before.notices_received + 1));
    FUZZ_ASSERT(after.waiting == 0);
    return 0;
}
