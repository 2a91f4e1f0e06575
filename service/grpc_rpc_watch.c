/* WatchBatchInferenceJob: a server stream of the job's changes (DESIGN.md "Watching a job").
 *
 *   completion-queue thread: identity, decode, watch for the close, hand over to the loop
 *   loop thread:
 *     open      pgw_lookup_start: the Describe path (ARN check, policy, caller limits, caches),
 *               under --max-concurrent-calls like a Describe call
 *     first     an error ends the stream with Describe's code and no message; the job is the
 *               first message, and unless it is terminal the stream takes a --watch-max-streams
 *               slot (RESOURCE_EXHAUSTED without one) and attaches to the registry
 *     streaming each update of the registry (service/watch.h) is queued and sent
 *     ending     a terminal job goes out with the OK status in one batch; NOT_FOUND, or
 *               UNAVAILABLE at shutdown, as a status alone
 *
 * Flow control: never more than one batch in flight (gRPC's rule). An update that arrives
 * while one is out replaces the one waiting behind it, so a slow reader gets the latest state
 * and never an unbounded queue; the final status waits behind the last message.
 *
 * Cancellation: RECV_CLOSE_ON_SERVER runs from the start, so a client that cancels, a passed
 * deadline (gRPC core cancels the call then) or a lost connection is seen at once; the loop
 * then cancels the lookup or detaches the watcher (the last one leaving stops the poll loop).
 *
 * References: the new-call one becomes the loop's at the hand-over and is dropped when the
 * stream is over for the loop (final batch done, or the call gone and no batch out); each task
 * posted to the loop holds one of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/call_limit.h"
#include "service/grpc_rpc.h"
#include "service/grpc_server.h"
#include "service/log.h"
#include "service/lookup.h"
#include "service/metrics.h"
#include "service/watch.h"

#define FRONTEND "grpc"

typedef struct job_stream {
    /* set on the completion-queue thread before the hand-over */
    char arn[300];
    size_t arn_len;
    int no_cache;
    int64_t deadline_ms;
    int last_send_ok; /* the batch that just completed: written before its task is posted */

    /* loop-thread state */
    int holds_call_place; /* a --max-concurrent-calls place while the open's lookup runs */
    pgw_lookup_req *lookup;
    pgw_watcher *watcher;
    int sending;               /* a batch is in flight */
    int gone;                  /* the call is over: send nothing more */
    int done;                  /* the loop let go of the call */
    grpc_byte_buffer *pending; /* the latest state not sent yet */
    int end_queued;            /* end after `pending` (if any) */
    int end_sent;
    pgw_code end_code;
    char end_message[512];
} job_stream;

static pgw_watch_registry *registry_of(pgw_grpc_call *c)
{
    return pgw_grpc_server_opts(c->server)->watch;
}

/* Ends a stream that never reached the loop (or never will): one batch with the status. */
static void refuse(pgw_grpc_call *c, grpc_status_code code, const char *message)
{
    pgw_metrics_watch_ended(FRONTEND, (pgw_code)code);
    pgw_grpc_call_answer(c, code, message, NULL);
}

/* Gives back the --max-concurrent-calls place the open took (any thread; once). */
static void leave_call_limit(pgw_grpc_call *c)
{
    job_stream *s = c->state;
    if (s->holds_call_place) {
        s->holds_call_place = 0;
        pgw_call_limit_leave(pgw_grpc_server_opts(c->server)->call_limit);
    }
}

/* --- loop thread --- */

/* The loop is done with the call: count it once and drop the loop's reference. */
static void finish(pgw_grpc_call *c, pgw_code code)
{
    job_stream *s = c->state;
    if (s->done)
        return;
    s->done = 1;
    pgw_metrics_watch_ended(FRONTEND, code);
    pgw_grpc_call_unref(c);
}

/* The call is over before its end was sent: let go of everything the stream holds. */
static void abandon(pgw_grpc_call *c)
{
    job_stream *s = c->state;
    s->gone = 1;
    if (s->lookup) {
        pgw_lookup_cancel(s->lookup);
        s->lookup = NULL;
    }
    if (s->watcher) {
        pgw_watch_detach(s->watcher);
        s->watcher = NULL;
    }
    leave_call_limit(c);
    if (s->pending) {
        grpc_byte_buffer_destroy(s->pending);
        s->pending = NULL;
    }
    if (!s->sending)
        finish(c, PGW_CANCELLED);
}

/* Sends what is waiting, when nothing is in flight. */
static void pump(pgw_grpc_call *c)
{
    job_stream *s = c->state;
    if (s->gone || s->sending || s->end_sent || (!s->pending && !s->end_queued))
        return;
    grpc_byte_buffer *message = s->pending;
    s->pending = NULL;
    int end = s->end_queued;
    s->sending = 1;
    if (pgw_grpc_call_send(c, message, end, (grpc_status_code)s->end_code,
                           s->end_code == PGW_OK ? NULL : s->end_message) != 0) {
        s->sending = 0;
        abandon(c);
        return;
    }
    if (message)
        pgw_metrics_watch_message(FRONTEND);
    if (end)
        s->end_sent = 1;
}

