/* Cache value codec: round trips, every rejection rule, and random/truncated/bit-flipped input
 * that must never crash (run under ASan) and never decode into something out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/entry.h"
#include "test_util.h"

static pgw_cache_entry positive(const uint8_t *pb, size_t len)
{
    pgw_cache_entry e;
    memset(&e, 0, sizeof e);
    e.kind = PGW_CACHE_ENTRY_POSITIVE;
    e.fetched_at_ms = 1700000000000;
    e.fresh_until_ms = 1700000010000;
    e.stale_until_ms = 1700000310000;
    e.job_pb = pb;
    e.job_pb_len = len;
    return e;
}

static void test_round_trips(void)
{
    const uint8_t pb[] = {0x0a, 0x03, 'j', 'o', 'b', 0x00, 0xff, 0x10};
    pgw_cache_entry e = positive(pb, sizeof pb), d;
    size_t len = 0;
    uint8_t *buf = pgw_cache_entry_encode(&e, &len);
    CHECK(buf != NULL);
    CHECK(len == PGW_CACHE_ENTRY_HEADER_LEN + sizeof pb);
    CHECK(buf && memcmp(buf, "PGW1", 4) == 0 && buf[4] == PGW_CACHE_ENTRY_VERSION);
    CHECK(pgw_cache_entry_decode(buf, len, &d) == 0);
    CHECK(d.kind == PGW_CACHE_ENTRY_POSITIVE);
    CHECK(d.fetched_at_ms == e.fetched_at_ms && d.fresh_until_ms == e.fresh_until_ms &&
          d.stale_until_ms == e.stale_until_ms);
    CHECK(d.job_pb_len == sizeof pb && memcmp(d.job_pb, pb, sizeof pb) == 0);
    CHECK(d.job_pb == buf + PGW_CACHE_ENTRY_HEADER_LEN); /* borrowed, not copied */
    free(buf);

    /* Empty positive payload is legal (a job message with every field default). */
    e = positive(NULL, 0);
    buf = pgw_cache_entry_encode(&e, &len);
    CHECK(buf && len == PGW_CACHE_ENTRY_HEADER_LEN);
    CHECK(buf && pgw_cache_entry_decode(buf, len, &d) == 0 && d.job_pb_len == 0);
    free(buf);

    /* Negative times before 1970 are odd but consistent: they survive as signed values. */
    memset(&e, 0, sizeof e);
    e.kind = PGW_CACHE_ENTRY_NEGATIVE;
    e.fetched_at_ms = -5;
    e.fresh_until_ms = -5;
    e.stale_until_ms = 7;
    snprintf(e.error_code, sizeof e.error_code, "ResourceNotFoundException");
    snprintf(e.message, sizeof e.message, "Could not find batch inference job arn:aws:x");
    snprintf(e.request_id, sizeof e.request_id, "8d5b3c1e-1111-2222-3333-444455556666");
    buf = pgw_cache_entry_encode(&e, &len);
    CHECK(buf != NULL);
    memset(&d, 0x55, sizeof d);
    CHECK(buf && pgw_cache_entry_decode(buf, len, &d) == 0);
    CHECK(d.kind == PGW_CACHE_ENTRY_NEGATIVE && d.fetched_at_ms == -5 && d.stale_until_ms == 7);
    CHECK_STR(d.error_code, "ResourceNotFoundException");
    CHECK_STR(d.message, "Could not find batch inference job arn:aws:x");
    CHECK_STR(d.request_id, "8d5b3c1e-1111-2222-3333-444455556666");
    CHECK(d.job_pb == NULL && d.job_pb_len == 0);
    free(buf);

    /* Longest strings allowed. */
    memset(e.message, 'm', PGW_CACHE_ENTRY_MAX_MESSAGE);
    e.message[PGW_CACHE_ENTRY_MAX_MESSAGE] = '\0';
    buf = pgw_cache_entry_encode(&e, &len);
    CHECK(buf && pgw_cache_entry_decode(buf, len, &d) == 0 &&
          strlen(d.message) == PGW_CACHE_ENTRY_MAX_MESSAGE);
    free(buf);
}

