/* Fuzz target: container credentials (EKS Pod Identity, ECS; credentials_container.c): the
 * endpoint's JSON answer, the RFC 3339 expiration inside it, and the endpoint URL allow-list.
 * Input: one byte picks the part, the rest is the answer, the time or the URL. Invariants:
 * credentials accepted can be used in headers; a refusal explains itself in a JSON-safe line;
 * a time accepted is a whole RFC 3339 string and re-parses to the same instant; a URL allowed
 * is https, or http to an allowed host (checked in fuzz_url). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_credentials_util.h"
#include "service/aws/credentials_container.h"
#include "service/aws/credentials_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char *s = malloc(len + 1);
    if (!s)
        return 0;
    memcpy(s, body, len);
    s[len] = '\0';
    switch (data[0] % 3) {
    case 0: {
        char err[300] = "";
        pgw_credentials *c = pgw_credentials_from_json(body, len, "container", err, sizeof(err));
        if (c) {
            fuzz_check_credentials(c);
            pgw_credentials_unref(c);
        } else {
            FUZZ_ASSERT(err[0] && fuzz_json_safe_str(err));
        }
        break;
    }
    case 1: {
        int64_t ms = 0;
        if (pgw_credentials_parse_time(s, &ms) == 0) {
            FUZZ_ASSERT(strlen(s) >= 20); /* YYYY-MM-DDTHH:MM:SSZ at least */
            int64_t again = 0;
            FUZZ_ASSERT(pgw_credentials_parse_time(s, &again) == 0 && again == ms);
        }
        break;
    }
    default: {
        int allowed = pgw_credentials_container_url_allowed(s);
        if (allowed)
            FUZZ_ASSERT(strncasecmp(s, "https:", 6) == 0 || strncasecmp(s, "http:", 5) == 0 ||
                        strstr(s, "://") == NULL);
        break;
    }
    }
    free(s);
    return 0;
}
