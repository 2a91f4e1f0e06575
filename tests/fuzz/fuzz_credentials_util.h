/* Invariants on credentials a source built from an untrusted answer. */
#ifndef PGW_FUZZ_CREDENTIALS_UTIL_H
#define PGW_FUZZ_CREDENTIALS_UTIL_H

#include "fuzz_util.h"
#include "service/aws/credentials.h"

/* The key id and the session token go into request headers (Authorization,
 * X-Amz-Security-Token): printable ASCII without spaces, so no CR/LF can add a header and no
 * NUL can cut one. The secret only feeds HMAC, but it must not be empty. */
static inline void fuzz_check_credentials(const pgw_credentials *c)
{
    FUZZ_ASSERT(c && c->access_key_id && c->access_key_id[0]);
    FUZZ_ASSERT(c->secret_access_key && c->secret_access_key[0]);
    for (const char *p = c->access_key_id; *p; p++)
        FUZZ_ASSERT((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
    for (const char *p = c->session_token; p && *p; p++)
        FUZZ_ASSERT((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f);
}

#endif