static void test_encode_rejects(void)
{
    size_t len = 0;
    pgw_cache_entry e = positive((const uint8_t *)"x", 1);
    e.fresh_until_ms = e.fetched_at_ms - 1;
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    e = positive((const uint8_t *)"x", 1);
    e.stale_until_ms = e.fresh_until_ms - 1;
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    e = positive((const uint8_t *)"x", PGW_CACHE_ENTRY_MAX_PAYLOAD + 1); /* not read */
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    e = positive(NULL, 3);
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    e = positive((const uint8_t *)"x", 1);
    e.kind = (pgw_cache_entry_kind)7;
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    memset(&e, 0, sizeof e);
    e.kind = PGW_CACHE_ENTRY_NEGATIVE;
    memset(e.error_code, 'c', sizeof e.error_code); /* unterminated */
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    CHECK(pgw_cache_entry_encode(NULL, &len) == NULL);
}

/* Builds a negative entry by hand so malformed string sections can be tested. */
static size_t raw_entry(uint8_t *out, uint8_t version, uint8_t kind, uint16_t reserved,
                        const uint8_t *payload, uint32_t payload_len, uint32_t claimed_len)
{
    memcpy(out, "PGW1", 4);
    out[4] = version;
    out[5] = kind;
    out[6] = (uint8_t)(reserved >> 8);
    out[7] = (uint8_t)reserved;
    memset(out + 8, 0, 24); /* all times 0: ordered */
    out[32] = (uint8_t)(claimed_len >> 24);
    out[33] = (uint8_t)(claimed_len >> 16);
    out[34] = (uint8_t)(claimed_len >> 8);
    out[35] = (uint8_t)claimed_len;
    memcpy(out + 36, payload, payload_len);
    return 36 + payload_len;
}

static void test_decode_rejects(void)
{
    uint8_t buf[256];
    pgw_cache_entry d;
    const uint8_t good_neg[] = {0, 1, 'A', 0, 1, 'b', 0, 0};
    size_t n = raw_entry(buf, 1, 2, 0, good_neg, sizeof good_neg, sizeof good_neg);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == 0);
    CHECK_STR(d.error_code, "A");
    CHECK_STR(d.message, "b");
    CHECK_STR(d.request_id, "");

    CHECK(pgw_cache_entry_decode(NULL, 0, &d) == -1);
    CHECK(pgw_cache_entry_decode(buf, 0, &d) == -1);
    CHECK(pgw_cache_entry_decode(buf, 35, &d) == -1);

    n = raw_entry(buf, 2, 2, 0, good_neg, sizeof good_neg, sizeof good_neg); /* version 2 */
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    n = raw_entry(buf, 0, 2, 0, good_neg, sizeof good_neg, sizeof good_neg);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    n = raw_entry(buf, 1, 2, 1, good_neg, sizeof good_neg, sizeof good_neg); /* reserved */
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    n = raw_entry(buf, 1, 3, 0, good_neg, sizeof good_neg, sizeof good_neg); /* kind */
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    n = raw_entry(buf, 1, 0, 0, good_neg, sizeof good_neg, sizeof good_neg);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    n = raw_entry(buf, 1, 2, 0, good_neg, sizeof good_neg, sizeof good_neg);
    buf[0] = 'X'; /* magic */
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    n = raw_entry(buf, 1, 2, 0, good_neg, sizeof good_neg, sizeof good_neg + 1);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1); /* claims more than present */
    n = raw_entry(buf, 1, 2, 0, good_neg, sizeof good_neg, sizeof good_neg - 1);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1); /* claims less: trailing bytes */
    n = raw_entry(buf, 1, 1, 0, good_neg, 0, PGW_CACHE_ENTRY_MAX_PAYLOAD + 1);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1); /* over the bound */
    n = raw_entry(buf, 1, 1, 0, good_neg, 0, 0xffffffffu);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);

    const uint8_t nul_in_code[] = {0, 2, 'A', 0, 0, 0, 0, 0};
    n = raw_entry(buf, 1, 2, 0, nul_in_code, sizeof nul_in_code, sizeof nul_in_code);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    const uint8_t overlong[] = {0, 9, 'A', 0, 0, 0, 0};
    n = raw_entry(buf, 1, 2, 0, overlong, sizeof overlong, sizeof overlong);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    const uint8_t missing_third[] = {0, 1, 'A', 0, 0};
    n = raw_entry(buf, 1, 2, 0, missing_third, sizeof missing_third, sizeof missing_third);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    const uint8_t extra[] = {0, 0, 0, 0, 0, 0, 'z'};
    n = raw_entry(buf, 1, 2, 0, extra, sizeof extra, sizeof extra);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    uint8_t code_too_long[2 + PGW_CACHE_ENTRY_MAX_CODE + 1 + 4];
    memset(code_too_long, 'c', sizeof code_too_long);
    code_too_long[0] = 0;
    code_too_long[1] = PGW_CACHE_ENTRY_MAX_CODE + 1;
    memset(code_too_long + 2 + PGW_CACHE_ENTRY_MAX_CODE + 1, 0, 4);
    uint8_t big[512];
    n = raw_entry(big, 1, 2, 0, code_too_long, sizeof code_too_long, sizeof code_too_long);
    CHECK(pgw_cache_entry_decode(big, n, &d) == -1);

    /* Times out of order. */
    pgw_cache_entry e = positive((const uint8_t *)"ab", 2);
    size_t len;
    uint8_t *enc = pgw_cache_entry_encode(&e, &len);
    CHECK(enc != NULL);
    if (enc) {
        enc[16] = 0x80; /* fresh_until becomes hugely negative: before fetched_at */
        CHECK(pgw_cache_entry_decode(enc, len, &d) == -1);
        free(enc);
    }
}