/* Queues the latest state of the job: it replaces one still waiting (latest-state-only). */
static void queue_job(job_stream *s, const uint8_t *job_pb, size_t len)
{
    if (s->pending)
        grpc_byte_buffer_destroy(s->pending);
    s->pending = pgw_grpc_wrap_field1(job_pb, len);
}

/* Queues the end of the stream. Only OK keeps a message still waiting (the terminal job). */
static void queue_end(job_stream *s, pgw_code code, const char *message)
{
    if (s->end_queued)
        return;
    if (code != PGW_OK && s->pending) {
        grpc_byte_buffer_destroy(s->pending);
        s->pending = NULL;
    }
    s->end_queued = 1;
    s->end_code = code;
    snprintf(s->end_message, sizeof(s->end_message), "%s", message ? message : "");
}

static void on_update(const pgw_watch_update *u, void *user_data)
{
    pgw_grpc_call *c = user_data;
    job_stream *s = c->state;
    if (u->final)
        s->watcher = NULL; /* the registry detached it */
    if (u->code == PGW_OK)
        queue_job(s, u->job_pb, u->job_pb_len);
    if (u->final)
        queue_end(s, u->code, u->message);
    pump(c);
}

/* Takes a --watch-max-streams slot. Returns 0, or -1 with the end of the stream queued. */
static int take_slot(pgw_grpc_call *c)
{
    job_stream *s = c->state;
    pgw_watch_registry *reg = registry_of(c);
    switch (pgw_watch_reserve(reg)) {
    case PGW_WATCH_RESERVED:
        return 0;
    case PGW_WATCH_FULL: {
        pgw_metrics_rejected("watch_max_streams");
        char message[160];
        snprintf(message, sizeof(message),
                 "the gateway holds its maximum of %d watch streams (--watch-max-streams): "
                 "retry later or on another replica",
                 pgw_watch_max_streams(reg));
        queue_end(s, PGW_RESOURCE_EXHAUSTED, message);
        return -1;
    }
    case PGW_WATCH_SHUT_DOWN:
        break;
    }
    queue_end(s, PGW_UNAVAILABLE, "the gateway is shutting down: reconnect");
    return -1;
}

/* The open's lookup answered: Describe's answer is the first message, or its error the end. A
 * job still running then needs a slot (after the checks, so that a caller who may not see the
 * job, or asks for a malformed ARN, hears that whatever the slots). */
static void on_first(const pgw_lookup_result *res, void *user_data)
{
    pgw_grpc_call *c = user_data;
    job_stream *s = c->state;
    s->lookup = NULL;
    leave_call_limit(c);
    if (res->code != PGW_OK) {
        queue_end(s, res->code, res->message);
        pump(c);
        return;
    }
    int terminal = pgw_watch_job_is_terminal(res->job_pb, res->job_pb_len);
    if (!terminal && take_slot(c) != 0) {
        pump(c);
        return;
    }
    char age[24];
    snprintf(age, sizeof(age), "%lld", (long long)res->age_s);
    pgw_grpc_call_add_metadata(c, "x-cache", pgw_cache_source_name(res->source));
    pgw_grpc_call_add_metadata(c, "age", age);
    queue_job(s, res->job_pb, res->job_pb_len);
    if (terminal) {
        queue_end(s, PGW_OK, NULL);
    } else {
        /* The watcher takes the slot over (attach gives it back on failure). */
        pgw_watch_registry *reg = registry_of(c);
        s->watcher = pgw_watch_attach(reg, s->arn, res->job_pb, res->job_pb_len, on_update, c);
        if (!s->watcher)
            queue_end(s, pgw_watch_is_shut_down(reg) ? PGW_UNAVAILABLE : PGW_INTERNAL,
                      pgw_watch_is_shut_down(reg) ? "the gateway is shutting down: reconnect"
                                                  : "out of memory");
    }
    pump(c);
}

static void loop_open(void *arg)
{
    pgw_grpc_call *c = arg;
    job_stream *s = c->state;
    if (s->gone) { /* cancelled before the loop got to it */
        finish(c, PGW_CANCELLED);
        return;
    }
    pgw_lookup_params p = {
        .arn = s->arn,
        .arn_len = s->arn_len,
        .deadline_ms = s->deadline_ms,
        .no_cache = s->no_cache,
        .identity = c->has_identity ? c->identity : NULL,
        .frontend = "grpc",
    };
    /* on_first may run inside pgw_lookup_start (a bad ARN, an L1 hit) and even end the stream:
     * hold a reference so s outlives the call. */
    pgw_grpc_call_ref(c);
    s->lookup = pgw_lookup_start(pgw_grpc_server_opts(c->server)->lookup, &p, on_first, c);
    pgw_grpc_call_unref(c);
}

