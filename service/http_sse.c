/* Server-sent events for watches; see http_sse.h.
 *
 * Lifetimes: a stream lives from pgw_http_sse_start until its response has ended or its
 * connection went away, whichever is first. The connection's close callback (armed all along)
 * and the end of the response (evhttp_send_reply_end) are mutually exclusive: ending disarms
 * the callback first. A lookup or watcher callback never frees the stream while pgw_lookup_start
 * is on the stack (`starting`). */
#include "service/http_sse.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/aws/job_json.h"
#include "service/call_limit.h"
#include "service/clock.h"
#include "service/lookup.h"
#include "service/metrics.h"
#include "service/status.h"
#include "service/watch.h"

#define FRONTEND  "http_sse"
#define JSON_TYPE "application/json"

typedef struct sse_stream {
    const pgw_http_sse_options *o;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *close_watch; /* EV_CLOSED on the socket: evhttp does not read meanwhile */
    struct event *heartbeat;
    pgw_lookup_req *lookup;
    pgw_watcher *watcher;
    int holds_call_place; /* a --max-concurrent-calls place while the open's lookup runs */
    int starting;         /* inside pgw_lookup_start */
    int started;          /* the 200 and its headers are out: errors become an error event */
    int writing;          /* a chunk is being written */
    int finished;         /* answered or abandoned: free when the stack unwinds */
    char *pending;        /* the next event's text (the latest state only) */
    int end_queued;
    pgw_code end_code;
    char arn[300]; /* what lookup checked; attach needs it */
} sse_stream;

static void on_connection_close(struct evhttp_connection *evcon, void *arg);

static void set_header(struct evhttp_request *req, const char *name, const char *value)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_remove_header(out, name);
    evhttp_add_header(out, name, value);
}

static void leave_call_limit(sse_stream *st)
{
    if (st->holds_call_place) {
        st->holds_call_place = 0;
        pgw_call_limit_leave(st->o->call_limit);
    }
}

/* Disarms every callback of the stream and gives back what it holds in the registry. */
static void release(sse_stream *st)
{
    if (st->evcon)
        evhttp_connection_set_closecb(st->evcon, NULL, NULL);
    if (st->close_watch) {
        event_free(st->close_watch);
        st->close_watch = NULL;
    }
    if (st->heartbeat) {
        event_free(st->heartbeat);
        st->heartbeat = NULL;
    }
    if (st->lookup) {
        pgw_lookup_cancel(st->lookup);
        st->lookup = NULL;
    }
    if (st->watcher) {
        pgw_watch_detach(st->watcher);
        st->watcher = NULL;
    }
    leave_call_limit(st);
    free(st->pending);
    st->pending = NULL;
}

/* The stream is over: counted once; freed now unless pgw_lookup_start is still on the stack. */
static void stream_finish(sse_stream *st, pgw_code code)
{
    if (st->finished)
        return;
    st->finished = 1;
    release(st);
    pgw_metrics_watch_ended(FRONTEND, code);
    atomic_fetch_sub(st->o->in_flight, 1);
    if (!st->starting)
        free(st);
}

/* An error before the first event: the plain GET's status and body; the stream is over. */
static void end_with_error(sse_stream *st, pgw_code code, const char *message)
{
    struct evhttp_request *req = st->req;
    const pgw_http_sse_options *o = st->o;
    st->req = NULL;
    /* Disarm the close callbacks first (the stream may be freed here: st is not used below). */
    stream_finish(st, code);
    json_t *body = json_pack("{s:s, s:s}", "code", pgw_code_name(code), "message", message);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct evbuffer *buf = evbuffer_new();
    if (buf && text)
        evbuffer_add(buf, text, strlen(text));
    free(text);
    set_header(req, "Content-Type", JSON_TYPE);
    if (atomic_load(o->draining))
        set_header(req, "Connection", "close");
    evhttp_send_reply(req, pgw_code_http_status(code), NULL, buf);
    if (buf)
        evbuffer_free(buf);
}

/* The text of one event for a packed job; NULL when it does not render. */
static char *job_event(const uint8_t *job_pb, size_t len)
{
    PersonalizeGateway__V1__BatchInferenceJob *job =
        personalize_gateway__v1__batch_inference_job__unpack(NULL, len, job_pb);
    char *json = job ? pgw_job_to_proto3_json(job) : NULL;
    pgw_job_free(job);
    if (!json)
        return NULL;
    /* Compact JSON holds no newline (strings escape theirs), so one data: line carries it. */
    size_t n = strlen(json) + 16;
    char *text = malloc(n);
    if (text)
        snprintf(text, n, "data: %s\n\n", json);
    free(json);
    return text;
}

