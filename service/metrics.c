#include "service/metrics.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#ifndef PGW_VERSION
#define PGW_VERSION "unknown"
#endif

#define METHOD "DescribeBatchInferenceJob"

/* --- label sets: the last entry of each is "other", where unknown values go --- */

static const char *const FRONTENDS[] = {"grpc", "http_aws", "http_rest", "other"};
#define N_FRONTENDS 4
static const char *const TIERS[] = {"l1", "redis", "other"};
#define N_TIERS 3
static const char *const OUTCOMES[] = {"ok",           "not_found", "client_error",
                                       "server_error", "throttled", "transport_error",
                                       "timeout",      "other"};
#define N_OUTCOMES 8
static const char *const REDIS_KINDS[] = {"timeout", "error", "breaker_open", "other"};
#define N_REDIS_KINDS 4
static const char *const REDIS_CONN_KINDS[] = {"connect", "tls", "auth", "connected", "other"};
#define N_REDIS_CONN_KINDS 5
static const char *const CRED_SOURCES[] = {"environment", "profile", "web_identity",
                                           "container",   "imds",    "process",
                                           "static",      "none",    "other"};
#define N_CRED_SOURCES 9
static const char *const SCOPES[] = {"caller", "upstream", "other"};
#define N_SCOPES 3
static const char *const DECISIONS[] = {"allow", "deny", "unauthenticated", "other"};
#define N_DECISIONS 4
static const char *const LEASE_OUTCOMES[] = {"won", "waited", "taken_over", "fallback", "other"};
#define N_LEASE_OUTCOMES 5
static const char *const PROTOCOLS[] = {"http/1.1", "h2", "other"};
#define N_PROTOCOLS 3
static const char *const REJECT_REASONS[] = {"upstream_queue_full", "upstream_deadline",
                                             "max_concurrent_calls", "watch_max_streams", "other"};
#define N_REJECT_REASONS 5

static const char *const POLL_MODES[] = {"fetch", "peek", "other"};
#define N_POLL_MODES 3
static const char *const WATCH_FRONTENDS[] = {"grpc", "http_sse", "other"};
#define N_WATCH_FRONTENDS 3

static const char *const RESULTS[] = {"ok", "error", "other"};
#define N_RESULTS 3
static const char *const LOGS[] = {"log", "audit", "other"};
#define N_LOGS 3

/* Code values are the canonical RPC codes, 0..16. */
#define N_CODES 17

/* Returns the index of `value` in `set` (n entries, the last being "other"). */
static int label_index(const char *const *set, int n, const char *value)
{
    if (value)
        for (int i = 0; i < n - 1; i++)
            if (strcmp(set[i], value) == 0)
                return i;
    return n - 1;
}

/* --- histograms --- */

/* Seconds; from a 1 ms L1 hit to a 10 s call that ran into retries and timeouts. */
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS 13

typedef struct histogram {
    atomic_uint_fast64_t bucket[N_BUCKETS + 1]; /* per bucket (not cumulative); last is +Inf */
    atomic_uint_fast64_t sum_us;                /* microseconds: integer atomics, no CAS loop */
} histogram;

static void observe(histogram *h, double seconds)
{
    if (!(seconds >= 0)) /* negative or NaN: a clock oddity, count it as zero */
        seconds = 0;
    int i = 0;
    while (i < N_BUCKETS && seconds > BUCKETS[i])
        i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    double us = seconds * 1e6;
    atomic_fetch_add_explicit(&h->sum_us, us < 1.8e19 ? (uint_fast64_t)us : 0,
                              memory_order_relaxed);
}

/* --- the registry --- */

