#include "service/http_server.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/aws/job_json.h"
#include "service/call_limit.h"
#include "service/clock.h"
#include "service/identity.h"
#include "service/health.h"
#include "service/http_request.h"
#include "service/http_sse.h"
#include "service/log.h"
#include "service/metrics.h"

#define AWS_TARGET       "AmazonPersonalize.DescribeBatchInferenceJob"
#define AWS_CONTENT_TYPE "application/x-amz-json-1.1"
#define JSON_TYPE        "application/json"
#define TEXT_TYPE        "text/plain; charset=utf-8"

typedef enum route {
    ROUTE_AWS,  /* POST / */
    ROUTE_REST, /* GET /v1/batch-inference-jobs/{arn} */
} route;

struct pgw_http_server {
    pgw_http_server_options options;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    int port;
    int early_close; /* the backend reports a peer's close without reading (EV_CLOSED) */
    atomic_int in_flight;
    atomic_int draining;
    pgw_http_sse_options sse;
    /* accepting paused after accept() ran out of file descriptors (loop thread) */
    struct event *accept_resume;
    int64_t accept_paused_logged_ms;
    uint64_t accept_pauses;
    pgw_http_server *next_server; /* in the list accept errors are matched against */
};

/* Server-sent events send a comment this often while a job does not change. */
#define SSE_HEARTBEAT_MS 15000

/* How long accepting pauses when accept() fails for want of file descriptors or memory: the
 * connection waits in the listen backlog meanwhile, instead of libevent retrying at once
 * (and logging a warning) in a busy loop that starves every other event. */
#define ACCEPT_PAUSE_MS 200

/* One DescribeBatchInferenceJob call waiting for lookup. It lives from the moment the call
 * goes asynchronous until it is answered or its connection goes away, whichever is first;
 * lookup's callback and the connection's close callback are mutually exclusive (each one
 * disarms the other), so exactly one of them frees it. */
typedef struct http_call {
    pgw_http_server *server;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *close_watch; /* EV_CLOSED on the socket: evhttp stops reading meanwhile */
    pgw_lookup_req *lookup;
    route route;
    int starting;         /* inside pgw_lookup_start: the callback must not free the call */
    int finished;         /* answered or abandoned */
    int holds_call_place; /* a --max-concurrent-calls place, given back by call_finish */
    int64_t started_ms;
} http_call;

static const char *frontend_name(route r)
{
    return r == ROUTE_AWS ? "http_aws" : "http_rest";
}

/* --- plain replies --- */

static void set_header(struct evhttp_request *req, const char *name, const char *value)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_remove_header(out, name);
    evhttp_add_header(out, name, value);
}

/* Sends `status` with a body (copied). Adds `Connection: close` while draining. */
static void reply(pgw_http_server *s, struct evhttp_request *req, int status,
                  const char *content_type, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf && body)
        evbuffer_add(buf, body, len);
    if (content_type)
        set_header(req, "Content-Type", content_type);
    if (atomic_load(&s->draining))
        set_header(req, "Connection", "close");
    evhttp_send_reply(req, status, NULL, buf);
    if (buf)
        evbuffer_free(buf);
}

/* Sends a JSON value (consumed) as the body. */
static void reply_json(pgw_http_server *s, struct evhttp_request *req, int status,
                       const char *content_type, json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT) : NULL;
    json_decref(value);
    if (!text) {
        reply(s, req, 500, TEXT_TYPE, "out of memory\n", 14);
        return;
    }
    reply(s, req, status, content_type, text, strlen(text));
    free(text);
}

/* The REST error shape: {"code": "NOT_FOUND", "message": "..."}. */
static void reply_rest_error(pgw_http_server *s, struct evhttp_request *req, pgw_code code,
                             const char *message)
{
    reply_json(s, req, pgw_code_http_status(code), JSON_TYPE,
               json_pack("{s:s, s:s}", "code", pgw_code_name(code), "message", message));
}

