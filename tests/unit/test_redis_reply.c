/* redis_tier: replies classified as the tier reads them, from RESP bytes parsed by hiredis'
 * reader bounded the way every connection is (an announced array of 455,556,666 elements cost
 * 3.6 GB before: found by fuzz_redis_reply). */
#include <hiredis/hiredis.h>
#include <string.h>

#include "cache/redis_tier.h"
#include "test_util.h"

/* Parses one reply from RESP text with a bounded reader; NULL when the reader refuses. */
static redisReply *parse(const char *resp, size_t len)
{
    redisReader *r = redisReaderCreate();
    CHECK(r != NULL && pgw_redis_reader_bound(r) == 0);
    void *reply = NULL;
    if (redisReaderFeed(r, resp, len) != REDIS_OK || redisReaderGetReply(r, &reply) != REDIS_OK)
        reply = NULL;
    redisReaderFree(r);
    return reply;
}

static void test_bound(void)
{
    CHECK(parse("*455556666\r\n", sizeof("*455556666\r\n") - 1) == NULL);
    CHECK(parse("*65\r\n", sizeof("*65\r\n") - 1) == NULL);
    redisReply *ok =
        parse("*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", sizeof("*3\r\n$1\r\na\r\n:1\r\n$-1\r\n") - 1);
    CHECK(ok && ok->type == REDIS_REPLY_ARRAY && ok->elements == 3);
    freeReplyObject(ok);
    redisReply *nil = parse("*-1\r\n", sizeof("*-1\r\n") - 1);
    CHECK(nil && nil->type == REDIS_REPLY_NIL);
    freeReplyObject(nil);
    /* A reader made with other functions is left alone. */
    CHECK(pgw_redis_reader_bound(NULL) == -1);
}

static void test_get(void)
{
    const uint8_t *v;
    size_t len;
    int oversize;
    redisReply *hit = parse("$3\r\nabc\r\n", sizeof("$3\r\nabc\r\n") - 1);
    CHECK(pgw_redis_get_reply(hit, 8, &v, &len, &oversize) == PGW_REDIS_HIT);
    CHECK(len == 3 && memcmp(v, "abc", 3) == 0 && !oversize);
    CHECK(pgw_redis_get_reply(hit, 2, &v, &len, &oversize) == PGW_REDIS_MISS);
    CHECK(v == NULL && len == 0 && oversize);
    freeReplyObject(hit);
    redisReply *nil = parse("$-1\r\n", sizeof("$-1\r\n") - 1);
    CHECK(pgw_redis_get_reply(nil, 8, &v, &len, &oversize) == PGW_REDIS_MISS && !oversize);
    freeReplyObject(nil);
    static const char *const errors[] = {"-ERR x\r\n", ":5\r\n", "+OK\r\n", "*1\r\n:1\r\n"};
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        redisReply *r = parse(errors[i], strlen(errors[i]));
        CHECK(pgw_redis_get_reply(r, 8, &v, &len, &oversize) == PGW_REDIS_ERROR);
        freeReplyObject(r);
    }
    CHECK(pgw_redis_get_reply(NULL, 8, &v, &len, &oversize) == PGW_REDIS_ERROR);
}

static void test_sub(void)
{
    const uint8_t *p;
    size_t len;
    const char *ch = PGW_REDIS_FILL_CHANNEL;
    redisReply *sub = parse("*3\r\n$9\r\nsubscribe\r\n$11\r\npgw:v1:fill\r\n:1\r\n",
                            sizeof("*3\r\n$9\r\nsubscribe\r\n$11\r\npgw:v1:fill\r\n:1\r\n") - 1);
    CHECK(pgw_redis_sub_reply(sub, ch, &p, &len) == PGW_REDIS_SUB_SUBSCRIBED);
    freeReplyObject(sub);
    redisReply *msg =
        parse("*3\r\n$7\r\nmessage\r\n$11\r\npgw:v1:fill\r\n$2\r\nhi\r\n",
              sizeof("*3\r\n$7\r\nmessage\r\n$11\r\npgw:v1:fill\r\n$2\r\nhi\r\n") - 1);
    CHECK(pgw_redis_sub_reply(msg, ch, &p, &len) == PGW_REDIS_SUB_MESSAGE);
    CHECK(len == 2 && memcmp(p, "hi", 2) == 0);
    freeReplyObject(msg);
    redisReply *other = parse("*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$2\r\nhi\r\n",
                              sizeof("*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$2\r\nhi\r\n") - 1);
    CHECK(pgw_redis_sub_reply(other, ch, &p, &len) == PGW_REDIS_SUB_OTHER && p == NULL);
    freeReplyObject(other);
    redisReply *notstr = parse("*3\r\n$7\r\nmessage\r\n$11\r\npgw:v1:fill\r\n:7\r\n",
                               sizeof("*3\r\n$7\r\nmessage\r\n$11\r\npgw:v1:fill\r\n:7\r\n") - 1);
    CHECK(pgw_redis_sub_reply(notstr, ch, &p, &len) == PGW_REDIS_SUB_OTHER);
    freeReplyObject(notstr);
    redisReply *err = parse("-NOPERM no\r\n", sizeof("-NOPERM no\r\n") - 1);
    CHECK(pgw_redis_sub_reply(err, ch, &p, &len) == PGW_REDIS_SUB_ERROR);
    freeReplyObject(err);
    CHECK(pgw_redis_sub_reply(NULL, ch, &p, &len) == PGW_REDIS_SUB_OTHER);
}

int main(void)
{
    test_bound();
    test_get();
    test_sub();
    return pgw_test_finish("test_redis_reply");
}