static struct registry {
    atomic_uint_fast64_t requests[N_FRONTENDS][N_CODES];
    histogram request_duration[N_FRONTENDS];
    atomic_int_fast64_t in_flight[N_FRONTENDS];
    atomic_uint_fast64_t cache[N_TIERS][2]; /* [tier][0 miss, 1 hit] */
    atomic_uint_fast64_t stale_served;
    atomic_uint_fast64_t coalesced;
    atomic_uint_fast64_t upstream[N_OUTCOMES];
    histogram upstream_duration;
    atomic_uint_fast64_t upstream_retries;
    atomic_int retry_quota; /* -1: no upstream client yet */
    atomic_uint_fast64_t redis_errors[N_REDIS_KINDS];
    atomic_uint_fast64_t redis_conn[N_REDIS_CONN_KINDS];
    atomic_int breaker_state;
    atomic_int cred_source;              /* index into CRED_SOURCES, or -1 before the first set */
    atomic_uint_fast64_t cred_expiry_ms; /* epoch ms; 0 = does not expire */
    atomic_uint_fast64_t rate_limited[N_SCOPES];
    atomic_uint_fast64_t auth[N_DECISIONS];
    atomic_uint_fast64_t fleet_leases[N_LEASE_OUTCOMES];
    /* upstream bounds and connection pool */
    atomic_uint_fast64_t upstream_connections;
    atomic_uint_fast64_t upstream_protocol[N_PROTOCOLS];
    atomic_int_fast64_t upstream_admitted, upstream_queued;
    atomic_uint_fast64_t rejected[N_REJECT_REASONS];
    /* watches */
    atomic_uint_fast64_t watch_streams, watch_arns;
    atomic_uint_fast64_t watch_polls[N_POLL_MODES];
    atomic_uint_fast64_t watch_poller_changes;
    atomic_uint_fast64_t watch_messages[N_WATCH_FRONTENDS];
    atomic_uint_fast64_t watch_ended[N_WATCH_FRONTENDS][N_CODES];
    /* operations: TLS reloads, log writes */
    atomic_uint_fast64_t tls_reloads[N_RESULTS];
    atomic_uint_fast64_t tls_not_after_ms;
    atomic_uint_fast64_t log_write_failures[N_LOGS];
} reg = {.cred_source = -1, .retry_quota = -1};

void pgw_metrics_request(const char *frontend, pgw_code code, double seconds)
{
    int f = label_index(FRONTENDS, N_FRONTENDS, frontend);
    int c = (int)code >= 0 && (int)code < N_CODES ? (int)code : PGW_UNKNOWN;
    atomic_fetch_add_explicit(&reg.requests[f][c], 1, memory_order_relaxed);
    observe(&reg.request_duration[f], seconds);
}

void pgw_metrics_in_flight(const char *frontend, int delta)
{
    int f = label_index(FRONTENDS, N_FRONTENDS, frontend);
    atomic_fetch_add_explicit(&reg.in_flight[f], delta, memory_order_relaxed);
}

void pgw_metrics_cache_lookup(const char *tier, int hit)
{
    int t = label_index(TIERS, N_TIERS, tier);
    atomic_fetch_add_explicit(&reg.cache[t][hit ? 1 : 0], 1, memory_order_relaxed);
}

void pgw_metrics_cache_stale_served(void)
{
    atomic_fetch_add_explicit(&reg.stale_served, 1, memory_order_relaxed);
}

void pgw_metrics_coalesced_waiters(uint64_t n)
{
    atomic_fetch_add_explicit(&reg.coalesced, n, memory_order_relaxed);
}

void pgw_metrics_upstream(const char *outcome, double seconds)
{
    int o = label_index(OUTCOMES, N_OUTCOMES, outcome);
    atomic_fetch_add_explicit(&reg.upstream[o], 1, memory_order_relaxed);
    observe(&reg.upstream_duration, seconds);
}

void pgw_metrics_upstream_retry(void)
{
    atomic_fetch_add_explicit(&reg.upstream_retries, 1, memory_order_relaxed);
}

void pgw_metrics_set_upstream_retry_quota(int tokens)
{
    atomic_store_explicit(&reg.retry_quota, tokens, memory_order_relaxed);
}