static void loop_sent(void *arg)
{
    pgw_grpc_call *c = arg;
    job_stream *s = c->state;
    s->sending = 0;
    if (!s->last_send_ok) {
        if (!s->done)
            abandon(c);
    } else if (s->end_sent) {
        finish(c, s->end_code);
    } else if (s->gone) {
        finish(c, PGW_CANCELLED);
    } else {
        pump(c);
    }
    pgw_grpc_call_unref(c); /* this task's reference */
}

static void loop_cancel(void *arg)
{
    pgw_grpc_call *c = arg;
    job_stream *s = c->state;
    if (!s->done && !s->gone)
        abandon(c);
    pgw_grpc_call_unref(c); /* this task's reference */
}

/* --- completion-queue threads --- */

static void post(pgw_grpc_call *c, pgw_loop_fn fn)
{
    pgw_grpc_call_ref(c);
    if (pgw_loop_post(pgw_grpc_server_opts(c->server)->loop, fn, c) != 0)
        pgw_grpc_call_unref(c); /* the loop is gone: so is the stream's state there */
}

/* Ends a new call at once, if something stops it before the loop: returns nonzero then. */
static int refused_early(pgw_grpc_call *c)
{
    const pgw_grpc_server_options *o = pgw_grpc_server_opts(c->server);
    job_stream *s = c->state;
    const char *unauthenticated = pgw_grpc_call_require_identity(c);
    if (unauthenticated) {
        refuse(c, GRPC_STATUS_UNAUTHENTICATED, unauthenticated);
    } else if (!o->watch) {
        refuse(c, GRPC_STATUS_UNIMPLEMENTED, "watching is not enabled on this gateway");
    } else if (!c->payload) {
        refuse(c, GRPC_STATUS_INVALID_ARGUMENT, "the request carried no message");
    } else if (pgw_grpc_read_arn_request(c->payload, s->arn, sizeof(s->arn), &s->arn_len) != 0) {
        refuse(c, GRPC_STATUS_INVALID_ARGUMENT,
               "the request is not a valid WatchBatchInferenceJobRequest message");
    } else if (!pgw_call_limit_enter(o->call_limit)) {
        /* Opening is a Describe call, under the same bound; the stream then holds a slot. */
        pgw_metrics_rejected("max_concurrent_calls");
        char message[160];
        snprintf(message, sizeof(message),
                 "the gateway is serving its maximum of %d concurrent calls "
                 "(--max-concurrent-calls): retry later",
                 pgw_call_limit_max(o->call_limit));
        refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, message);
    } else {
        s->holds_call_place = o->call_limit != NULL;
        return 0;
    }
    return 1;
}

static void on_new(pgw_grpc_call *c)
{
    const pgw_grpc_server_options *o = pgw_grpc_server_opts(c->server);
    job_stream *s = calloc(1, sizeof(*s));
    if (!s) {
        refuse(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        pgw_grpc_call_unref(c);
        return;
    }
    c->state = s;
    if (refused_early(c)) {
        pgw_grpc_call_unref(c);
        return;
    }
    if (pgw_grpc_call_watch_close(c) != 0) { /* the call is over already */
        leave_call_limit(c);
        pgw_metrics_watch_ended(FRONTEND, PGW_CANCELLED);
        pgw_grpc_call_unref(c);
        return;
    }
    s->no_cache = pgw_grpc_call_wants_no_cache(c);
    s->deadline_ms = pgw_grpc_call_deadline_ms(c);
    /* The new-call reference becomes the loop's. */
    if (pgw_loop_post(o->loop, loop_open, c) != 0) {
        leave_call_limit(c);
        refuse(c, GRPC_STATUS_UNAVAILABLE, "the gateway is shutting down: reconnect");
        pgw_grpc_call_unref(c);
    }
}

static void on_send_done(pgw_grpc_call *c, int ok)
{
    job_stream *s = c->state;
    if (!c->close_watched)
        return; /* refuse()'s one batch: the loop never had the call */
    s->last_send_ok = ok;
    post(c, loop_sent);
}

static void on_close(pgw_grpc_call *c)
{
    if (c->cancelled)
        post(c, loop_cancel);
}

static void on_free(pgw_grpc_call *c)
{
    job_stream *s = c->state;
    if (!s)
        return;
    if (s->pending)
        grpc_byte_buffer_destroy(s->pending);
    free(s);
}

const pgw_grpc_method pgw_grpc_watch_job_method = {
    .name = "WatchBatchInferenceJob",
    .path = "/" PGW_GRPC_SERVICE "/WatchBatchInferenceJob",
    .reads_payload = 1,
    .posted_per_thread = 4,
    .on_new = on_new,
    .on_send_done = on_send_done,
    .on_close = on_close,
    .on_free = on_free,
};