/* A fresh request id in the UUID form AWS uses for x-amzn-RequestId. */
static void new_request_id(char out[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        /* Not a secret, only needs to be unlikely to repeat. */
        static atomic_uint_fast64_t counter;
        uint64_t c = atomic_fetch_add(&counter, 1) ^ (uint64_t)pgw_now_wall_ms() << 20;
        for (int i = 0; i < 16; i++)
            b[i] = (unsigned char)(c >> ((i % 8) * 8)) ^ (unsigned char)i;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* An AWS JSON 1.1 error, as botocore parses it: the code in the body's __type and in
 * x-amzn-ErrorType, the text in "message", and an x-amzn-RequestId. */
static void reply_aws_error(pgw_http_server *s, struct evhttp_request *req, int status,
                            const char *type, const char *message, const char *request_id)
{
    char id[37];
    if (!request_id || !*request_id) {
        new_request_id(id);
        request_id = id;
    }
    set_header(req, "x-amzn-RequestId", request_id);
    set_header(req, "x-amzn-ErrorType", type);
    reply_json(s, req, status, AWS_CONTENT_TYPE,
               json_pack("{s:s, s:s}", "__type", type, "message", message));
}

/* Upstream codes that mean the gateway's own credentials were refused. Passing them on would
 * tell the caller its credentials are bad, which they are not (it sent none we use). */
static int is_gateway_credentials_error(const char *code)
{
    static const char *const codes[] = {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "AuthFailure",
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(code, codes[i]) == 0)
            return 1;
    return 0;
}

/* The AWS error (HTTP status and __type) for a gateway code, chosen so that botocore raises
 * the exception class it would raise against AWS and retries exactly what it would retry
 * (5xx, ThrottlingException). The upstream's own code wins when there is one. */
static void aws_error_for(pgw_code code, const char *upstream_code, int *status, const char **type)
{
    switch (code) {
    case PGW_INVALID_ARGUMENT:
        *status = 400, *type = "InvalidInputException";
        break;
    case PGW_NOT_FOUND:
        *status = 400, *type = "ResourceNotFoundException";
        break;
    case PGW_PERMISSION_DENIED:
        *status = 403, *type = "AccessDeniedException";
        break;
    case PGW_UNAUTHENTICATED:
        *status = 403, *type = "MissingAuthenticationTokenException";
        break;
    case PGW_RESOURCE_EXHAUSTED:
        *status = 400, *type = "ThrottlingException";
        break;
    case PGW_UNAVAILABLE:
        *status = 503, *type = "ServiceUnavailable";
        break;
    case PGW_DEADLINE_EXCEEDED:
        *status = 504, *type = "RequestTimeoutException";
        break;
    case PGW_UNIMPLEMENTED:
        *status = 400, *type = "UnknownOperationException";
        break;
    default:
        *status = 500, *type = "InternalFailure";
        break;
    }
    if (upstream_code && *upstream_code && !is_gateway_credentials_error(upstream_code))
        *type = upstream_code;
}

/* --- calls waiting for lookup --- */

static void on_connection_close(struct evhttp_connection *evcon, void *arg);

/* Disarms the connection callbacks and accounts the call; the caller then frees it. */
static void call_finish(http_call *c, pgw_code code)
{
    c->finished = 1;
    if (c->evcon)
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
    if (c->close_watch) {
        event_free(c->close_watch);
        c->close_watch = NULL;
    }
    double seconds = (double)(pgw_now_mono_ms() - c->started_ms) / 1000.0;
    pgw_metrics_request(frontend_name(c->route), code, seconds);
    pgw_metrics_in_flight(frontend_name(c->route), -1);
    atomic_fetch_sub(&c->server->in_flight, 1);
    if (c->holds_call_place) {
        c->holds_call_place = 0;
        pgw_call_limit_leave(c->server->options.call_limit);
    }
}

/* The peer closed its end while its call waited for lookup (evhttp does not read then, so it
 * would not notice before writing the answer). Freeing the connection runs
 * on_connection_close, which cancels the lookup and frees the call. */
static void on_peer_closed(evutil_socket_t fd, short what, void *arg)
{
    http_call *c = arg;
    evhttp_connection_free(c->evcon);
}

/* The connection is going away with the call unanswered: the client left, or the server is
 * being freed. Drops the lookup (its callback will not fire) and the call. */
static void on_connection_close(struct evhttp_connection *evcon, void *arg)
{
    http_call *c = arg;
    if (c->lookup) {
        pgw_lookup_cancel(c->lookup);
        c->lookup = NULL;
    }
    struct evhttp_request *req = c->req;
    c->req = NULL;
    c->evcon = NULL; /* already being freed: no closecb to clear */
    /* A request evhttp detached from its failed connection is left to its handler to free;
     * one still attached is freed by evhttp right after this callback. */
    if (req && evhttp_request_get_connection(req) == NULL)
        evhttp_request_free(req);
    if (pgw_log_enabled(PGW_LOG_DEBUG))
        pgw_log(PGW_LOG_DEBUG, "http client went away; call cancelled",
                json_pack("{s:s}", "frontend", frontend_name(c->route)));
    call_finish(c, PGW_CANCELLED);
    free(c);
}

/* Writes the answer to a finished lookup on the call's request. */
static void answer(http_call *c, const pgw_lookup_result *res)
{
    pgw_http_server *s = c->server;
    struct evhttp_request *req = c->req;
    const char *cache = pgw_cache_source_name(res->source);
    if (cache) {
        char age[24];
        snprintf(age, sizeof(age), "%lld", (long long)(res->age_s > 0 ? res->age_s : 0));
        set_header(req, "x-cache", cache);
        set_header(req, "age", age);
    }
    /* The upstream's request id names the upstream exchange that produced this answer; a
     * cached answer gets an id of its own. */
    const char *request_id = res->source == PGW_SOURCE_UPSTREAM || res->source == PGW_SOURCE_NONE
                                 ? res->aws_request_id
                                 : NULL;
    if (res->code != PGW_OK) {
        if (c->route == ROUTE_REST) {
            reply_rest_error(s, req, res->code, res->message);
        } else {
            int status;
            const char *type;
            aws_error_for(res->code, res->aws_error_code, &status, &type);
            reply_aws_error(s, req, status, type, res->message, request_id);
        }
        return;
    }
    PersonalizeGateway__V1__BatchInferenceJob *job =
        personalize_gateway__v1__batch_inference_job__unpack(NULL, res->job_pb_len, res->job_pb);
    char *body = NULL;
    if (job)
        body = c->route == ROUTE_AWS ? pgw_job_to_aws_json(job) : pgw_job_to_proto3_json(job);
    pgw_job_free(job);
    if (!body) {
        const char *msg = job ? "out of memory" : "the cached job does not decode";
        if (c->route == ROUTE_REST)
            reply_rest_error(s, req, PGW_INTERNAL, msg);
        else
            reply_aws_error(s, req, 500, "InternalFailure", msg, NULL);
        return;
    }
    if (c->route == ROUTE_AWS) {
        char id[37];
        if (!request_id || !*request_id) {
            new_request_id(id);
            request_id = id;
        }
        set_header(req, "x-amzn-RequestId", request_id);
    }
    reply(s, req, 200, c->route == ROUTE_AWS ? AWS_CONTENT_TYPE : JSON_TYPE, body, strlen(body));
    free(body);
}

static void on_lookup_done(const pgw_lookup_result *res, void *user_data)
{
    http_call *c = user_data;
    c->lookup = NULL;
    /* Disarm the close callbacks first: nothing below may free the connection under us. */
    call_finish(c, res->code);
    if (pgw_log_enabled(PGW_LOG_DEBUG))
        pgw_log(PGW_LOG_DEBUG, "call",
                json_pack("{s:s, s:s, s:s, s:I}", "frontend", frontend_name(c->route), "method",
                          "DescribeBatchInferenceJob", "code", pgw_code_name(res->code),
                          "latency_us", (json_int_t)((pgw_now_mono_ms() - c->started_ms) * 1000)));
    answer(c, res);
    c->req = NULL;
    if (!c->starting)
        free(c);
}

static int wants_no_cache(struct evhttp_request *req)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), "Cache-Control");
    return v && strcasestr(v, "no-cache") != NULL;
}

