/* Unit tests for service/aws/aws_error: code normalisation, the DESIGN.md status table, the
 * standard-retry flags, and hostile bodies. */
#include "service/aws/aws_error.h"

#include <string.h>

#include "test_util.h"

typedef struct row {
    int http;
    const char *header;
    const char *body;
    const char *code;
    pgw_code status;
    int retryable, throttling, credentials, expired;
} row;

static void check_row(const row *r, size_t i)
{
    pgw_aws_error e;
    memset(&e, 0x5a, sizeof(e));
    pgw_aws_error_parse(r->http, r->header, r->body, r->body ? strlen(r->body) : 0, &e);
    int before = pgw_test_failures;
    CHECK(e.http_status == r->http);
    CHECK_STR(e.code, r->code);
    CHECK(e.status == r->status);
    CHECK(e.retryable == (r->retryable != 0));
    CHECK(e.throttling == (r->throttling != 0));
    CHECK(e.credentials_problem == (r->credentials != 0));
    CHECK(e.expired_token == (r->expired != 0));
    if (pgw_test_failures != before)
        fprintf(stderr, "  row %zu: http %d code \"%s\" status %s\n", i, r->http, e.code,
                pgw_code_name(e.status));
}

static void test_table(void)
{
    static const row rows[] = {
        /* The codes DESIGN.md names, in their usual forms. */
        {400, NULL, "{\"__type\":\"InvalidInputException\",\"message\":\"bad\"}",
         "InvalidInputException", PGW_INVALID_ARGUMENT, 0, 0, 0, 0},
        {400, NULL,
         "{\"__type\":\"com.amazon.coral.service#ResourceNotFoundException\",\"message\":\"x\"}",
         "ResourceNotFoundException", PGW_NOT_FOUND, 0, 0, 0, 0},
        {400, NULL,
         "{\"__type\":\"ResourceNotFoundException:http://internal.amazon.com/coral/"
         "com.amazon.coral.validate/\"}",
         "ResourceNotFoundException", PGW_NOT_FOUND, 0, 0, 0, 0},
        {400, NULL, "{\"__type\":\"aws.proto#ResourceNotFoundException:http://x/#frag\"}",
         "ResourceNotFoundException", PGW_NOT_FOUND, 0, 0, 0, 0},
        {400, NULL, "{\"code\":\"ResourceNotFoundException\"}", "ResourceNotFoundException",
         PGW_NOT_FOUND, 0, 0, 0, 0},
        {400, NULL, "{\"__type\":\"AccessDeniedException\",\"Message\":\"no\"}",
         "AccessDeniedException", PGW_PERMISSION_DENIED, 0, 0, 0, 0},
        {400, NULL, "{\"__type\":\"ThrottlingException\"}", "ThrottlingException", PGW_UNAVAILABLE,
         1, 1, 0, 0},
        {400, NULL, "{\"__type\":\"com.amazonaws.personalize#LimitExceededException\"}",
         "LimitExceededException", PGW_UNAVAILABLE, 1, 1, 0, 0},
        {400, NULL, "{\"__type\":\"UnrecognizedClientException\"}", "UnrecognizedClientException",
         PGW_UNAVAILABLE, 0, 0, 1, 0},
        {403, NULL, "{\"__type\":\"InvalidSignatureException\"}", "InvalidSignatureException",
         PGW_UNAVAILABLE, 0, 0, 1, 0},
        {403, NULL, "{\"__type\":\"ExpiredTokenException\"}", "ExpiredTokenException",
         PGW_UNAVAILABLE, 0, 0, 1, 1},
        {403, NULL, "{\"__type\":\"InvalidClientTokenId\"}", "InvalidClientTokenId",
         PGW_UNAVAILABLE, 0, 0, 1, 0},
        {403, NULL, "{\"__type\":\"MissingAuthenticationToken\"}", "MissingAuthenticationToken",
         PGW_UNAVAILABLE, 0, 0, 1, 0},
        /* Anything else is INTERNAL, unless the status says the server failed. */
        {400, NULL, "{\"__type\":\"ResourceInUseException\"}", "ResourceInUseException",
         PGW_INTERNAL, 0, 0, 0, 0},
        {400, NULL, "{\"__type\":\"ValidationException\"}", "ValidationException", PGW_INTERNAL, 0,
         0, 0, 0},
        {400, NULL, "{}", "", PGW_INTERNAL, 0, 0, 0, 0},
        {500, NULL, "{\"__type\":\"InternalFailure\"}", "InternalFailure", PGW_UNAVAILABLE, 1, 0, 0,
         0},
        {501, NULL, NULL, "", PGW_UNAVAILABLE, 0, 0, 0, 0},
        {502, NULL, "<html>Bad Gateway</html>", "", PGW_UNAVAILABLE, 1, 0, 0, 0},
        {503, NULL, "", "", PGW_UNAVAILABLE, 1, 0, 0, 0},
        {504, NULL, NULL, "", PGW_UNAVAILABLE, 1, 0, 0, 0},
        {503, NULL, "{\"__type\":\"ServiceUnavailable\"}", "ServiceUnavailable", PGW_UNAVAILABLE, 1,
         0, 0, 0},
        /* A precise code still wins over a server status. */
        {500, NULL, "{\"__type\":\"ResourceNotFoundException\"}", "ResourceNotFoundException",
         PGW_NOT_FOUND, 1, 0, 0, 0},
        {429, NULL, NULL, "", PGW_UNAVAILABLE, 1, 1, 0, 0},
        {404, NULL, "not json", "", PGW_INTERNAL, 0, 0, 0, 0},
        /* Header only, or header plus a body without a code. */
        {400, "ResourceNotFoundException:http://internal.amazon.com/coral/x/", NULL,
         "ResourceNotFoundException", PGW_NOT_FOUND, 0, 0, 0, 0},
        {400, "com.amazon.coral.service#InvalidInputException", "{\"message\":\"m\"}",
         "InvalidInputException", PGW_INVALID_ARGUMENT, 0, 0, 0, 0},
        {400, "ThrottlingException", "garbage{", "ThrottlingException", PGW_UNAVAILABLE, 1, 1, 0,
         0},
        /* The body wins over the header. */
        {400, "ThrottlingException", "{\"__type\":\"InvalidInputException\"}",
         "InvalidInputException", PGW_INVALID_ARGUMENT, 0, 0, 0, 0},
        /* Non-string __type is ignored, the header then answers. */
        {400, "AccessDeniedException", "{\"__type\":42}", "AccessDeniedException",
         PGW_PERMISSION_DENIED, 0, 0, 0, 0},
        {400, NULL, "[\"__type\"]", "", PGW_INTERNAL, 0, 0, 0, 0},
        {400, NULL, "\"ResourceNotFoundException\"", "", PGW_INTERNAL, 0, 0, 0, 0},
        {400, NULL, "{\"__type\":\"  ThrottlingException \"}", "ThrottlingException",
         PGW_UNAVAILABLE, 1, 1, 0, 0},
        {400, NULL, "{\"__type\":\"Bad\\u0001Code\"}", "Bad?Code", PGW_INTERNAL, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        check_row(&rows[i], i);
}

/* Every throttling code in botocore's standard list: retryable, UNAVAILABLE. */
static void test_throttling_codes(void)
{
    static const char *const codes[] = {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char body[200];
        snprintf(body, sizeof(body), "{\"__type\":\"ns.x#%s\",\"message\":\"slow\"}", codes[i]);
        pgw_aws_error e;
        pgw_aws_error_parse(400, NULL, body, strlen(body), &e);
        CHECK_STR(e.code, codes[i]);
        CHECK(e.throttling && e.retryable && !e.credentials_problem);
        CHECK(e.status == PGW_UNAVAILABLE);
        CHECK_STR(e.message, "slow");
        CHECK(pgw_aws_error_is_throttling_code(codes[i]));
    }
    CHECK(!pgw_aws_error_is_throttling_code("throttlingexception"));
    CHECK(!pgw_aws_error_is_throttling_code("ThrottlingExceptionX"));
    CHECK(!pgw_aws_error_is_throttling_code(""));
    CHECK(!pgw_aws_error_is_throttling_code(NULL));
}

static void test_normalize(void)
{
    char out[32];
    const char *raw = "a.b#c#Code:x#y";
    CHECK(pgw_aws_error_normalize_code(raw, strlen(raw), out, sizeof(out)) == 4);
    CHECK_STR(out, "Code");
    CHECK(pgw_aws_error_normalize_code("#", 1, out, sizeof(out)) == 0);
    CHECK_STR(out, "");
    CHECK(pgw_aws_error_normalize_code(":abc", 4, out, sizeof(out)) == 0);
    CHECK(pgw_aws_error_normalize_code(NULL, 0, out, sizeof(out)) == 0);
    /* Only raw_len bytes are read. */
    CHECK(pgw_aws_error_normalize_code("SlowDownXYZ", 8, out, sizeof(out)) == 8);
    CHECK_STR(out, "SlowDown");
    /* Truncated to the buffer. */
    char tiny[5];
    CHECK(pgw_aws_error_normalize_code("ABCDEFGH", 8, tiny, sizeof(tiny)) == 4);
    CHECK_STR(tiny, "ABCD");
    CHECK_STR(out, "SlowDown");
    CHECK(pgw_aws_error_normalize_code("Tab\tIn\x01"
                                       "Code\xff",
                                       12, out, sizeof(out)) == 12);
    CHECK_STR(out, "Tab?In?Code?");
    /* A cut that lands on blanks drops them too, so the result normalises to itself (found
     * by fuzz_aws_error: a 200-byte type with spaces at the cut). */
    CHECK(pgw_aws_error_normalize_code("ABC  DEF", 8, tiny, sizeof(tiny)) == 3);
    CHECK_STR(tiny, "ABC");
    CHECK(pgw_aws_error_normalize_code("AB\t DEF", 7, tiny, sizeof(tiny)) == 2);
    CHECK_STR(tiny, "AB");
    char again[5];
    CHECK(pgw_aws_error_normalize_code(tiny, strlen(tiny), again, sizeof(again)) == 2);
    CHECK_STR(again, "AB");
    pgw_aws_error e;
    char body[400];
    snprintf(body, sizeof(body), "{\"__type\":\"%0126d   Throttling\"}", 7);
    pgw_aws_error_parse(400, NULL, body, strlen(body), &e);
    CHECK(strlen(e.code) == 126 && e.code[125] == '7');
}

static int printable_utf8(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c == 0xc2 && (unsigned char)s[1] >= 0x80 && (unsigned char)s[1] <= 0x9f)
            return 0;
    }
    return 1;
}

