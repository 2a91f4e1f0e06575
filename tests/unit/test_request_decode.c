/* request_decode: the ARN comes out of the gRPC request's wire bytes with its length, so an
 * embedded NUL or a byte that is not ASCII reaches the ARN check (issue 12's "a NUL inside an
 * ARN" defect: the public descriptor would hand over "...job/x" for "...job/x\0anything"). */
#include <stdint.h>
#include <string.h>

#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/aws/arn.h"
#include "service/request_decode.h"
#include "test_util.h"

#define GOOD "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/x"

/* A request with field 1 (length-delimited) holding exactly the n bytes at s. */
static size_t wire(const char *s, size_t n, uint8_t *out)
{
    size_t o = 0;
    out[o++] = 0x0a; /* field 1, wire type 2 */
    size_t v = n;
    do {
        out[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memcpy(out + o, s, n);
    return o + n;
}

static void test_round_trip_with_the_public_encoder(void)
{
    PersonalizeGateway__V1__DescribeBatchInferenceJobRequest req =
        PERSONALIZE_GATEWAY__V1__DESCRIBE_BATCH_INFERENCE_JOB_REQUEST__INIT;
    req.batch_inference_job_arn = GOOD;
    uint8_t buf[512];
    size_t n = personalize_gateway__v1__describe_batch_inference_job_request__pack(&req, buf);
    char arn[300];
    size_t len = 99;
    char err[128] = "x";
    CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, err, sizeof(err)) == 0);
    CHECK(len == strlen(GOOD));
    CHECK_STR(arn, GOOD);
    CHECK_STR(err, "");
    pgw_arn a;
    CHECK(pgw_arn_parse(arn, len, &a, NULL, 0) == 0);
    CHECK_STR(a.job_name, "x");
}

/* The defect itself: the public descriptor cuts the string at the NUL, the twin does not, and
 * the ARN check then refuses it. */
static void test_embedded_nul_reaches_the_arn_check(void)
{
    static const char nul_arn[] = GOOD "\0anything";
    size_t nul_len = sizeof(nul_arn) - 1;
    uint8_t buf[512];
    size_t n = wire(nul_arn, nul_len, buf);

    PersonalizeGateway__V1__DescribeBatchInferenceJobRequest *pub =
        personalize_gateway__v1__describe_batch_inference_job_request__unpack(NULL, n, buf);
    CHECK(pub != NULL);
    if (pub) {
        CHECK(strlen(pub->batch_inference_job_arn) == strlen(GOOD)); /* what used to be used */
        personalize_gateway__v1__describe_batch_inference_job_request__free_unpacked(pub, NULL);
    }

    char arn[300];
    size_t len = 0;
    CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, NULL, 0) == 0);
    CHECK(len == nul_len);
    CHECK(memcmp(arn, nul_arn, nul_len) == 0);
    pgw_arn a;
    char err[300];
    CHECK(pgw_arn_parse(arn, len, &a, err, sizeof(err)) == -1);
    CHECK(strstr(err, "control character 0x00 at offset 64") != NULL);

    /* A NUL first, and a NUL alone. */
    n = wire("\0" GOOD, strlen(GOOD) + 1, buf);
    CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, NULL, 0) == 0);
    CHECK(len == strlen(GOOD) + 1 && pgw_arn_parse(arn, len, &a, NULL, 0) == -1);
    n = wire("\0", 1, buf);
    CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, NULL, 0) == 0);
    CHECK(len == 1 && pgw_arn_parse(arn, len, &a, NULL, 0) == -1);
}