/* The caller's identity into out ("" for none), from the trusted header when one is
 * configured: exactly one occurrence with a valid value, as on the gRPC port. */
static void take_identity(pgw_http_server *s, struct evhttp_request *req,
                          char out[PGW_IDENTITY_MAX_LEN + 1])
{
    out[0] = '\0';
    if (!s->options.identity_header)
        return;
    const char *value = NULL;
    int count = 0;
    for (struct evkeyval *h = evhttp_request_get_input_headers(req)->tqh_first; h;
         h = h->next.tqe_next) {
        if (evutil_ascii_strcasecmp(h->key, s->options.identity_header) == 0) {
            value = h->value;
            count++;
        }
    }
    if (count == 1 && pgw_identity_valid(value, strlen(value)))
        snprintf(out, PGW_IDENTITY_MAX_LEN + 1, "%s", value);
}

/* Hands the ARN (borrowed for this call only) to lookup and answers when it is done. */
static void start_call(pgw_http_server *s, struct evhttp_request *req, route r, const char *arn,
                       size_t arn_len)
{
    http_call *c = calloc(1, sizeof(*c));
    if (!c) {
        reply(s, req, 500, TEXT_TYPE, "out of memory\n", 14);
        return;
    }
    c->server = s;
    c->req = req;
    c->route = r;
    c->started_ms = pgw_now_mono_ms();
    c->evcon = evhttp_request_get_connection(req);
    atomic_fetch_add(&s->in_flight, 1);
    pgw_metrics_in_flight(frontend_name(r), 1);
    if (c->evcon) {
        evhttp_connection_set_closecb(c->evcon, on_connection_close, c);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        if (s->early_close && fd >= 0) {
            c->close_watch = event_new(s->base, fd, EV_CLOSED, on_peer_closed, c);
            if (c->close_watch)
                event_add(c->close_watch, NULL);
        }
    }
    char identity[PGW_IDENTITY_MAX_LEN + 1];
    take_identity(s, req, identity);
    if (s->options.require_identity && !identity[0]) {
        pgw_metrics_auth_decision("unauthenticated");
        pgw_lookup_result refused = {
            .code = PGW_UNAUTHENTICATED,
            .message = "this gateway requires a caller identity and the request carried none",
        };
        c->starting = 1;
        on_lookup_done(&refused, c);
        free(c);
        return;
    }
    pgw_lookup_params p = {
        .identity = identity[0] ? identity : NULL,
        .arn = arn,
        .arn_len = arn_len,
        /* evhttp's timeout does not run while a call waits (it reads nothing then), so the
         * same limit bounds the lookup: the client gets an answer, 504 at worst. */
        .deadline_ms = c->started_ms + s->options.request_timeout_ms,
        .no_cache = wants_no_cache(req),
        .frontend = "http",
    };
    if (!pgw_call_limit_enter(s->options.call_limit)) {
        /* The gateway's own bound: a fresh L1 hit holds nothing and is still answered; any
         * other call is refused at once. */
        c->starting = 1;
        if (pgw_lookup_answer_cached(s->options.lookup, &p, on_lookup_done, c) !=
            PGW_CACHED_ANSWERED) {
            pgw_metrics_rejected("max_concurrent_calls");
            char message[160];
            snprintf(message, sizeof(message),
                     "the gateway is serving its maximum of %d concurrent calls "
                     "(--max-concurrent-calls): retry later",
                     pgw_call_limit_max(s->options.call_limit));
            pgw_lookup_result refused = {.code = PGW_RESOURCE_EXHAUSTED, .message = message};
            on_lookup_done(&refused, c);
        }
        free(c);
        return;
    }
    c->holds_call_place = s->options.call_limit != NULL;
    c->starting = 1;
    pgw_lookup_req *handle = pgw_lookup_start(s->options.lookup, &p, on_lookup_done, c);
    c->starting = 0;
    if (c->finished) { /* answered synchronously (bad ARN, L1 hit) */
        free(c);
        return;
    }
    c->lookup = handle;
}

