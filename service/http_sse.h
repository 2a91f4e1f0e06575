/* http_sse: `GET /v1/batch-inference-jobs/{ARN}?watch=true` as server-sent events
 * (text/event-stream), the HTTP form of WatchBatchInferenceJob (DESIGN.md "Watching a job").
 *
 *   - opening: the Describe path (pgw_lookup_start, under --max-concurrent-calls), then, for a
 *     job still running, a --watch-max-streams slot; an error there gets the same HTTP status
 *     and JSON body as the plain GET (429 for a bound), and no stream;
 *   - then a chunked 200 with one event `data: <proto3 JSON job>` per message (the first is the
 *     job now; then one per change of status or last-updated time), ending after a terminal
 *     status. A stream that ends otherwise (the job became unknown: NOT_FOUND; shutdown:
 *     UNAVAILABLE) gets a last `event: error` whose data is the REST error body, then ends;
 *   - a comment line every heartbeat keeps proxies (and the socket) from calling it idle;
 *   - one chunk written at a time: an update that arrives while one is being written replaces
 *     the one waiting (a slow reader gets the latest state, never a growing buffer);
 *   - the client closing its end detaches the watcher (the last one stops the poll loop).
 *
 * The HTTP server (http_server.c) routes here; everything runs on the loop thread. */
#ifndef PGW_HTTP_SSE_H
#define PGW_HTTP_SSE_H

#include <stdatomic.h>
#include <stddef.h>

struct event_base;
struct evhttp_request;
struct pgw_call_limit;
struct pgw_lookup;
struct pgw_watch_registry;

typedef struct pgw_http_sse_options {
    struct event_base *base;
    struct pgw_lookup *lookup;         /* borrowed */
    struct pgw_watch_registry *watch;  /* borrowed */
    struct pgw_call_limit *call_limit; /* borrowed; bounds the opens' lookups; NULL: none */
    int open_timeout_ms;        /* deadline of the first lookup (--http-request-timeout-ms) */
    int heartbeat_ms;           /* a comment line this often while nothing else is sent */
    int early_close;            /* the backend reports a peer's close (EV_CLOSED) */
    atomic_int *in_flight;      /* the server's count of calls being answered */
    const atomic_int *draining; /* the server is stopping: answers say Connection: close */
} pgw_http_sse_options;

/* Serves one watch request. `options` is borrowed for the stream's whole life (the server's);
 * arn and identity (NULL: anonymous) are borrowed for this call only. The request is answered
 * in every case. Loop thread. */
void pgw_http_sse_start(const pgw_http_sse_options *options, struct evhttp_request *req,
                        const char *arn, size_t arn_len, const char *identity, int no_cache);

#endif
