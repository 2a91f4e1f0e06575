/* Unit test for service/metrics: the rendered text is parsed back line by line and checked for
 * the values recorded, the exposition format's rules (HELP/TYPE before samples, cumulative
 * buckets, count = +Inf bucket), bounded labels, and exact totals under concurrent updates. */
#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "service/metrics.h"
#include "test_util.h"

/* Returns the value of the sample whose text before the value is exactly `series` (e.g.
 * `pgw_coalesced_waiters_total` or `x{a="b"}`), or -1 when there is no such line. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

/* Checks the format of every line: comments are `# HELP name text` / `# TYPE name type`, a
 * sample's metric family was TYPE-declared before it, names and labels are well-formed. */
static void check_format(const char *text)
{
    char declared[64][96];
    int n_declared = 0;
    int lines = 0;
    const char *p = text;
    CHECK(text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *end = strchr(p, '\n');
        CHECK(end != NULL);
        if (!end)
            return;
        char line[512];
        size_t len = (size_t)(end - p);
        CHECK(len < sizeof(line));
        if (len >= sizeof(line))
            return;
        memcpy(line, p, len);
        line[len] = '\0';
        p = end + 1;
        lines++;
        if (line[0] == '#') {
            char kind[8], name[96], rest[300];
            CHECK(sscanf(line, "# %7s %95s %299[^\n]", kind, name, rest) == 3);
            CHECK(strcmp(kind, "HELP") == 0 || strcmp(kind, "TYPE") == 0);
            /* Ours, or the Prometheus clients' standard process_open_fds / process_max_fds. */
            CHECK(strncmp(name, "pgw_", 4) == 0 || strcmp(name, "process_open_fds") == 0 ||
                  strcmp(name, "process_max_fds") == 0);
            if (strcmp(kind, "TYPE") == 0) {
                CHECK(strcmp(rest, "counter") == 0 || strcmp(rest, "gauge") == 0 ||
                      strcmp(rest, "histogram") == 0);
                if (strcmp(rest, "counter") == 0) {
                    size_t nl = strlen(name);
                    CHECK(nl > 6 && strcmp(name + nl - 6, "_total") == 0);
                }
                if (n_declared < 64)
                    snprintf(declared[n_declared++], sizeof(declared[0]), "%s", name);
            }
            continue;
        }
        /* name[{labels}] value */
        size_t i = 0;
        while (isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == ':')
            i++;
        char name[96];
        CHECK(i > 0 && i < sizeof(name));
        snprintf(name, sizeof(name), "%.*s", (int)i, line);
        int known = 0;
        for (int d = 0; d < n_declared; d++) {
            size_t dl = strlen(declared[d]);
            if (strncmp(name, declared[d], dl) == 0 &&
                (name[dl] == '\0' || strcmp(name + dl, "_bucket") == 0 ||
                 strcmp(name + dl, "_sum") == 0 || strcmp(name + dl, "_count") == 0))
                known = 1;
        }
        if (!known)
            fprintf(stderr, "undeclared sample: %s\n", line);
        CHECK(known);
        if (line[i] == '{') {
            const char *close = strchr(line + i, '}');
            CHECK(close != NULL);
            if (!close)
                continue;
            /* label="value" pairs separated by commas */
            const char *q = line + i + 1;
            while (q < close) {
                const char *eq = strchr(q, '=');
                CHECK(eq && eq < close && eq[1] == '"');
                if (!eq || eq >= close)
                    break;
                const char *vend = strchr(eq + 2, '"');
                CHECK(vend && vend < close);
                if (!vend)
                    break;
                q = vend + 1;
                if (*q == ',')
                    q++;
            }
            i = (size_t)(close - line) + 1;
        }
        CHECK(line[i] == ' ');
        char *vend;
        strtod(line + i + 1, &vend);
        CHECK(vend != line + i + 1 && *vend == '\0');
    }
    CHECK(lines > 50);
}