/* An answer given before lookup (a malformed request): counted like a call. */
static void count_early(route r, pgw_code code)
{
    pgw_metrics_request(frontend_name(r), code, 0);
}

/* --- routes --- */

static int media_type_is(const char *content_type, const char *want)
{
    if (!content_type)
        return 0;
    size_t n = strlen(want);
    if (strncasecmp(content_type, want, n) != 0)
        return 0;
    char next = content_type[n];
    return next == '\0' || next == ';' || next == ' ' || next == '\t';
}

/* POST /: the AWS JSON 1.1 protocol, as botocore speaks it. The caller's Authorization (its
 * SigV4 signature) is neither checked, forwarded nor logged: the gateway signs with its own
 * credentials. */
static void handle_aws(pgw_http_server *s, struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *target = evhttp_find_header(in, "X-Amz-Target");
    if (!target || strcmp(target, AWS_TARGET) != 0) {
        count_early(ROUTE_AWS, PGW_UNIMPLEMENTED);
        reply_aws_error(s, req, 400, "UnknownOperationException",
                        target ? "the gateway serves only " AWS_TARGET
                               : "missing X-Amz-Target header (the gateway serves " AWS_TARGET ")",
                        NULL);
        return;
    }
    if (!media_type_is(evhttp_find_header(in, "Content-Type"), AWS_CONTENT_TYPE)) {
        count_early(ROUTE_AWS, PGW_INVALID_ARGUMENT);
        reply_aws_error(s, req, 400, "SerializationException",
                        "Content-Type must be " AWS_CONTENT_TYPE, NULL);
        return;
    }
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    if (len > s->options.max_body_bytes) { /* evhttp enforces it too; this keeps it local */
        count_early(ROUTE_AWS, PGW_INVALID_ARGUMENT);
        reply_aws_error(s, req, 413, "SerializationException", "the request body is too large",
                        NULL);
        return;
    }
    const char *bytes = len ? (const char *)evbuffer_pullup(body, -1) : "";
    if (!bytes) {
        reply_aws_error(s, req, 500, "InternalFailure", "out of memory", NULL);
        return;
    }
    pgw_http_aws_request parsed;
    if (pgw_http_aws_request_parse(&parsed, bytes, len) != 0) {
        count_early(ROUTE_AWS, PGW_INVALID_ARGUMENT);
        reply_aws_error(s, req, 400, parsed.aws_type, parsed.problem, NULL);
    } else {
        start_call(s, req, ROUTE_AWS, parsed.arn, parsed.arn_len);
    }
    pgw_http_aws_request_cleanup(&parsed);
}

