/* Fuzz target: Redis replies. The bytes are RESP as a (possibly hostile) Redis would send
 * them, parsed by hiredis' reader bounded as the connections bound it
 * (pgw_redis_reader_bound); every reply is then read
 * the way the gateway reads it: as a GET answer (cache/redis_tier.c; a hit is decoded as a
 * cache entry, cache/entry.c), as a reply on the subscriber connection (a message's payload
 * goes to the fleet coordinator, cache/fleet.c), and as the fleet's SET NX / PTTL answers.
 * Invariants: a GET hit is a string within the size bound; a message's payload is the third
 * element's bytes; the takeover wait stays within the lease life plus the spread whatever
 * PTTL says; only a status "OK" wins a lease. */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <string.h>

#include "cache/entry.h"
#include "cache/fleet.h"
#include "cache/redis_tier.h"
#include "fuzz_util.h"

#define MAX_VALUE 4096
#define LEASE_MS  3000

static struct event_base *base;
static pgw_fleet *fleet;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    base = event_base_new();
    pgw_fleet_config cfg;
    pgw_fleet_config_defaults(&cfg);
    cfg.lease_ms = LEASE_MS;
    fleet = pgw_fleet_new(base, &cfg);
    return 0;
}

static void read_reply(const redisReply *r)
{
    const uint8_t *value;
    size_t len;
    int oversize;
    pgw_redis_result res = pgw_redis_get_reply(r, MAX_VALUE, &value, &len, &oversize);
    if (res == PGW_REDIS_HIT) {
        FUZZ_ASSERT(r->type == REDIS_REPLY_STRING && len <= MAX_VALUE && len == (size_t)r->len);
        FUZZ_ASSERT(value == (const uint8_t *)r->str && !oversize);
        pgw_cache_entry e;
        (void)pgw_cache_entry_decode(value, len, &e);
    } else {
        FUZZ_ASSERT(value == NULL && len == 0);
        FUZZ_ASSERT(!oversize || (res == PGW_REDIS_MISS && r->type == REDIS_REPLY_STRING));
    }

    const uint8_t *payload;
    pgw_redis_sub_event ev = pgw_redis_sub_reply(r, PGW_REDIS_FILL_CHANNEL, &payload, &len);
    if (ev == PGW_REDIS_SUB_MESSAGE) {
        FUZZ_ASSERT(r->type == REDIS_REPLY_ARRAY && r->elements == 3);
        FUZZ_ASSERT(payload == (const uint8_t *)r->element[2]->str &&
                    len == (size_t)r->element[2]->len);
        pgw_fleet_on_message(payload, len, fleet);
    } else {
        FUZZ_ASSERT(payload == NULL && len == 0);
        if (ev == PGW_REDIS_SUB_ERROR)
            FUZZ_ASSERT(r->type == REDIS_REPLY_ERROR);
    }

    if (pgw_fleet_lease_won(r))
        FUZZ_ASSERT(r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0);
    if (r->type == REDIS_REPLY_INTEGER) {
        long long w = pgw_fleet_takeover_wait_ms(r->integer, LEASE_MS, (unsigned)r->integer);
        FUZZ_ASSERT(w >= 6 && w <= LEASE_MS + 24);
    }
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
        read_reply(r->element[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redisReader *reader = redisReaderCreate();
    FUZZ_ASSERT(reader != NULL && pgw_redis_reader_bound(reader) == 0);
    reader->maxbuf = 0;
    if (redisReaderFeed(reader, (const char *)data, size) == REDIS_OK) {
        void *reply = NULL;
        for (int i = 0; i < 64 && redisReaderGetReply(reader, &reply) == REDIS_OK && reply; i++) {
            read_reply(reply);
            freeReplyObject(reply);
            reply = NULL;
        }
    }
    redisReaderFree(reader);
    return 0;
}