static void test_values_and_format(void)
{
    pgw_metrics_reset();
    pgw_metrics_request("grpc", PGW_OK, 0.003);
    pgw_metrics_request("grpc", PGW_OK, 0.2);
    pgw_metrics_request("http_aws", PGW_NOT_FOUND, 0.04);
    pgw_metrics_request("http_rest", PGW_INVALID_ARGUMENT, 20.0); /* beyond the last bucket */
    pgw_metrics_request("smtp", (pgw_code)99, 0.001);             /* unknown frontend and code */
    pgw_metrics_in_flight("http_aws", 1);
    pgw_metrics_in_flight("http_aws", 1);
    pgw_metrics_in_flight("http_aws", -1);
    pgw_metrics_cache_lookup("l1", 1);
    pgw_metrics_cache_lookup("l1", 0);
    pgw_metrics_cache_lookup("l1", 0);
    pgw_metrics_cache_lookup("redis", 1);
    pgw_metrics_cache_stale_served();
    pgw_metrics_coalesced_waiters(41);
    pgw_metrics_coalesced_waiters(1);
    pgw_metrics_upstream("ok", 0.1);
    pgw_metrics_upstream("throttled", 0.5);
    pgw_metrics_upstream("martian", 0.5);
    pgw_metrics_upstream_retry();
    pgw_metrics_redis_error("timeout");
    pgw_metrics_redis_error("breaker_open");
    pgw_metrics_set_redis_breaker_state(2);
    pgw_metrics_set_credentials("web_identity", 1900000000.5);
    pgw_metrics_rate_limited("caller");
    pgw_metrics_auth_decision("deny");
    pgw_metrics_auth_decision(NULL);

    char *t = pgw_metrics_render();
    CHECK(t != NULL);
    if (!t)
        return;
    check_format(t);

    CHECK(strstr(t, "pgw_build_info{version=\"" PGW_VERSION "\"} 1\n") != NULL);
    CHECK(strstr(t, "# TYPE pgw_requests_total counter\n") != NULL);
    CHECK(strstr(t, "# TYPE pgw_request_duration_seconds histogram\n") != NULL);
    CHECK(sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend=\"grpc\","
                    "code=\"OK\"}") == 2);
    CHECK(sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend="
                    "\"http_aws\",code=\"NOT_FOUND\"}") == 1);
    CHECK(sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend="
                    "\"http_rest\",code=\"INVALID_ARGUMENT\"}") == 1);
    CHECK(sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend="
                    "\"other\",code=\"UNKNOWN\"}") == 1);
    CHECK(strstr(t, "smtp") == NULL);
    /* zero-valued non-OK codes are left out */
    CHECK(sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend=\"grpc\","
                    "code=\"INTERNAL\"}") == -1);

    /* grpc histogram: 3 ms and 200 ms */
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"grpc\",le=\"0.001\"}") == 0);
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"grpc\",le=\"0.005\"}") == 1);
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"grpc\",le=\"0.1\"}") == 1);
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"grpc\",le=\"0.25\"}") == 2);
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"grpc\",le=\"+Inf\"}") == 2);
    CHECK(sample(t, "pgw_request_duration_seconds_count{frontend=\"grpc\"}") == 2);
    double sum = sample(t, "pgw_request_duration_seconds_sum{frontend=\"grpc\"}");
    CHECK(sum > 0.2029 && sum < 0.2031);
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"http_rest\",le=\"10\"}") == 0);
    CHECK(sample(t, "pgw_request_duration_seconds_bucket{frontend=\"http_rest\",le=\"+Inf\"}") ==
          1);

    CHECK(sample(t, "pgw_in_flight_requests{frontend=\"http_aws\"}") == 1);
    CHECK(sample(t, "pgw_in_flight_requests{frontend=\"grpc\"}") == 0);
    CHECK(sample(t, "pgw_cache_requests_total{tier=\"l1\",result=\"hit\"}") == 1);
    CHECK(sample(t, "pgw_cache_requests_total{tier=\"l1\",result=\"miss\"}") == 2);
    CHECK(sample(t, "pgw_cache_requests_total{tier=\"redis\",result=\"hit\"}") == 1);
    CHECK(sample(t, "pgw_cache_requests_total{tier=\"redis\",result=\"miss\"}") == 0);
    CHECK(sample(t, "pgw_cache_stale_served_total") == 1);
    CHECK(sample(t, "pgw_coalesced_waiters_total") == 42);
    CHECK(sample(t, "pgw_upstream_requests_total{outcome=\"ok\"}") == 1);
    CHECK(sample(t, "pgw_upstream_requests_total{outcome=\"throttled\"}") == 1);
    CHECK(sample(t, "pgw_upstream_requests_total{outcome=\"other\"}") == 1);
    CHECK(sample(t, "pgw_upstream_requests_total{outcome=\"timeout\"}") == 0);
    CHECK(sample(t, "pgw_upstream_request_duration_seconds_count") == 3);
    CHECK(sample(t, "pgw_upstream_request_duration_seconds_bucket{le=\"0.5\"}") == 3);
    CHECK(sample(t, "pgw_upstream_request_duration_seconds_bucket{le=\"0.25\"}") == 1);
    CHECK(sample(t, "pgw_upstream_retries_total") == 1);
    CHECK(sample(t, "pgw_redis_errors_total{kind=\"timeout\"}") == 1);
    CHECK(sample(t, "pgw_redis_errors_total{kind=\"breaker_open\"}") == 1);
    CHECK(sample(t, "pgw_redis_errors_total{kind=\"error\"}") == 0);
    CHECK(sample(t, "pgw_redis_breaker_state") == 2);
    CHECK(sample(t, "pgw_credentials_info{source=\"web_identity\"}") == 1);
    CHECK(sample(t, "pgw_credentials_expiry_timestamp_seconds{source=\"web_identity\"}") ==
          1900000000.5);
    CHECK(sample(t, "pgw_rate_limited_total{scope=\"caller\"}") == 1);
    CHECK(sample(t, "pgw_auth_decisions_total{decision=\"deny\"}") == 1);
    CHECK(sample(t, "pgw_auth_decisions_total{decision=\"other\"}") == 1);
    free(t);

    /* Long-term credentials: the source is shown, no expiry series. */
    pgw_metrics_set_credentials("environment", 0);
    t = pgw_metrics_render();
    CHECK(t && sample(t, "pgw_credentials_info{source=\"environment\"}") == 1);
    CHECK(t && sample(t, "pgw_credentials_info{source=\"web_identity\"}") == -1);
    CHECK(t && strstr(t, "pgw_credentials_expiry_timestamp_seconds{") == NULL);
    free(t);

    /* After a reset: no credentials line, counters at zero but present. */
    pgw_metrics_reset();
    t = pgw_metrics_render();
    CHECK(t && strstr(t, "pgw_credentials_info{") == NULL);
    CHECK(t && sample(t, "pgw_coalesced_waiters_total") == 0);
    CHECK(t && sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend="
                         "\"grpc\",code=\"OK\"}") == 0);
    if (t)
        check_format(t);
    free(t);
}