/* ?watch=true: server-sent events (http_sse.c), after the same identity check as a GET. */
static void start_watch(pgw_http_server *s, struct evhttp_request *req, const char *arn, size_t len)
{
    char identity[PGW_IDENTITY_MAX_LEN + 1];
    take_identity(s, req, identity);
    if (s->options.require_identity && !identity[0]) {
        pgw_metrics_auth_decision("unauthenticated");
        pgw_metrics_watch_ended("http_sse", PGW_UNAUTHENTICATED);
        reply_rest_error(s, req, PGW_UNAUTHENTICATED,
                         "this gateway requires a caller identity and the request carried none");
        return;
    }
    pgw_http_sse_start(&s->sse, req, arn, len, identity[0] ? identity : NULL, wants_no_cache(req));
}

/* GET /v1/batch-inference-jobs/{arn}: `rest` is the path after the prefix, still encoded. An
 * ARN whose slash was not encoded is accepted too: the whole rest is the ARN. */
static void handle_rest(pgw_http_server *s, struct evhttp_request *req, const char *rest)
{
    size_t len = 0;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    int watch = pgw_http_watch_param(uri ? evhttp_uri_get_query(uri) : NULL);
    /* An encoded NUL ("%00") stays in, with the length: lookup's ARN check refuses it, as it
     * does on every other path. */
    char *arn = pgw_http_rest_arn(rest, &len);
    if (!arn) {
        reply_rest_error(s, req, PGW_INTERNAL, "out of memory");
    } else if (watch < 0) {
        count_early(ROUTE_REST, PGW_INVALID_ARGUMENT);
        reply_rest_error(s, req, PGW_INVALID_ARGUMENT, "watch must be true or false");
    } else if (watch && !s->options.watch) {
        count_early(ROUTE_REST, PGW_UNIMPLEMENTED);
        reply_rest_error(s, req, PGW_UNIMPLEMENTED, "watching is not enabled on this gateway");
    } else if (watch) {
        start_watch(s, req, arn, len);
    } else {
        start_call(s, req, ROUTE_REST, arn, len);
    }
    free(arn);
}

static void handle_healthz(pgw_http_server *s, struct evhttp_request *req)
{
    const char *why = NULL;
    if (pgw_health_alive(&why)) {
        reply(s, req, 200, TEXT_TYPE, "ok\n", 3);
    } else {
        char text[256];
        int n = snprintf(text, sizeof(text), "not alive: %s\n", why ? why : "unknown");
        reply(s, req, 503, TEXT_TYPE, text, (size_t)n < sizeof(text) ? (size_t)n : 0);
    }
}

