/* Fuzz target: ARN parsing (service/aws/arn.c), the first check on every caller's input.
 * Invariants: an accepted ARN is exactly the one rebuilt from its parts (nothing was dropped
 * or normalised), its endpoint host has only [a-z0-9.-]; a refusal has a printable message and
 * a zeroed result; the answer does not depend on the error buffer. */
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/aws/arn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgw_arn a;
    char err[300];
    const char *s = (const char *)data;
    int rc = pgw_arn_parse(s, size, &a, err, sizeof(err));
    pgw_arn b;
    char small[8];
    FUZZ_ASSERT(pgw_arn_parse(s, size, &b, NULL, 0) == rc);
    FUZZ_ASSERT(pgw_arn_parse(s, size, &b, small, sizeof(small)) == rc);
    FUZZ_ASSERT(memchr(small, '\0', sizeof(small)) != NULL);
    if (rc == 0) {
        FUZZ_ASSERT(err[0] == '\0');
        FUZZ_ASSERT(memcmp(&a, &b, sizeof(a)) == 0);
        char back[PGW_ARN_MAX_LEN + 64];
        int n = snprintf(back, sizeof(back), "arn:%s:personalize:%s:%s:batch-inference-job/%s",
                         a.partition, a.region, a.account, a.job_name);
        FUZZ_ASSERT(n > 0 && (size_t)n == size && memcmp(back, s, size) == 0);
        char ep[256];
        FUZZ_ASSERT(pgw_arn_default_endpoint(&a, ep, sizeof(ep)) == 0);
        FUZZ_ASSERT(strncmp(ep, "https://personalize.", 20) == 0);
        for (const char *p = ep + 8; *p; p++)
            FUZZ_ASSERT(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '.' ||
                        *p == '-');
        char tiny[10];
        FUZZ_ASSERT(pgw_arn_default_endpoint(&a, tiny, sizeof(tiny)) == -1 && tiny[0] == '\0');
    } else {
        FUZZ_ASSERT(rc == -1);
        FUZZ_ASSERT(err[0] != '\0' && fuzz_printable(err));
        static const pgw_arn zero;
        FUZZ_ASSERT(memcmp(&a, &zero, sizeof(a)) == 0);
    }
    return 0;
}