#define THREADS    4
#define PER_THREAD 20000

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        pgw_metrics_request("http_rest", PGW_OK, 0.0001 * (i % 100));
        pgw_metrics_in_flight("grpc", 1);
        pgw_metrics_cache_lookup("l1", i & 1);
        pgw_metrics_in_flight("grpc", -1);
    }
    return NULL;
}

static void test_concurrent_updates_are_exact(void)
{
    pgw_metrics_reset();
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, hammer, NULL);
    /* A scrape racing the updates must still be well-formed. */
    char *mid = pgw_metrics_render();
    CHECK(mid != NULL);
    if (mid)
        check_format(mid);
    free(mid);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *t = pgw_metrics_render();
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK(sample(t, "pgw_requests_total{method=\"DescribeBatchInferenceJob\",frontend="
                    "\"http_rest\",code=\"OK\"}") == THREADS * PER_THREAD);
    CHECK(sample(t, "pgw_request_duration_seconds_count{frontend=\"http_rest\"}") ==
          THREADS * PER_THREAD);
    CHECK(sample(t, "pgw_in_flight_requests{frontend=\"grpc\"}") == 0);
    CHECK(sample(t, "pgw_cache_requests_total{tier=\"l1\",result=\"hit\"}") ==
          THREADS * PER_THREAD / 2);
    free(t);
}

int main(void)
{
    test_values_and_format();
    test_concurrent_updates_are_exact();
    return pgw_test_finish("test_metrics");
}