static void handle_readyz(pgw_http_server *s, struct evhttp_request *req)
{
    const char *why = NULL;
    if (pgw_health_ready(&why)) {
        reply(s, req, 200, TEXT_TYPE, "ready\n", 6);
    } else {
        char text[256];
        int n = snprintf(text, sizeof(text), "not ready: %s\n", why ? why : "unknown");
        reply(s, req, 503, TEXT_TYPE, text, (size_t)n < sizeof(text) ? (size_t)n : 0);
    }
}

static void handle_metrics(pgw_http_server *s, struct evhttp_request *req)
{
    char *text = pgw_metrics_render();
    if (!text) {
        reply(s, req, 500, TEXT_TYPE, "out of memory\n", 14);
        return;
    }
    reply(s, req, 200, PGW_METRICS_CONTENT_TYPE, text, strlen(text));
    free(text);
}

static void method_not_allowed(pgw_http_server *s, struct evhttp_request *req, const char *allow)
{
    set_header(req, "Allow", allow);
    reply_json(s, req, 405, JSON_TYPE,
               json_pack("{s:s, s:s+}", "code", "METHOD_NOT_ALLOWED", "message", "use ", allow));
}

static void on_request(struct evhttp_request *req, void *arg)
{
    pgw_http_server *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path)
        path = "/";
    int get = evhttp_request_get_command(req) == EVHTTP_REQ_GET;
    int post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;

    const char *rest = NULL;
    switch (pgw_http_route_of(path, &rest)) {
    case PGW_HTTP_ROUTE_AWS:
        if (post)
            handle_aws(s, req);
        else
            method_not_allowed(s, req, "POST");
        break;
    case PGW_HTTP_ROUTE_REST:
        if (get)
            handle_rest(s, req, rest);
        else
            method_not_allowed(s, req, "GET");
        break;
    case PGW_HTTP_ROUTE_HEALTHZ:
    case PGW_HTTP_ROUTE_READYZ:
    case PGW_HTTP_ROUTE_METRICS:
        if (!get)
            method_not_allowed(s, req, "GET");
        else if (path[1] == 'h')
            handle_healthz(s, req);
        else if (path[1] == 'r')
            handle_readyz(s, req);
        else
            handle_metrics(s, req);
        break;
    case PGW_HTTP_ROUTE_NOT_FOUND:
        reply_json(s, req, 404, JSON_TYPE,
                   json_pack("{s:s, s:s}", "code", "NOT_FOUND", "message",
                             "no such path; see GET /v1/batch-inference-jobs/{arn} or POST /"));
        break;
    }
}

/* --- accept errors --- */

/* libevent gives the listener's error callback only the evhttp it serves: the servers are
 * found through this list. */
static pthread_mutex_t servers_mu = PTHREAD_MUTEX_INITIALIZER;
static pgw_http_server *servers;

static void servers_link(pgw_http_server *s, int add)
{
    pthread_mutex_lock(&servers_mu);
    pgw_http_server **pp = &servers;
    while (*pp && *pp != s)
        pp = &(*pp)->next_server;
    if (add && !*pp)
        *pp = s;
    else if (!add && *pp)
        *pp = s->next_server;
    pthread_mutex_unlock(&servers_mu);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    pgw_http_server *s = arg;
    if (s->listener && !atomic_load(&s->draining))
        evconnlistener_enable(evhttp_bound_socket_get_listener(s->listener));
}

/* accept() failed with an error that is not the peer's (libevent already skipped EAGAIN,
 * EINTR, ECONNABORTED): out of file descriptors (EMFILE, ENFILE) or buffers. Loop thread. */
static void on_accept_error(struct evconnlistener *lev, void *http)
{
    int err = EVUTIL_SOCKET_ERROR();
    pthread_mutex_lock(&servers_mu);
    pgw_http_server *s = servers;
    while (s && s->http != http)
        s = s->next_server;
    pthread_mutex_unlock(&servers_mu);
    evconnlistener_disable(lev);
    if (!s || !s->accept_resume)
        return; /* not ours (cannot happen) or no timer: stay paused rather than spin */
    s->accept_pauses++;
    int64_t now = pgw_now_mono_ms();
    if (!s->accept_paused_logged_ms || now - s->accept_paused_logged_ms >= 10000) {
        s->accept_paused_logged_ms = now;
        pgw_log(PGW_LOG_ERROR, "HTTP port: accept failed, accepting paused and retried",
                json_pack("{s:s, s:i, s:I}", "error", evutil_socket_error_to_string(err),
                          "pause_ms", ACCEPT_PAUSE_MS, "pauses", (json_int_t)s->accept_pauses));
    }
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(s->accept_resume, &tv);
}