static char *error_event(pgw_code code, const char *message)
{
    json_t *body = json_pack("{s:s, s:s}", "code", pgw_code_name(code), "message", message);
    char *json = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!json)
        return NULL;
    size_t n = strlen(json) + 32;
    char *text = malloc(n);
    if (text)
        snprintf(text, n, "event: error\ndata: %s\n\n", json);
    free(json);
    return text;
}

static void pump(sse_stream *st);

/* A chunk has left for the socket's kernel buffer: the next may go. */
static void on_chunk_written(struct evhttp_connection *evcon, void *arg)
{
    sse_stream *st = arg;
    st->writing = 0;
    pump(st);
}

static void write_chunk(sse_stream *st, const char *text)
{
    struct evbuffer *buf = evbuffer_new();
    if (!buf)
        return;
    evbuffer_add(buf, text, strlen(text));
    st->writing = 1;
    evhttp_send_reply_chunk_with_cb(st->req, buf, on_chunk_written, st);
    evbuffer_free(buf);
}

/* Writes what waits, one chunk at a time; after the last, ends the response. */
static void pump(sse_stream *st)
{
    if (st->finished || st->writing)
        return;
    if (st->pending) {
        char *text = st->pending;
        st->pending = NULL;
        if (strncmp(text, "data:", 5) == 0)
            pgw_metrics_watch_message(FRONTEND);
        write_chunk(st, text);
        free(text);
        return;
    }
    if (st->end_queued) {
        /* Disarm the close callback first: ending hands the request back to evhttp. */
        struct evhttp_request *req = st->req;
        pgw_code code = st->end_code;
        st->req = NULL;
        stream_finish(st, code);
        evhttp_send_reply_end(req);
    }
}

static void queue(sse_stream *st, char *text)
{
    if (!text)
        return;
    free(st->pending);
    st->pending = text;
}

static void queue_end(sse_stream *st, pgw_code code, const char *message)
{
    if (st->end_queued)
        return;
    if (code != PGW_OK)
        queue(st, error_event(code, message)); /* it replaces a state still waiting */
    st->end_queued = 1;
    st->end_code = code;
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    sse_stream *st = arg;
    if (st->started && !st->writing && !st->pending && !st->end_queued)
        write_chunk(st, ": keep-alive\n\n");
}

static void on_update(const pgw_watch_update *u, void *user_data)
{
    sse_stream *st = user_data;
    if (u->final)
        st->watcher = NULL; /* the registry detached it */
    if (u->code == PGW_OK)
        queue(st, job_event(u->job_pb, u->job_pb_len));
    if (u->final)
        queue_end(st, u->code, u->message);
    pump(st);
}

/* The connection went away with the stream open (the client left, or the server is being
 * freed). */
static void on_connection_close(struct evhttp_connection *evcon, void *arg)
{
    sse_stream *st = arg;
    struct evhttp_request *req = st->req;
    st->req = NULL;
    st->evcon = NULL; /* already being freed: no closecb to clear */
    /* A request evhttp detached from its failed connection is left to its handler to free;
     * one still attached is freed by evhttp right after this callback. */
    if (req && evhttp_request_get_connection(req) == NULL)
        evhttp_request_free(req);
    stream_finish(st, PGW_CANCELLED);
}

static void on_peer_closed(evutil_socket_t fd, short what, void *arg)
{
    sse_stream *st = arg;
    evhttp_connection_free(st->evcon); /* runs on_connection_close */
}

/* A --watch-max-streams slot for a job still running. Returns 0, or -1 with the stream ended
 * (before any event: the plain GET's error shape). */
static int take_slot(sse_stream *st)
{
    switch (pgw_watch_reserve(st->o->watch)) {
    case PGW_WATCH_RESERVED:
        return 0;
    case PGW_WATCH_FULL: {
        pgw_metrics_rejected("watch_max_streams");
        char message[160];
        snprintf(message, sizeof(message),
                 "the gateway holds its maximum of %d watch streams (--watch-max-streams): "
                 "retry later or on another replica",
                 pgw_watch_max_streams(st->o->watch));
        end_with_error(st, PGW_RESOURCE_EXHAUSTED, message);
        return -1;
    }
    case PGW_WATCH_SHUT_DOWN:
        break;
    }
    end_with_error(st, PGW_UNAVAILABLE, "the gateway is shutting down: reconnect");
    return -1;
}

