/* Fuzz target: AWS JSON 1.1 error answers (service/aws/aws_error.c). Input: 2 bytes of HTTP
 * status, then the x-amzn-ErrorType header up to the first NUL (absent if there is none), then
 * the body. Invariants: the code is printable, normalised (no '#' or ':', no surrounding
 * blanks) and bounded; the message is bounded, JSON-safe UTF-8 without control characters
 * (it goes into logs and status lines); the flags agree with the code's classification;
 * normalising is idempotent. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/aws/aws_error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int status = (data[0] << 8 | data[1]) % 1000;
    const char *rest = (const char *)data + 2;
    size_t rest_len = size - 2;
    const char *nul = memchr(rest, '\0', rest_len);
    char header[256];
    const char *hdr = NULL;
    const char *body = rest;
    size_t body_len = rest_len;
    if (nul) {
        size_t hl = (size_t)(nul - rest);
        if (hl >= sizeof(header))
            hl = sizeof(header) - 1;
        memcpy(header, rest, hl);
        header[hl] = '\0';
        hdr = header;
        body = nul + 1;
        body_len = rest_len - (size_t)(nul + 1 - rest);
    }
    pgw_aws_error e;
    pgw_aws_error_parse(status, hdr, body, body_len, &e);
    FUZZ_ASSERT(e.http_status == status);
    FUZZ_ASSERT(strlen(e.code) < sizeof(e.code) && fuzz_printable(e.code));
    FUZZ_ASSERT(strchr(e.code, '#') == NULL && strchr(e.code, ':') == NULL);
    size_t cl = strlen(e.code);
    FUZZ_ASSERT(cl == 0 || (e.code[0] != ' ' && e.code[cl - 1] != ' '));
    FUZZ_ASSERT(strlen(e.message) < sizeof(e.message) && fuzz_json_safe_str(e.message));
    for (const char *m = e.message; *m; m++)
        FUZZ_ASSERT((unsigned char)*m >= 0x20 && *m != 0x7f);
    if (e.throttling && e.code[0])
        FUZZ_ASSERT(pgw_aws_error_is_throttling_code(e.code));
    if (e.expired_token)
        FUZZ_ASSERT(e.credentials_problem);
    pgw_aws_error c = e;
    pgw_aws_error_classify(&c);
    FUZZ_ASSERT(c.status == e.status && c.retryable == e.retryable &&
                c.throttling == e.throttling && c.credentials_problem == e.credentials_problem &&
                c.expired_token == e.expired_token);
    char again[PGW_AWS_ERROR_CODE_MAX];
    size_t n = pgw_aws_error_normalize_code(e.code, cl, again, sizeof(again));
    FUZZ_ASSERT(n == cl && strcmp(again, e.code) == 0);
    /* Normalising raw bytes directly (NULs and all). */
    char raw[PGW_AWS_ERROR_CODE_MAX];
    n = pgw_aws_error_normalize_code(rest, rest_len, raw, sizeof(raw));
    FUZZ_ASSERT(n == strlen(raw) && n < sizeof(raw) && fuzz_printable(raw));
    return 0;
}
