/* Fuzz target: URLs from configuration and the environment: --redis-url
 * (pgw_redis_url_parse), the endpoint URLs of the credentials sources (pgw_credentials_url_parts,
 * the container allow-list), and the STS endpoint built from a region name. Input: one byte
 * chooses the parser, the rest is the URL (or region).
 * Invariants: a Redis URL accepted has a host without control characters, a port in 1..65535
 * and a db in 0..15, and its password never shows in the error text; a container URL allowed
 * over plain http really names one of the allowed hosts; an STS endpoint built from a region
 * names a host under amazonaws.com. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/redis_tier.h"
#include "fuzz_util.h"
#include "service/aws/credentials_container.h"
#include "service/aws/credentials_source.h"
#include "service/aws/credentials_sts.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    unsetenv("AWS_ENDPOINT_URL_STS");
    unsetenv("AWS_ENDPOINT_URL");
    return 0;
}

static void no_control(const char *s)
{
    for (; *s; s++)
        FUZZ_ASSERT((unsigned char)*s >= 0x20 && *s != 0x7f);
}

static void redis_url(const char *url)
{
    pgw_redis_url u;
    char err[256] = "";
    if (pgw_redis_url_parse(url, &u, err, sizeof(err)) == 0) {
        FUZZ_ASSERT(u.host[0] != '\0');
        no_control(u.host);
        no_control(u.username);
        no_control(u.password);
        FUZZ_ASSERT(u.port >= 1 && u.port <= 65535);
        FUZZ_ASSERT(u.db >= 0 && u.db <= 15);
        /* A user without a password is valid: the password may come from
         * --redis-password-file (rediss://pgw-user@host). */
    } else {
        FUZZ_ASSERT(strncmp(err, "--redis-url: ", 13) == 0 && fuzz_printable(err));
        static const pgw_redis_url zero;
        FUZZ_ASSERT(memcmp(&u, &zero, sizeof(u)) == 0);
    }
}

static int allowed_http_host(const char *host)
{
    unsigned char a4[4], a6[16], want[16];
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, a4) == 1)
        return a4[0] == 127 ||
               (a4[0] == 169 && a4[1] == 254 && a4[2] == 170 && (a4[3] == 2 || a4[3] == 23));
    if (inet_pton(AF_INET6, host, a6) == 1) {
        static const unsigned char loop6[16] = {[15] = 1};
        inet_pton(AF_INET6, "fd00:ec2::23", want);
        return memcmp(a6, loop6, 16) == 0 || memcmp(a6, want, 16) == 0;
    }
    return 0;
}

static void endpoint_url(const char *url)
{
    char scheme[16], host[300], path[600], bare[300];
    int rc = pgw_credentials_url_parts(url, scheme, sizeof(scheme), host, sizeof(host), path,
                                       sizeof(path), bare, sizeof(bare));
    int allowed = pgw_credentials_container_url_allowed(url);
    if (rc != 0) {
        FUZZ_ASSERT(!allowed);
        return;
    }
    FUZZ_ASSERT(host[0] && bare[0] && path[0] == '/');
    for (const char *c = scheme; *c; c++)
        FUZZ_ASSERT(!(*c >= 'A' && *c <= 'Z'));
    if (allowed) {
        FUZZ_ASSERT(strcmp(scheme, "https") == 0 || strcmp(scheme, "http") == 0);
        if (strcmp(scheme, "http") == 0)
            FUZZ_ASSERT(allowed_http_host(bare));
    }
}

static void sts_endpoint(const char *region)
{
    char url[PGW_STS_URL_MAX];
    if (pgw_sts_endpoint(region, url, sizeof(url)) != 0)
        return;
    CURLU *u = curl_url();
    FUZZ_ASSERT(u != NULL);
    char *host = NULL;
    int ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
    /* The endpoint must be exactly sts.<region>.amazonaws.com(.cn), nothing else. */
    char want[PGW_STS_URL_MAX + 32];
    snprintf(want, sizeof(want), "sts.%s.amazonaws.com%s", region,
             strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    FUZZ_ASSERT(ok && strcmp(host, want) == 0);
    curl_free(host);
    curl_url_cleanup(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 3) {
    case 0:
        redis_url(s);
        break;
    case 1:
        endpoint_url(s);
        break;
    default:
        if (s[0])
            sts_endpoint(s);
        break;
    }
    free(s);
    return 0;
}
