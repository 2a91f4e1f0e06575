/* metrics: the gateway's Prometheus metrics, one fixed registry for the whole process.
 *
 * One function per event. Every function is safe from any thread and takes no lock: each
 * series is a C11 atomic in a static table, so calling them on the hot path costs a few atomic
 * adds. Label values come from fixed, known sets; anything else is counted as "other", so the
 * number of series is bounded whatever the callers pass.
 *
 * pgw_metrics_render() produces the Prometheus text exposition format (version 0.0.4) served
 * on GET /metrics. */
#ifndef PGW_METRICS_H
#define PGW_METRICS_H

#include <stdint.h>

#include "service/status.h"

/* Content-Type of pgw_metrics_render()'s output. */
#define PGW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* One finished DescribeBatchInferenceJob call: pgw_requests_total{method,frontend,code} and the
 * pgw_request_duration_seconds{frontend} histogram. frontend: "grpc", "http_aws" or
 * "http_rest". */
void pgw_metrics_request(const char *frontend, pgw_code code, double seconds);

/* Adds delta (+1 when a call starts, -1 when it ends) to pgw_in_flight_requests{frontend}. */
void pgw_metrics_in_flight(const char *frontend, int delta);

/* One cache tier consulted: pgw_cache_requests_total{tier,result}. tier: "l1" or "redis";
 * result is "hit" when hit is nonzero, else "miss". */
void pgw_metrics_cache_lookup(const char *tier, int hit);

/* A stale cache entry answered because the upstream failed: pgw_cache_stale_served_total. */
void pgw_metrics_cache_stale_served(void);

/* n callers were answered by another caller's upstream fetch: pgw_coalesced_waiters_total. */
void pgw_metrics_coalesced_waiters(uint64_t n);

/* One upstream attempt finished: pgw_upstream_requests_total{outcome} and the
 * pgw_upstream_request_duration_seconds histogram. outcome: "ok", "not_found",
 * "client_error", "server_error", "throttled", "transport_error" or "timeout". */
void pgw_metrics_upstream(const char *outcome, double seconds);

/* An upstream attempt is being retried: pgw_upstream_retries_total. */
void pgw_metrics_upstream_retry(void);

/* The shared retry quota left (AWS standard retry mode: capacity 500, a retry costs 5, a
 * timeout retry 10, a success refunds): the pgw_upstream_retry_quota gauge. At 0 no failed
 * attempt is retried until successes refill it. */
void pgw_metrics_set_upstream_retry_quota(int tokens);

/* A Redis command failed or was skipped: pgw_redis_errors_total{kind}. kind: "timeout",
 * "error" or "breaker_open". */
void pgw_metrics_redis_error(const char *kind);

/* A Redis connection attempt failed or one became ready: pgw_redis_connect_failures_total,
 * pgw_redis_tls_failures_total, pgw_redis_auth_failures_total, pgw_redis_connections_total.
 * kind: "connect", "tls", "auth" or "connected". */
void pgw_metrics_redis_connection(const char *kind);

/* Sets the pgw_redis_breaker_state gauge: 0 closed, 1 open, 2 half-open. */
void pgw_metrics_set_redis_breaker_state(int state);

/* Records where the current AWS credentials came from and when they expire:
 * pgw_credentials_info{source} = 1 and pgw_credentials_expiry_timestamp_seconds{source}
 * (absent for credentials that do not expire: pass 0). source: "environment", "profile",
 * "web_identity", "container", "imds", "process", "static" or "none" (no credentials). */
void pgw_metrics_set_credentials(const char *source, double expiry_unix_seconds);

/* A fetch asked the fleet who fetches: pgw_fleet_leases_total{outcome}. outcome: "won" (this
 * replica fetches for the fleet), "waited" (another replica's fetch answered), "taken_over"
 * (won after the holder's lease expired), "fallback" (Redis unusable: fetched alone). */
void pgw_metrics_fleet_lease(const char *outcome);

/* A call was refused by a rate limit: pgw_rate_limited_total{scope}. scope: "caller" or
 * "upstream". */
void pgw_metrics_rate_limited(const char *scope);

/* One authorization decision: pgw_auth_decisions_total{decision}. decision: "allow", "deny"
 * or "unauthenticated". */
void pgw_metrics_auth_decision(const char *decision);

/* One upstream transfer ended: pgw_upstream_connections_opened_total += new_connections
 * (0 when it reused a pooled connection) and, when an answer came,
 * pgw_upstream_responses_by_protocol_total{protocol="http/1.1"|"h2"}. http_version: 1, 2,
 * or 0 (no answer). */
void pgw_metrics_upstream_transfer(int http_version, int new_connections);

/* Upstream fetch admission (service/admission.h): the pgw_upstream_fetches_in_flight and
 * pgw_upstream_fetches_queued gauges. */
void pgw_metrics_set_upstream_admission(int64_t in_flight, int64_t queued);

/* A call refused fast by a bound: pgw_rejected_total{reason}. reason: "upstream_queue_full"
 * (UNAVAILABLE: the upstream fetch queue is full), "upstream_deadline" (UNAVAILABLE: the
 * caller's deadline leaves no time for the queued fetch), "max_concurrent_calls"
 * (RESOURCE_EXHAUSTED: the gateway's own bound), "watch_max_streams" (RESOURCE_EXHAUSTED: a watch
 * stream past --watch-max-streams). */
void pgw_metrics_rejected(const char *reason);

/* Watches (service/watch.h): the pgw_watch_streams gauge (streams open, both frontends: slots of
 * --watch-max-streams in use) and pgw_watch_arns (ARNs watched on this replica, each with one
 * poll loop). */
void pgw_metrics_set_watch(uint64_t streams, uint64_t arns);

/* One poll of a watched ARN: pgw_watch_polls_total{mode}. mode: "fetch" (from AWS: this
 * replica polls for the fleet, or alone) or "peek" (the shared cache: another replica polls). */
void pgw_metrics_watch_poll(const char *mode);

/* This replica took over polling an ARN (the first, or after the holder died):
 * pgw_watch_poller_changes_total. */
void pgw_metrics_watch_poller_change(void);

/* One message written on a watch stream: pgw_watch_messages_total{frontend}. frontend: "grpc"
 * or "http_sse". */
void pgw_metrics_watch_message(const char *frontend);

/* A watch stream ended: pgw_watch_streams_ended_total{frontend,code}. */
void pgw_metrics_watch_ended(const char *frontend, pgw_code code);

/* One attempt to reload the gRPC port's TLS material from changed files:
 * pgw_tls_reloads_total{result="ok"|"error"} (error: the old material stays in force). */
void pgw_metrics_tls_reload(int ok);

/* The notAfter of the gRPC port's certificate in force, in Unix seconds:
 * pgw_tls_certificate_expiry_timestamp_seconds (absent while 0: no TLS). */
void pgw_metrics_set_tls_certificate_expiry(double not_after_unix_seconds);

/* A log or audit line that could not be written (stdout full, closed or failing):
 * pgw_log_write_failures_total{log="log"|"audit"}. */
void pgw_metrics_log_write_failure(const char *log);

/* Renders every metric, with HELP and TYPE lines, in the Prometheus text exposition format
 * (PGW_METRICS_CONTENT_TYPE). Returns a malloc'd NUL-terminated string the caller frees with
 * free(), or NULL if out of memory. Values read concurrently with updates are each exact, but
 * a scrape is not one atomic snapshot (as with every Prometheus client). */
char *pgw_metrics_render(void);

/* Zeroes every series. For unit tests only: racing updates may survive it. */
void pgw_metrics_reset(void);

#endif
