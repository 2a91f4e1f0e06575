/* Outbound HTTP on the event loop: libcurl's multi interface driven by libevent (socket and
 * timer callbacks), so a thousand transfers in flight cost a thousand sockets, not threads.
 * Connections are pooled per host (a bound, kept alive, reused across calls), HTTP/2 where
 * the server offers it over TLS (ALPN), with many transfers multiplexed on one connection.
 * TLS peer and host verification are always on.
 *
 * Loop thread only. */
#ifndef PGW_HTTP_CLIENT_H
#define PGW_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct curl_slist;
typedef struct pgw_http_client pgw_http_client;
typedef struct pgw_http_transfer pgw_http_transfer;

typedef struct pgw_http_client_options {
    int64_t connect_timeout_ms;
    const char *ca_file;   /* extra PEM bundle, or NULL for the system's */
    size_t max_body_bytes; /* larger responses fail the transfer */
    /* Connection pool bound per host (CURLMOPT_MAX_HOST_CONNECTIONS): transfers beyond it
     * wait inside curl for a connection to free up (or multiplex on an HTTP/2 one); 0 = no
     * bound. Idle connections kept for reuse: as many (at least 16). */
    int max_host_connections;
    /* libevent priority of the client's socket and timer events; 0 keeps the base's default.
     * The gateway passes its loop's bulk priority, so transfers yield to cache hits. */
    int event_priority;
} pgw_http_client_options;

pgw_http_client *pgw_http_client_new(struct event_base *base,
                                     const pgw_http_client_options *options);

/* Cancels every transfer in flight (their callbacks do not fire) and frees the client. */
void pgw_http_client_free(pgw_http_client *client);

typedef struct pgw_http_request {
    const char *method; /* "GET", "POST", "PUT" */
    const char *url;
    const char *const *headers; /* "Name: value" strings, NULL-terminated; copied */
    const char *body;           /* copied; may be NULL */
    size_t body_len;
    int64_t timeout_ms; /* whole transfer */
    /* How many times the request may leave: curl silently re-sends a request whose reused
     * keep-alive connection turned out dead, on a fresh one. Beyond this many sends the
     * transfer fails instead (a transport error). 0 = no bound. */
    int max_sends;
} pgw_http_request;

/* The outcome of one transfer. Borrowed: valid while the callback runs. */
typedef struct pgw_http_response {
    int transport_error; /* 0, or nonzero when no complete HTTP answer came */
    int timed_out;       /* the transport error was a timeout */
    const char *error;   /* transport error text, or NULL */
    long status;         /* HTTP status when transport_error == 0 */
    const char *body;    /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    pgw_http_transfer *transfer; /* for pgw_http_response_header */
    int sends;           /* how many times the request left (>= 1 once a connection was up) */
    int new_connections; /* connections opened for this transfer (0: a reused one) */
    int http_version;    /* 2 for HTTP/2, 1 for HTTP/1.x, 0 when no answer came */
} pgw_http_response;

/* The value of a response header (case-insensitive name), or NULL. Valid in the callback. */
const char *pgw_http_response_header(const pgw_http_response *response, const char *name);

/* Fires exactly once per transfer started, on the loop thread, unless cancelled first. */
typedef void (*pgw_http_cb)(const pgw_http_response *response, void *user_data);

/* Starts a transfer. Returns a handle for pgw_http_cancel, or NULL (the callback will not
 * fire) on a setup failure. */
pgw_http_transfer *pgw_http_start(pgw_http_client *client, const pgw_http_request *request,
                                  pgw_http_cb cb, void *user_data);

/* Stops a transfer; its callback will not fire. Not from inside its own callback. */
void pgw_http_cancel(pgw_http_transfer *transfer);

#endif