static void test_messages(void)
{
    pgw_aws_error e;
    const char *b = "{\"__type\":\"InvalidInputException\",\"message\":\"line1\\nline2\\r\\t"
                    "\\u0000\\u001b[31m\\u0085end\"}";
    pgw_aws_error_parse(400, NULL, b, strlen(b), &e);
    CHECK_STR(e.code, "InvalidInputException");
    CHECK(printable_utf8(e.message));
    CHECK(strncmp(e.message, "line1 line2", 11) == 0);
    CHECK(strstr(e.message, "end") != NULL);

    /* "message" wins over "Message"; a non-string message is ignored. */
    b = "{\"__type\":\"X\",\"Message\":\"upper\",\"message\":\"lower\"}";
    pgw_aws_error_parse(400, NULL, b, strlen(b), &e);
    CHECK_STR(e.message, "lower");
    b = "{\"__type\":\"X\",\"message\":{\"a\":1},\"Message\":\"upper\"}";
    pgw_aws_error_parse(400, NULL, b, strlen(b), &e);
    CHECK_STR(e.message, "upper");
    b = "{\"__type\":\"X\",\"message\":null}";
    pgw_aws_error_parse(400, NULL, b, strlen(b), &e);
    CHECK_STR(e.message, "");

    /* A long message is bounded, ends in "...", and no UTF-8 character is split: 2000 copies
     * of the 2-byte "é". */
    static char big[8192];
    size_t n = (size_t)snprintf(big, sizeof(big), "{\"__type\":\"X\",\"message\":\"");
    for (int i = 0; i < 2000; i++) {
        big[n++] = (char)0xc3;
        big[n++] = (char)0xa9;
    }
    memcpy(big + n, "\"}", 3);
    pgw_aws_error_parse(400, NULL, big, strlen(big), &e);
    size_t ml = strlen(e.message);
    CHECK(ml < sizeof(e.message));
    CHECK(ml > sizeof(e.message) - 8);
    CHECK(ml >= 3 && strcmp(e.message + ml - 3, "...") == 0);
    CHECK((ml - 3) % 2 == 0); /* whole characters only */
    CHECK((unsigned char)e.message[0] == 0xc3);

    /* A long code is bounded too. */
    n = (size_t)snprintf(big, sizeof(big), "{\"__type\":\"");
    memset(big + n, 'C', 1000);
    memcpy(big + n + 1000, "\"}", 3);
    pgw_aws_error_parse(400, NULL, big, strlen(big), &e);
    CHECK(strlen(e.code) == PGW_AWS_ERROR_CODE_MAX - 1);
    CHECK(e.status == PGW_INTERNAL);

    /* Truncated JSON, binary garbage, and an over-sized body: classified by status alone. */
    const char garbage[] = "\x00\xff{\"__type\":\"ThrottlingException\"";
    pgw_aws_error_parse(503, NULL, garbage, sizeof(garbage), &e);
    CHECK_STR(e.code, "");
    CHECK(e.status == PGW_UNAVAILABLE && e.retryable && !e.throttling);
    pgw_aws_error_parse(400, NULL, "{\"__type\":", 10, &e);
    CHECK_STR(e.code, "");
    CHECK(e.status == PGW_INTERNAL && !e.retryable);
}

static void test_classify_direct(void)
{
    pgw_aws_error e;
    memset(&e, 0, sizeof(e));
    e.http_status = 400;
    snprintf(e.code, sizeof(e.code), "ExpiredToken");
    pgw_aws_error_classify(&e);
    CHECK(e.expired_token && e.credentials_problem && e.status == PGW_UNAVAILABLE);
    CHECK(!e.retryable);
}

int main(void)
{
    test_table();
    test_throttling_codes();
    test_normalize();
    test_messages();
    test_classify_direct();
    return pgw_test_finish("test_aws_error");
}