void pgw_metrics_redis_error(const char *kind)
{
    int k = label_index(REDIS_KINDS, N_REDIS_KINDS, kind);
    atomic_fetch_add_explicit(&reg.redis_errors[k], 1, memory_order_relaxed);
}

void pgw_metrics_redis_connection(const char *kind)
{
    int k = label_index(REDIS_CONN_KINDS, N_REDIS_CONN_KINDS, kind);
    atomic_fetch_add_explicit(&reg.redis_conn[k], 1, memory_order_relaxed);
}

void pgw_metrics_set_redis_breaker_state(int state)
{
    atomic_store_explicit(&reg.breaker_state, state, memory_order_relaxed);
}

void pgw_metrics_set_credentials(const char *source, double expiry_unix_seconds)
{
    double ms = expiry_unix_seconds * 1000.0;
    atomic_store(&reg.cred_expiry_ms, ms > 0 && ms < 1.8e19 ? (uint_fast64_t)ms : 0);
    atomic_store(&reg.cred_source, label_index(CRED_SOURCES, N_CRED_SOURCES, source));
}

void pgw_metrics_fleet_lease(const char *outcome)
{
    int o = label_index(LEASE_OUTCOMES, N_LEASE_OUTCOMES, outcome);
    atomic_fetch_add_explicit(&reg.fleet_leases[o], 1, memory_order_relaxed);
}

void pgw_metrics_rate_limited(const char *scope)
{
    int s = label_index(SCOPES, N_SCOPES, scope);
    atomic_fetch_add_explicit(&reg.rate_limited[s], 1, memory_order_relaxed);
}

void pgw_metrics_auth_decision(const char *decision)
{
    int d = label_index(DECISIONS, N_DECISIONS, decision);
    atomic_fetch_add_explicit(&reg.auth[d], 1, memory_order_relaxed);
}

void pgw_metrics_upstream_transfer(int http_version, int new_connections)
{
    if (new_connections > 0)
        atomic_fetch_add_explicit(&reg.upstream_connections, (uint_fast64_t)new_connections,
                                  memory_order_relaxed);
    if (http_version > 0)
        atomic_fetch_add_explicit(&reg.upstream_protocol[http_version == 2   ? 1
                                                         : http_version == 1 ? 0
                                                                             : 2],
                                  1, memory_order_relaxed);
}

void pgw_metrics_set_upstream_admission(int64_t in_flight, int64_t queued)
{
    atomic_store_explicit(&reg.upstream_admitted, in_flight, memory_order_relaxed);
    atomic_store_explicit(&reg.upstream_queued, queued, memory_order_relaxed);
}

void pgw_metrics_rejected(const char *reason)
{
    int r = label_index(REJECT_REASONS, N_REJECT_REASONS, reason);
    atomic_fetch_add_explicit(&reg.rejected[r], 1, memory_order_relaxed);
}

void pgw_metrics_set_watch(uint64_t streams, uint64_t arns)
{
    atomic_store_explicit(&reg.watch_streams, streams, memory_order_relaxed);
    atomic_store_explicit(&reg.watch_arns, arns, memory_order_relaxed);
}

void pgw_metrics_watch_poll(const char *mode)
{
    int m = label_index(POLL_MODES, N_POLL_MODES, mode);
    atomic_fetch_add_explicit(&reg.watch_polls[m], 1, memory_order_relaxed);
}

void pgw_metrics_watch_poller_change(void)
{
    atomic_fetch_add_explicit(&reg.watch_poller_changes, 1, memory_order_relaxed);
}

void pgw_metrics_watch_message(const char *frontend)
{
    int f = label_index(WATCH_FRONTENDS, N_WATCH_FRONTENDS, frontend);
    atomic_fetch_add_explicit(&reg.watch_messages[f], 1, memory_order_relaxed);
}