/* Decoded results must point inside the input and be internally consistent. */
static void check_sane(const uint8_t *buf, size_t len, const pgw_cache_entry *d)
{
    CHECK(d->fetched_at_ms <= d->fresh_until_ms && d->fresh_until_ms <= d->stale_until_ms);
    if (d->kind == PGW_CACHE_ENTRY_POSITIVE)
        CHECK(d->job_pb == buf + PGW_CACHE_ENTRY_HEADER_LEN &&
              d->job_pb_len == len - PGW_CACHE_ENTRY_HEADER_LEN);
    else
        CHECK(d->kind == PGW_CACHE_ENTRY_NEGATIVE &&
              strlen(d->error_code) <= PGW_CACHE_ENTRY_MAX_CODE);
}

/* Strings that are not UTF-8 make the entry a miss (and cannot be written): the HTTP
 * frontend puts them into a JSON error body, which jansson cannot build from invalid UTF-8, so
 * a NOT_FOUND from such a Redis value became a 500 "out of memory". Found by
 * fuzz_cache_entry's invariant. */
static void test_strings_must_be_utf8(void)
{
    uint8_t buf[256];
    pgw_cache_entry d;
    static const uint8_t bad[][12] = {
        {0, 1, 'A', 0, 1, 0xff, 0, 0},             /* message: never valid */
        {0, 1, 0xc3, 0, 1, 'b', 0, 0},             /* code: cut sequence */
        {0, 1, 'A', 0, 1, 'b', 0, 2, 0xc0, 0xaf},  /* request id: overlong */
        {0, 1, 'A', 0, 3, 0xed, 0xa0, 0x80, 0, 0}, /* message: surrogate */
    };
    static const size_t bad_len[] = {8, 8, 10, 10};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = raw_entry(buf, 1, 2, 0, bad[i], (uint32_t)bad_len[i], (uint32_t)bad_len[i]);
        CHECK(pgw_cache_entry_decode(buf, n, &d) == -1);
    }
    const uint8_t utf8[] = {0, 1, 'A', 0, 2, 0xc3, 0xa9, 0, 0};
    size_t n = raw_entry(buf, 1, 2, 0, utf8, sizeof utf8, sizeof utf8);
    CHECK(pgw_cache_entry_decode(buf, n, &d) == 0);
    CHECK_STR(d.message, "\xc3\xa9");

    pgw_cache_entry e;
    memset(&e, 0, sizeof e);
    e.kind = PGW_CACHE_ENTRY_NEGATIVE;
    strcpy(e.message, "\xff");
    size_t len;
    CHECK(pgw_cache_entry_encode(&e, &len) == NULL);
    strcpy(e.message, "caf\xc3\xa9");
    uint8_t *out = pgw_cache_entry_encode(&e, &len);
    CHECK(out != NULL);
    free(out);
}