static void test_invalid_utf8_reaches_the_arn_check(void)
{
    static const char *const tails[] = {
        "\xff",         /* never valid */
        "\xc3",         /* truncated sequence */
        "\x80",         /* lone continuation byte */
        "\xc0\xaf",     /* overlong '/' */
        "\xed\xa0\x80", /* UTF-16 surrogate */
        "\xc3\xa9",     /* valid UTF-8, but an ARN is ASCII */
    };
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        char s[128];
        int sl = snprintf(s, sizeof(s), "%s%s", GOOD, tails[i]);
        uint8_t buf[256];
        size_t n = wire(s, (size_t)sl, buf);
        char arn[300];
        size_t len = 0;
        CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, NULL, 0) == 0);
        CHECK(len == (size_t)sl && memcmp(arn, s, len) == 0);
        pgw_arn a;
        char err[300] = "";
        CHECK(pgw_arn_parse(arn, len, &a, err, sizeof(err)) == -1);
        CHECK(strstr(err, "non-ASCII byte at offset 64") != NULL);
    }
}

static void test_wire_shapes(void)
{
    char arn[300];
    size_t len = 7;
    char err[128];
    /* Empty message: proto3's default, the empty ARN (the ARN check says "is empty"). */
    CHECK(pgw_request_decode_arn(NULL, 0, arn, sizeof(arn), &len, err, sizeof(err)) == 0);
    CHECK(len == 0 && arn[0] == '\0');

    /* Unknown fields are skipped; a repeated field 1 counts as its last occurrence. */
    uint8_t buf[512];
    size_t n = 0;
    buf[n++] = 0x10; /* field 2, varint */
    buf[n++] = 0x05;
    n += wire("first", 5, buf + n);
    n += wire(GOOD, strlen(GOOD), buf + n);
    buf[n++] = 0x1a; /* field 3, length-delimited */
    buf[n++] = 0x01;
    buf[n++] = 'z';
    CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, NULL, 0) == 0);
    CHECK(len == strlen(GOOD));
    CHECK_STR(arn, GOOD);

    /* Not protobuf: truncated length, field 1 as a varint, field number 0, a bad wire type. */
    static const uint8_t bad[][4] = {
        {0x0a, 0x05, 'a', 'b'},
        {0x08, 0x01, 0x00, 0x00},
        {0x02, 0x01, 'a', 0x00},
        {0x0f, 0x01, 0x02, 0x03},
    };
    static const size_t bad_len[] = {4, 2, 3, 4};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        len = 5;
        CHECK(pgw_request_decode_arn(bad[i], bad_len[i], arn, sizeof(arn), &len, err,
                                     sizeof(err)) == -1);
        CHECK(len == 0 && arn[0] == '\0');
        CHECK_STR(err, "the request is not a valid protobuf message");
    }
    /* No output buffer, or bytes missing. */
    CHECK(pgw_request_decode_arn(buf, n, NULL, 0, &len, NULL, 0) == -1);
    CHECK(pgw_request_decode_arn(NULL, 3, arn, sizeof(arn), &len, NULL, 0) == -1);
}

/* Longer than the buffer: a prefix is kept, still longer than any ARN, so the check says so. */
static void test_long_arn_keeps_a_prefix_the_check_refuses(void)
{
    char big[1000];
    memset(big, 'a', sizeof(big));
    uint8_t buf[1100];
    size_t n = wire(big, sizeof(big), buf);
    char arn[PGW_ARN_MAX_LEN + 2];
    size_t len = 0;
    CHECK(pgw_request_decode_arn(buf, n, arn, sizeof(arn), &len, NULL, 0) == 0);
    CHECK(len == PGW_ARN_MAX_LEN + 1 && arn[len] == '\0');
    pgw_arn a;
    char err[300];
    CHECK(pgw_arn_parse(arn, len, &a, err, sizeof(err)) == -1);
    CHECK(strstr(err, "longer than 256") != NULL);
}

int main(void)
{
    test_round_trip_with_the_public_encoder();
    test_embedded_nul_reaches_the_arn_check();
    test_invalid_utf8_reaches_the_arn_check();
    test_wire_shapes();
    test_long_arn_keeps_a_prefix_the_check_refuses();
    return pgw_test_finish("test_request_decode");
}