/* --- lifecycle --- */

pgw_http_server *pgw_http_server_new(const pgw_http_server_options *options, char *err,
                                     size_t err_len)
{
    pgw_http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->options = *options;
    s->base = pgw_loop_base(options->loop);
    s->early_close = (event_base_get_features(s->base) & EV_FEATURE_EARLY_CLOSE) != 0;
    s->sse = (pgw_http_sse_options){
        .base = s->base,
        .lookup = options->lookup,
        .watch = options->watch,
        .call_limit = options->call_limit,
        .open_timeout_ms = options->request_timeout_ms,
        .heartbeat_ms = options->request_timeout_ms / 2 < SSE_HEARTBEAT_MS
                            ? options->request_timeout_ms / 2
                            : SSE_HEARTBEAT_MS,
        .early_close = s->early_close,
        .in_flight = &s->in_flight,
        .draining = &s->draining,
    };
    s->http = evhttp_new(s->base);
    if (!s->http) {
        snprintf(err, err_len, "cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_max_headers_size(s->http, (ev_ssize_t)options->max_header_bytes);
    evhttp_set_max_body_size(s->http, (ev_ssize_t)options->max_body_bytes);
    struct timeval tv = {options->request_timeout_ms / 1000,
                         (options->request_timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(s->http, &tv);
    /* Answer methods we do not serve with our own 405 rather than evhttp's 501. */
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    /* Read an oversized body to its end before the 413, so the client sees the answer
     * instead of a connection reset. */
    evhttp_set_flags(s->http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_gencb(s->http, on_request, s);

    /* host:port, the host possibly in [brackets] (IPv6). */
    const char *colon = strrchr(options->addr, ':');
    char host[256];
    size_t host_len = colon ? (size_t)(colon - options->addr) : 0;
    const char *h = options->addr;
    if (host_len >= 2 && h[0] == '[' && h[host_len - 1] == ']') {
        h++;
        host_len -= 2;
    }
    long port = colon ? strtol(colon + 1, NULL, 10) : -1;
    if (!colon || host_len == 0 || host_len >= sizeof(host) || port < 0 || port > 65535) {
        snprintf(err, err_len, "--http-addr: not a host:port address: %s", options->addr);
        goto fail;
    }
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    s->listener = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
    if (!s->listener) {
        snprintf(err, err_len, "--http-addr: cannot listen on %s", options->addr);
        goto fail;
    }
    s->accept_resume = evtimer_new(s->base, on_accept_resume, s);
    if (!s->accept_resume) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    servers_link(s, 1);
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(s->listener), on_accept_error);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(evhttp_bound_socket_get_fd(s->listener), (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return s;
fail:
    pgw_http_server_free(s);
    return NULL;
}

int pgw_http_server_port(const pgw_http_server *s)
{
    return s->port;
}

/* Loop thread: stop accepting; keep the open connections for the answers still due. */
static void close_listener(void *arg)
{
    pgw_http_server *s = arg;
    if (s->listener) {
        evhttp_del_accept_socket(s->http, s->listener);
        s->listener = NULL;
    }
}

void pgw_http_server_stop_accepting(pgw_http_server *s)
{
    if (atomic_exchange(&s->draining, 1) == 0)
        pgw_loop_post(s->options.loop, close_listener, s);
}

int pgw_http_server_shutdown(pgw_http_server *s, int grace_ms)
{
    pgw_http_server_stop_accepting(s);
    int64_t until = pgw_now_mono_ms() + grace_ms;
    while (atomic_load(&s->in_flight) > 0 && pgw_now_mono_ms() < until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&s->in_flight);
}

void pgw_http_server_free(pgw_http_server *s)
{
    if (!s)
        return;
    servers_link(s, 0);
    if (s->accept_resume)
        event_free(s->accept_resume);
    /* evhttp_free closes every connection; a call still waiting is dropped by its close
     * callback (on_connection_close), before its request is freed. */
    if (s->http)
        evhttp_free(s->http);
    free(s);
}