static void test_fuzz(void)
{
    srand(12345);
    pgw_cache_entry d;
    /* Random bytes, sometimes with a valid-looking header. */
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand() % 160);
        uint8_t *buf = malloc(len ? len : 1);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rand();
        if (len >= 36 && (i & 1)) {
            memcpy(buf, "PGW1", 4);
            buf[4] = 1;
            buf[5] = (uint8_t)(1 + (rand() & 1));
            buf[6] = buf[7] = 0;
            memset(buf + 8, 0, 24);
            uint32_t pl = (uint32_t)(len - 36);
            if (rand() % 4 == 0)
                pl += (uint32_t)(rand() % 3) - 1;
            buf[32] = (uint8_t)(pl >> 24);
            buf[33] = (uint8_t)(pl >> 16);
            buf[34] = (uint8_t)(pl >> 8);
            buf[35] = (uint8_t)pl;
        }
        if (pgw_cache_entry_decode(buf, len, &d) == 0) {
            accepted++;
            check_sane(buf, len, &d);
        }
        free(buf);
    }
    CHECK(accepted > 0); /* the header-shaped half must sometimes get through */

    /* Every truncation and every single-bit flip of valid entries. */
    pgw_cache_entry e;
    memset(&e, 0, sizeof e);
    e.kind = PGW_CACHE_ENTRY_NEGATIVE;
    e.fetched_at_ms = 1;
    e.fresh_until_ms = 2;
    e.stale_until_ms = 3;
    snprintf(e.error_code, sizeof e.error_code, "ResourceNotFoundException");
    snprintf(e.message, sizeof e.message, "gone");
    const uint8_t pb[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    pgw_cache_entry p = positive(pb, sizeof pb);
    const pgw_cache_entry *samples[2] = {&e, &p};
    for (int s = 0; s < 2; s++) {
        size_t len;
        uint8_t *enc = pgw_cache_entry_encode(samples[s], &len);
        CHECK(enc != NULL);
        if (!enc)
            continue;
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *t = malloc(cut ? cut : 1); /* exact size so ASan sees any overread */
            memcpy(t, enc, cut);
            CHECK(pgw_cache_entry_decode(t, cut, &d) == -1);
            free(t);
        }
        for (size_t bit = 0; bit < len * 8; bit++) {
            uint8_t *t = malloc(len);
            memcpy(t, enc, len);
            t[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            if (pgw_cache_entry_decode(t, len, &d) == 0)
                check_sane(t, len, &d);
            if (bit / 8 < 8) /* magic, version, kind, reserved: every flip must be refused */
                CHECK(pgw_cache_entry_decode(t, len, &d) == -1);
            free(t);
        }
        free(enc);
    }
}

static void test_freshness(void)
{
    pgw_cache_entry e = positive(NULL, 0);
    CHECK(pgw_cache_entry_is_fresh(&e, e.fresh_until_ms - 1));
    CHECK(!pgw_cache_entry_is_fresh(&e, e.fresh_until_ms));
    CHECK(!pgw_cache_entry_is_stale_usable(&e, e.fresh_until_ms - 1));
    CHECK(pgw_cache_entry_is_stale_usable(&e, e.fresh_until_ms));
    CHECK(pgw_cache_entry_is_stale_usable(&e, e.stale_until_ms - 1));
    CHECK(!pgw_cache_entry_is_stale_usable(&e, e.stale_until_ms));
}

int main(void)
{
    test_round_trips();
    test_encode_rejects();
    test_decode_rejects();
    test_strings_must_be_utf8();
    test_fuzz();
    test_freshness();
    return pgw_test_finish("test_cache_entry");
}