/* The open's lookup answered: an error is the plain GET's answer; a job starts the stream. */
static void on_first(const pgw_lookup_result *res, void *user_data)
{
    sse_stream *st = user_data;
    st->lookup = NULL;
    leave_call_limit(st);
    if (res->code != PGW_OK) {
        end_with_error(st, res->code, res->message);
        return;
    }
    int terminal = pgw_watch_job_is_terminal(res->job_pb, res->job_pb_len);
    if (!terminal && take_slot(st) != 0)
        return;
    char *first = job_event(res->job_pb, res->job_pb_len);
    if (!first) {
        if (!terminal)
            pgw_watch_unreserve(st->o->watch);
        end_with_error(st, PGW_INTERNAL, "the job does not render as JSON");
        return;
    }
    const char *cache = pgw_cache_source_name(res->source);
    if (cache) {
        char age[24];
        snprintf(age, sizeof(age), "%lld", (long long)(res->age_s > 0 ? res->age_s : 0));
        set_header(st->req, "x-cache", cache);
        set_header(st->req, "age", age);
    }
    set_header(st->req, "Content-Type", "text/event-stream");
    set_header(st->req, "Cache-Control", "no-cache");
    set_header(st->req, "X-Accel-Buffering", "no"); /* proxies: pass each event on at once */
    if (atomic_load(st->o->draining))
        set_header(st->req, "Connection", "close");
    evhttp_send_reply_start(st->req, 200, "OK");
    st->started = 1;
    queue(st, first);
    if (terminal) {
        queue_end(st, PGW_OK, NULL);
    } else {
        /* The watcher takes the slot over (attach gives it back on failure). */
        st->watcher =
            pgw_watch_attach(st->o->watch, st->arn, res->job_pb, res->job_pb_len, on_update, st);
        if (!st->watcher)
            queue_end(st, pgw_watch_is_shut_down(st->o->watch) ? PGW_UNAVAILABLE : PGW_INTERNAL,
                      pgw_watch_is_shut_down(st->o->watch)
                          ? "the gateway is shutting down: reconnect"
                          : "out of memory");
    }
    pump(st);
}

void pgw_http_sse_start(const pgw_http_sse_options *o, struct evhttp_request *req, const char *arn,
                        size_t arn_len, const char *identity, int no_cache)
{
    sse_stream *st = calloc(1, sizeof(*st));
    if (!st) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    st->o = o;
    st->req = req;
    atomic_fetch_add(o->in_flight, 1);
    size_t n = arn_len < sizeof(st->arn) - 1 ? arn_len : sizeof(st->arn) - 1;
    memcpy(st->arn, arn, n); /* a longer one is refused by lookup's ARN check, by its length */
    st->evcon = evhttp_request_get_connection(req);
    if (st->evcon) {
        evhttp_connection_set_closecb(st->evcon, on_connection_close, st);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(st->evcon);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        if (o->early_close && fd >= 0) {
            st->close_watch = event_new(o->base, fd, EV_CLOSED, on_peer_closed, st);
            if (st->close_watch)
                event_add(st->close_watch, NULL);
        }
    }
    if (!pgw_call_limit_enter(o->call_limit)) {
        /* Opening is a Describe call, under the same bound; the stream then holds a slot. */
        pgw_metrics_rejected("max_concurrent_calls");
        char message[160];
        snprintf(message, sizeof(message),
                 "the gateway is serving its maximum of %d concurrent calls "
                 "(--max-concurrent-calls): retry later",
                 pgw_call_limit_max(o->call_limit));
        end_with_error(st, PGW_RESOURCE_EXHAUSTED, message);
        return;
    }
    st->holds_call_place = o->call_limit != NULL;
    st->heartbeat = event_new(o->base, -1, EV_PERSIST, on_heartbeat, st);
    if (st->heartbeat) {
        struct timeval tv = {o->heartbeat_ms / 1000, (o->heartbeat_ms % 1000) * 1000};
        event_add(st->heartbeat, &tv);
    }
    pgw_lookup_params p = {
        .arn = arn,
        .arn_len = arn_len,
        .deadline_ms = pgw_now_mono_ms() + o->open_timeout_ms,
        .no_cache = no_cache,
        .identity = identity,
        .frontend = "http",
    };
    st->starting = 1;
    pgw_lookup_req *handle = pgw_lookup_start(o->lookup, &p, on_first, st);
    st->starting = 0;
    if (st->finished) { /* answered at once (a bad ARN, denied) or ended */
        free(st);
        return;
    }
    st->lookup = handle;
}
