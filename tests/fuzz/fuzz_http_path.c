/* Fuzz target: the request target of an HTTP request: libevent's URI parser (as evhttp uses
 * it for every request), the route (service/http_request.c), the REST path's percent-decoding
 * and the ARN check. Input: the request target ("/v1/batch-inference-jobs/arn%3A..."). The
 * evhttp_uri_parse flags are the ones evhttp uses for request lines.
 * Invariants: a REST route's rest is a non-empty suffix of the path; the decoded ARN keeps
 * its length (a "%00" shows in it) and never grows; the ARN check accepts it only when it has
 * no NUL and is ASCII, in which case re-encoding it gives a path that decodes to the same. */
#include <event2/http.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/aws/arn.h"
#include "service/http_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *target = malloc(size + 1);
    if (!target)
        return 0;
    memcpy(target, data, size);
    target[size] = '\0';
    struct evhttp_uri *uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *rest = NULL;
    pgw_http_route route = pgw_http_route_of(path, &rest);
    if (route == PGW_HTTP_ROUTE_REST) {
        size_t plen = strlen(path), rlen = strlen(rest);
        FUZZ_ASSERT(rlen > 0 && rlen < plen && rest == path + (plen - rlen));
        size_t len = 0;
        char *arn = pgw_http_rest_arn(rest, &len);
        FUZZ_ASSERT(arn != NULL && len <= rlen && arn[len] == '\0');
        pgw_arn a;
        if (pgw_arn_parse(arn, len, &a, NULL, 0) == 0) {
            FUZZ_ASSERT(memchr(arn, '\0', len) == NULL);
            for (size_t i = 0; i < len; i++)
                FUZZ_ASSERT((unsigned char)arn[i] < 0x80);
            char *enc = evhttp_uriencode(arn, (ev_ssize_t)len, 0);
            FUZZ_ASSERT(enc != NULL);
            size_t back_len = 0;
            char *back = pgw_http_rest_arn(enc, &back_len);
            FUZZ_ASSERT(back && back_len == len && memcmp(back, arn, len) == 0);
            free(back);
            free(enc);
        }
        free(arn);
    } else if (route == PGW_HTTP_ROUTE_AWS) {
        FUZZ_ASSERT(!path || !*path || strcmp(path, "/") == 0);
    }
    if (uri)
        evhttp_uri_free(uri);
    free(target);
    return 0;
}
