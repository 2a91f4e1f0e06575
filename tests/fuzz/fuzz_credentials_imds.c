/* Fuzz target: EC2 instance metadata answers (service/aws/credentials_imds.c): the session
 * token, the role list and the credentials JSON. Input: one byte picks the step, the rest is
 * IMDS' body. Invariants: a token accepted can go into a header; a role accepted is one path
 * segment of IAM role characters (not a dot segment); credentials accepted can be used in
 * headers; refusals explain themselves in a JSON-safe line. */
#include <stdint.h>
#include <string.h>

#include "fuzz_credentials_util.h"
#include "service/aws/credentials_imds.h"
#include "service/aws/credentials_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 3) {
    case 0: {
        char token[PGW_IMDS_MAX_TOKEN + 1];
        if (pgw_imds_parse_token(body, len, token, sizeof(token)) == 0) {
            FUZZ_ASSERT(strlen(token) == len && memcmp(token, body, len) == 0);
            for (const char *p = token; *p; p++)
                FUZZ_ASSERT((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
        } else {
            FUZZ_ASSERT(token[0] == '\0');
        }
        break;
    }
    case 1: {
        char role[PGW_IMDS_MAX_ROLE + 1];
        if (pgw_imds_parse_role(body, len, role, sizeof(role)) == 0) {
            size_t n = strlen(role);
            FUZZ_ASSERT(n >= 1 && n <= PGW_IMDS_MAX_ROLE && memcmp(role, body, n) == 0);
            FUZZ_ASSERT(strspn(role, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789+=,.@_-") == n);
            FUZZ_ASSERT(strcmp(role, ".") != 0 && strcmp(role, "..") != 0);
        } else {
            FUZZ_ASSERT(role[0] == '\0');
        }
        break;
    }
    default: {
        char err[300] = "";
        pgw_credentials *c = pgw_credentials_from_json(body, len, "imds", err, sizeof(err));
        if (c) {
            fuzz_check_credentials(c);
            pgw_credentials_unref(c);
        } else {
            FUZZ_ASSERT(err[0] && fuzz_json_safe_str(err));
        }
        break;
    }
    }
    return 0;
}