void pgw_metrics_watch_ended(const char *frontend, pgw_code code)
{
    int f = label_index(WATCH_FRONTENDS, N_WATCH_FRONTENDS, frontend);
    int c = (int)code >= 0 && (int)code < N_CODES ? (int)code : PGW_UNKNOWN;
    atomic_fetch_add_explicit(&reg.watch_ended[f][c], 1, memory_order_relaxed);
}

void pgw_metrics_tls_reload(int ok)
{
    atomic_fetch_add_explicit(&reg.tls_reloads[ok ? 0 : 1], 1, memory_order_relaxed);
}

void pgw_metrics_set_tls_certificate_expiry(double not_after_unix_seconds)
{
    double ms = not_after_unix_seconds * 1000.0;
    atomic_store(&reg.tls_not_after_ms, ms > 0 && ms < 1.8e19 ? (uint_fast64_t)ms : 0);
}

void pgw_metrics_log_write_failure(const char *log)
{
    int l = label_index(LOGS, N_LOGS, log);
    atomic_fetch_add_explicit(&reg.log_write_failures[l], 1, memory_order_relaxed);
}

void pgw_metrics_reset(void)
{
    /* Every field is an atomic integer whose zero is all-bits-zero; the rest restarts here. */
    memset(&reg, 0, sizeof(reg));
    atomic_store(&reg.cred_source, -1);
    atomic_store(&reg.retry_quota, -1);
}

/* --- rendering --- */

static uint64_t load(atomic_uint_fast64_t *v)
{
    return (uint64_t)atomic_load_explicit(v, memory_order_relaxed);
}

static void header(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series. `labels` is "" or `name="value",` (with the trailing comma). */
static void render_histogram(FILE *out, const char *name, const char *labels, histogram *h)
{
    uint64_t cumulative = 0;
    for (int i = 0; i <= N_BUCKETS; i++) {
        cumulative += load(&h->bucket[i]);
        if (i < N_BUCKETS)
            fprintf(out, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, BUCKETS[i],
                    (unsigned long long)cumulative);
        else
            fprintf(out, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels,
                    (unsigned long long)cumulative);
    }
    /* The count is the +Inf bucket, so the two always agree within one scrape. */
    char bare[64] = "";
    size_t n = strlen(labels);
    if (n > 0 && n < sizeof(bare)) {
        memcpy(bare, labels, n - 1); /* drop the trailing comma */
        bare[n - 1] = '\0';
    }
    fprintf(out, "%s_sum%s%s%s %.6f\n", name, n ? "{" : "", bare, n ? "}" : "",
            (double)load(&h->sum_us) / 1e6);
    fprintf(out, "%s_count%s%s%s %llu\n", name, n ? "{" : "", bare, n ? "}" : "",
            (unsigned long long)cumulative);
}

/* A counter with one label, every value of the set rendered (zeros included) so that rate()
 * sees a series from the start. */
static void render_labelled(FILE *out, const char *name, const char *label, const char *const *set,
                            int n, atomic_uint_fast64_t *values)
{
    for (int i = 0; i < n; i++)
        fprintf(out, "%s{%s=\"%s\"} %llu\n", name, label, set[i],
                (unsigned long long)load(&values[i]));
}

static const pgw_code ALL_CODES[] = {
    PGW_OK,
    PGW_CANCELLED,
    PGW_UNKNOWN,
    PGW_INVALID_ARGUMENT,
    PGW_DEADLINE_EXCEEDED,
    PGW_NOT_FOUND,
    PGW_PERMISSION_DENIED,
    PGW_RESOURCE_EXHAUSTED,
    PGW_UNIMPLEMENTED,
    PGW_INTERNAL,
    PGW_UNAVAILABLE,
    PGW_UNAUTHENTICATED,
};

/* Entries of /proc/self/fd (the directory's own descriptor not counted), or -1 when it
 * cannot be read (not Linux, or no descriptor left to open it with). */
static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0;
}

