/* The HTTP frontend: libevent's evhttp on the gateway's event loop.
 *
 *   POST /                                   AWS-compatible DescribeBatchInferenceJob (JSON 1.1)
 *   GET  /v1/batch-inference-jobs/{ARN}      proto3 JSON (ARN url-encoded)
 *   GET  /v1/batch-inference-jobs/{ARN}?watch=true   server-sent events (http_sse.h)
 *   GET  /healthz  /readyz  /metrics         liveness, readiness, Prometheus metrics
 *
 * Like the gRPC frontend it only translates: request in, pgw_lookup_start(), answer out. All
 * request handling runs on the loop thread (evhttp is registered on the loop's event base), so
 * it calls lookup directly with no hand-over. See docs/http.md for the wire contract. */
#ifndef PGW_HTTP_SERVER_H
#define PGW_HTTP_SERVER_H

#include <stddef.h>

#include "service/lookup.h"
#include "service/loop.h"

typedef struct pgw_http_server pgw_http_server;
struct pgw_call_limit;
struct pgw_watch_registry;

typedef struct pgw_http_server_options {
    const char *addr; /* host:port to listen on ("127.0.0.1:0" picks a free port) */
    pgw_loop *loop;   /* the event loop serving the requests */
    pgw_lookup *lookup;
    size_t max_header_bytes; /* request line + headers; larger gets 400 */
    size_t max_body_bytes;   /* larger gets 413 */
    /* Inactivity limit while reading a request or writing an answer, and for idle keep-alive
     * connections; also the deadline given to lookup, so a call is answered (504 at worst)
     * within it. */
    int request_timeout_ms;
    /* Trusted identity header (--identity-header), or NULL: as on the gRPC port, only for a
     * sidecar that sets it and strips any copy the client sent. */
    const char *identity_header;
    int require_identity; /* a call without a verifiable identity gets UNAUTHENTICATED */
    /* borrowed; --max-concurrent-calls, shared with the gRPC port; NULL: no bound. A call
     * over it gets 429 (REST) or ThrottlingException (POST /), unless a fresh L1 hit answers
     * it at once. */
    struct pgw_call_limit *call_limit;
    /* borrowed; ?watch=true streams (NULL: answered 501) */
    struct pgw_watch_registry *watch;
} pgw_http_server_options;

/* Creates the server and binds its listener. Call before pgw_loop_start() or on the loop
 * thread. Returns NULL with a one-line reason in err when the address cannot be bound. Free
 * with pgw_http_server_free(). */
pgw_http_server *pgw_http_server_new(const pgw_http_server_options *options, char *err,
                                     size_t err_len);

/* The port actually bound (useful with port 0). */
int pgw_http_server_port(const pgw_http_server *server);

/* Stops accepting connections (the loop closes the listener soon after) and marks every later
 * answer `Connection: close`. Any thread; idempotent. */
void pgw_http_server_stop_accepting(pgw_http_server *server);

/* Graceful shutdown, from any thread but the loop's: pgw_http_server_stop_accepting(), then
 * waits up to grace_ms for the calls in flight to be answered. Returns the number still in
 * flight when it gave up (0 = drained). The connections left are closed by
 * pgw_http_server_free(). */
int pgw_http_server_shutdown(pgw_http_server *server, int grace_ms);

/* Closes every connection (cancelling their lookups: no callback fires afterwards) and frees
 * the server. Loop thread only (or before the loop started / after it stopped). NULL is a
 * no-op. */
void pgw_http_server_free(pgw_http_server *server);

#endif
