/* Fuzz target: STS answers (service/aws/credentials_sts.c, XML through expat). Input: one
 * byte picks the HTTP status (200, 400, 403, 500), the rest is the body. Invariants: a success
 * gives credentials whose key id and token can go into a header (fuzz_credentials_util.h); a
 * failure explains itself in a JSON-safe line (it is logged), bounded, and without the secret;
 * nothing leaks. */
#include <stdint.h>
#include <string.h>

#include "fuzz_credentials_util.h"
#include "service/aws/credentials.h"
#include "service/aws/credentials_sts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const long statuses[] = {200, 400, 403, 500};
    long status = statuses[data[0] % 4];
    pgw_credentials *creds = (pgw_credentials *)1;
    char err[400] = "";
    int rc = pgw_sts_parse_answer(status, (const char *)data + 1, size - 1, "fuzz", &creds, err,
                                  sizeof(err));
    if (rc == 0) {
        FUZZ_ASSERT(status == 200 && creds != NULL);
        fuzz_check_credentials(creds);
        pgw_credentials_unref(creds);
    } else {
        FUZZ_ASSERT(rc == -1 && creds == NULL);
        FUZZ_ASSERT(err[0] != '\0' && fuzz_json_safe_str(err));
        for (const char *c = err; *c; c++)
            FUZZ_ASSERT((unsigned char)*c >= 0x20 && *c != 0x7f);
    }
    return 0;
}