char *pgw_metrics_render(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    if (!out)
        return NULL;

    header(out, "pgw_build_info", "gauge", "Build information; the value is always 1.");
    fprintf(out, "pgw_build_info{version=\"%s\"} 1\n", PGW_VERSION);

    header(out, "pgw_requests_total", "counter",
           "DescribeBatchInferenceJob calls answered, by frontend and result code.");
    for (int f = 0; f < N_FRONTENDS; f++) {
        for (size_t i = 0; i < sizeof(ALL_CODES) / sizeof(ALL_CODES[0]); i++) {
            pgw_code c = ALL_CODES[i];
            uint64_t v = load(&reg.requests[f][c]);
            /* Only OK is always shown: 4 frontends x 12 codes of zeros would drown the page. */
            if (v == 0 && c != PGW_OK)
                continue;
            fprintf(out, "pgw_requests_total{method=\"%s\",frontend=\"%s\",code=\"%s\"} %llu\n",
                    METHOD, FRONTENDS[f], pgw_code_name(c), (unsigned long long)v);
        }
    }

    header(out, "pgw_request_duration_seconds", "histogram",
           "Time from receiving a DescribeBatchInferenceJob call to answering it, by frontend.");
    for (int f = 0; f < N_FRONTENDS; f++) {
        char labels[48];
        snprintf(labels, sizeof(labels), "frontend=\"%s\",", FRONTENDS[f]);
        render_histogram(out, "pgw_request_duration_seconds", labels, &reg.request_duration[f]);
    }

    header(out, "pgw_in_flight_requests", "gauge", "Calls being served now, by frontend.");
    for (int f = 0; f < N_FRONTENDS; f++)
        fprintf(out, "pgw_in_flight_requests{frontend=\"%s\"} %lld\n", FRONTENDS[f],
                (long long)atomic_load_explicit(&reg.in_flight[f], memory_order_relaxed));

    header(out, "pgw_cache_requests_total", "counter", "Cache lookups, by tier and result.");
    for (int t = 0; t < N_TIERS; t++)
        for (int hit = 1; hit >= 0; hit--)
            fprintf(out, "pgw_cache_requests_total{tier=\"%s\",result=\"%s\"} %llu\n", TIERS[t],
                    hit ? "hit" : "miss", (unsigned long long)load(&reg.cache[t][hit]));

    header(out, "pgw_cache_stale_served_total", "counter",
           "Answers served from a stale cache entry because the upstream failed.");
    fprintf(out, "pgw_cache_stale_served_total %llu\n",
            (unsigned long long)load(&reg.stale_served));

    header(out, "pgw_coalesced_waiters_total", "counter",
           "Callers answered by another caller's upstream fetch instead of their own.");
    fprintf(out, "pgw_coalesced_waiters_total %llu\n", (unsigned long long)load(&reg.coalesced));

    header(out, "pgw_upstream_requests_total", "counter",
           "Upstream (Amazon Personalize) attempts, by outcome.");
    render_labelled(out, "pgw_upstream_requests_total", "outcome", OUTCOMES, N_OUTCOMES,
                    reg.upstream);

    header(out, "pgw_upstream_request_duration_seconds", "histogram",
           "Duration of each upstream attempt.");
    render_histogram(out, "pgw_upstream_request_duration_seconds", "", &reg.upstream_duration);

    header(out, "pgw_upstream_retries_total", "counter", "Upstream attempts that were retried.");
    fprintf(out, "pgw_upstream_retries_total %llu\n",
            (unsigned long long)load(&reg.upstream_retries));

    int quota = atomic_load_explicit(&reg.retry_quota, memory_order_relaxed);
    if (quota >= 0) {
        header(out, "pgw_upstream_retry_quota", "gauge",
               "Retry tokens left in the shared quota (AWS standard mode: 500, a retry costs 5, "
               "a timeout retry 10, a success refunds); at 0 failures are not retried.");
        fprintf(out, "pgw_upstream_retry_quota %d\n", quota);
    }

    header(out, "pgw_redis_errors_total", "counter", "Redis commands failed or skipped, by kind.");
    render_labelled(out, "pgw_redis_errors_total", "kind", REDIS_KINDS, N_REDIS_KINDS,
                    reg.redis_errors);

    static const char *const conn_names[] = {
        "pgw_redis_connect_failures_total", "pgw_redis_tls_failures_total",
        "pgw_redis_auth_failures_total", "pgw_redis_connections_total"};
    static const char *const conn_help[] = {
        "Redis connection attempts that failed to connect (DNS, TCP, timeout, closed).",
        "Redis connection attempts that failed TLS (handshake, certificate or host name).",
        "Redis connection attempts refused at AUTH/SELECT/PING (password, ACL).",
        "Redis connections that became ready."};
    for (int i = 0; i < 4; i++) {
        header(out, conn_names[i], "counter", conn_help[i]);
        fprintf(out, "%s %llu\n", conn_names[i], (unsigned long long)load(&reg.redis_conn[i]));
    }

    header(out, "pgw_redis_breaker_state", "gauge",
           "Redis circuit breaker: 0 closed, 1 open, 2 half-open.");
    fprintf(out, "pgw_redis_breaker_state %d\n",
            atomic_load_explicit(&reg.breaker_state, memory_order_relaxed));

    int src = atomic_load(&reg.cred_source);
    header(out, "pgw_credentials_info", "gauge",
           "Where the current AWS credentials came from; the value is always 1.");
    if (src >= 0 && src < N_CRED_SOURCES)
        fprintf(out, "pgw_credentials_info{source=\"%s\"} 1\n", CRED_SOURCES[src]);
    header(out, "pgw_credentials_expiry_timestamp_seconds", "gauge",
           "Expiry of the current temporary AWS credentials, in Unix seconds.");
    uint64_t expiry_ms = load(&reg.cred_expiry_ms);
    if (src >= 0 && src < N_CRED_SOURCES && expiry_ms)
        fprintf(out, "pgw_credentials_expiry_timestamp_seconds{source=\"%s\"} %.3f\n",
                CRED_SOURCES[src], (double)expiry_ms / 1000.0);

    header(out, "pgw_rate_limited_total", "counter", "Calls refused by a rate limit, by scope.");
    render_labelled(out, "pgw_rate_limited_total", "scope", SCOPES, N_SCOPES, reg.rate_limited);
    header(out, "pgw_fleet_leases_total", "counter",
           "Fetches coordinated across replicas through a Redis lease, by outcome.");
    render_labelled(out, "pgw_fleet_leases_total", "outcome", LEASE_OUTCOMES, N_LEASE_OUTCOMES,
                    reg.fleet_leases);

    header(out, "pgw_auth_decisions_total", "counter", "Authorization decisions, by decision.");
    render_labelled(out, "pgw_auth_decisions_total", "decision", DECISIONS, N_DECISIONS, reg.auth);

    header(out, "pgw_upstream_fetches_in_flight", "gauge",
           "Upstream fetches running now (bounded by --upstream-max-in-flight).");
    fprintf(out, "pgw_upstream_fetches_in_flight %lld\n",
            (long long)atomic_load_explicit(&reg.upstream_admitted, memory_order_relaxed));
    header(out, "pgw_upstream_fetches_queued", "gauge",
           "Upstream fetches waiting for a slot (bounded by --upstream-max-queued).");
    fprintf(out, "pgw_upstream_fetches_queued %lld\n",
            (long long)atomic_load_explicit(&reg.upstream_queued, memory_order_relaxed));
    header(out, "pgw_rejected_total", "counter",
           "Calls refused fast because a bound was reached, by reason.");
    render_labelled(out, "pgw_rejected_total", "reason", REJECT_REASONS, N_REJECT_REASONS,
                    reg.rejected);
    header(out, "pgw_upstream_connections_opened_total", "counter",
           "Upstream connections opened (the rest of the transfers reused pooled ones).");
    fprintf(out, "pgw_upstream_connections_opened_total %llu\n",
            (unsigned long long)load(&reg.upstream_connections));
    header(out, "pgw_upstream_responses_by_protocol_total", "counter",
           "Upstream answers, by HTTP protocol version (h2 when the endpoint offered it).");
    render_labelled(out, "pgw_upstream_responses_by_protocol_total", "protocol", PROTOCOLS,
                    N_PROTOCOLS, reg.upstream_protocol);

    header(out, "pgw_watch_streams", "gauge",
           "Watch streams open (gRPC and server-sent events), bounded by --watch-max-streams.");
    fprintf(out, "pgw_watch_streams %llu\n", (unsigned long long)load(&reg.watch_streams));
    header(out, "pgw_watch_arns", "gauge",
           "Job ARNs watched on this replica, each with one poll loop however many watchers.");
    fprintf(out, "pgw_watch_arns %llu\n", (unsigned long long)load(&reg.watch_arns));
    header(out, "pgw_watch_polls_total", "counter",
           "Polls of watched ARNs, by mode: fetch (from AWS, for the fleet) or peek (the shared "
           "cache, another replica polls).");
    render_labelled(out, "pgw_watch_polls_total", "mode", POLL_MODES, N_POLL_MODES,
                    reg.watch_polls);
    header(out, "pgw_watch_poller_changes_total", "counter",
           "Times this replica took the poll lease of a watched ARN (first poller, or taking "
           "over from one that died).");
    fprintf(out, "pgw_watch_poller_changes_total %llu\n",
            (unsigned long long)load(&reg.watch_poller_changes));
    header(out, "pgw_watch_messages_total", "counter",
           "Messages written on watch streams, by frontend.");
    render_labelled(out, "pgw_watch_messages_total", "frontend", WATCH_FRONTENDS, N_WATCH_FRONTENDS,
                    reg.watch_messages);
    header(out, "pgw_watch_streams_ended_total", "counter",
           "Watch streams ended, by frontend and status code.");
    for (int f = 0; f < N_WATCH_FRONTENDS; f++) {
        for (size_t i = 0; i < sizeof(ALL_CODES) / sizeof(ALL_CODES[0]); i++) {
            pgw_code c = ALL_CODES[i];
            uint64_t v = load(&reg.watch_ended[f][c]);
            if (v == 0 && c != PGW_OK)
                continue;
            fprintf(out, "pgw_watch_streams_ended_total{frontend=\"%s\",code=\"%s\"} %llu\n",
                    WATCH_FRONTENDS[f], pgw_code_name(c), (unsigned long long)v);
        }
    }
    header(out, "pgw_tls_reloads_total", "counter",
           "Reloads of the gRPC port's TLS certificate, key and client CA from changed files, by "
           "result (error: the previous material stays in force).");
    render_labelled(out, "pgw_tls_reloads_total", "result", RESULTS, N_RESULTS - 1,
                    reg.tls_reloads);
    header(out, "pgw_tls_certificate_expiry_timestamp_seconds", "gauge",
           "notAfter of the gRPC port's TLS certificate in force, in Unix seconds.");
    uint64_t not_after_ms = load(&reg.tls_not_after_ms);
    if (not_after_ms)
        fprintf(out, "pgw_tls_certificate_expiry_timestamp_seconds %.3f\n",
                (double)not_after_ms / 1000.0);
    header(out, "pgw_log_write_failures_total", "counter",
           "Log and audit lines that could not be written to stdout (full, closed or failing).");
    render_labelled(out, "pgw_log_write_failures_total", "log", LOGS, N_LOGS - 1,
                    reg.log_write_failures);

    /* The Prometheus client libraries' standard names, so the usual alert on
     * process_open_fds / process_max_fds applies. */
    long open_fds = count_open_fds();
    struct rlimit rl;
    if (open_fds >= 0) {
        header(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        fprintf(out, "process_open_fds %ld\n", open_fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        header(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        fprintf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }

    if (fclose(out) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
