/* DescribeBatchInferenceJob: one unary call.
 *
 *   completion-queue thread: decode, identity, fast path (a fresh L1 hit is answered right
 *     here, in one batch), --max-concurrent-calls, watch for the close, hand over to the loop
 *   loop thread: pgw_lookup_start; its callback sends the answer (job, x-cache, age) or the
 *     status. A close seen first (cancelled, deadline, connection lost) cancels the lookup.
 *
 * References: the new-call one becomes the loop's at the hand-over and is dropped once the
 * answer is sent or the cancel is seen; each task posted to the loop holds one of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/audit.h"
#include "service/call_limit.h"
#include "service/clock.h"
#include "service/grpc_rpc.h"
#include "service/grpc_server.h"
#include "service/log.h"
#include "service/lookup.h"
#include "service/metrics.h"

typedef struct describe {
    /* loop-thread state */
    pgw_lookup_req *lookup;
    int answered;
    char arn[300];
    size_t arn_len;
    int no_cache;
    int64_t deadline_ms;
    int holds_call_place; /* a --max-concurrent-calls place, given back by account() */
} describe;

static void log_call(const pgw_grpc_call *c, const describe *d, pgw_code code)
{
    if (!pgw_log_enabled(PGW_LOG_DEBUG))
        return;
    pgw_log(PGW_LOG_DEBUG, "call",
            json_pack("{s:s, s:s, s:s#, s:s?, s:s, s:I}", "frontend", "grpc", "method",
                      "DescribeBatchInferenceJob", "arn", d->arn, (int)d->arn_len, "identity",
                      c->has_identity ? c->identity : NULL, "code", pgw_code_name(code),
                      "latency_us", (json_int_t)(pgw_now_mono_us() - c->started_us)));
}

/* Counts a call once, when it is answered or abandoned. */
static void account(pgw_grpc_call *c, pgw_code code)
{
    describe *d = c->state;
    pgw_metrics_request("grpc", code, (double)(pgw_now_mono_us() - c->started_us) / 1e6);
    pgw_metrics_in_flight("grpc", -1);
    if (d->holds_call_place) {
        d->holds_call_place = 0;
        pgw_call_limit_leave(pgw_grpc_server_opts(c->server)->call_limit);
    }
}

/* Answers a call that never reached lookup. */
static void reject(pgw_grpc_call *c, grpc_status_code code, const char *message)
{
    account(c, (pgw_code)code);
    pgw_grpc_call_answer(c, code, message, NULL);
}

/* Sends a lookup's answer: the job with x-cache and age metadata, or the error status. */
static void answer_call(pgw_grpc_call *c, const pgw_lookup_result *res)
{
    log_call(c, c->state, res->code);
    account(c, res->code);
    grpc_byte_buffer *message = NULL;
    if (res->code == PGW_OK) {
        /* The response is field 1 around the packed job: the cached bytes go out as they
         * are, with no unpack and re-pack. */
        message = pgw_grpc_wrap_field1(res->job_pb, res->job_pb_len);
        char age[24];
        snprintf(age, sizeof(age), "%lld", (long long)res->age_s);
        pgw_grpc_call_add_metadata(c, "x-cache", pgw_cache_source_name(res->source));
        pgw_grpc_call_add_metadata(c, "age", age);
    }
    pgw_grpc_call_answer(c, (grpc_status_code)res->code, res->message, message);
}

/* pgw_lookup_answer_cached's callback: runs on this completion-queue thread. */
static void on_cached_answer(const pgw_lookup_result *res, void *user_data)
{
    answer_call(user_data, res);
}

/* --- loop thread --- */

static void on_lookup_done(const pgw_lookup_result *res, void *user_data)
{
    pgw_grpc_call *c = user_data;
    describe *d = c->state;
    d->lookup = NULL;
    d->answered = 1;
    answer_call(c, res);
    pgw_grpc_call_unref(c); /* the loop's reference */
}

static void loop_start_lookup(void *arg)
{
    pgw_grpc_call *c = arg;
    describe *d = c->state;
    if (d->answered) { /* cancelled before the loop got to it */
        pgw_grpc_call_unref(c);
        return;
    }
    pgw_lookup_params p = {
        .arn = d->arn,
        .arn_len = d->arn_len,
        .deadline_ms = d->deadline_ms,
        .no_cache = d->no_cache,
        .identity = c->has_identity ? c->identity : NULL,
        .frontend = "grpc",
    };
    /* The callback may run (and drop the loop's reference) inside pgw_lookup_start: hold one
     * more so c outlives the call. */
    pgw_grpc_call_ref(c);
    pgw_lookup_req *req =
        pgw_lookup_start(pgw_grpc_server_opts(c->server)->lookup, &p, on_lookup_done, c);
    if (!d->answered)
        d->lookup = req;
    pgw_grpc_call_unref(c);
}

static void loop_cancel(void *arg)
{
    pgw_grpc_call *c = arg;
    describe *d = c->state;
    if (!d->answered) {
        d->answered = 1;
        account(c, PGW_CANCELLED);
        if (d->lookup) {
            pgw_lookup_cancel(d->lookup);
            d->lookup = NULL;
        }
        pgw_grpc_call_unref(c); /* the loop's reference: no answer will be sent */
    }
    pgw_grpc_call_unref(c); /* this task's reference */
}

/* --- completion-queue threads --- */

/* Answers RESOURCE_EXHAUSTED: the gateway holds --max-concurrent-calls calls already. */
static void refuse_over_limit(pgw_grpc_call *c)
{
    describe *d = c->state;
    const pgw_grpc_server_options *o = pgw_grpc_server_opts(c->server);
    pgw_metrics_rejected("max_concurrent_calls");
    if (o->audit) {
        pgw_audit_record rec = {
            .frontend = "grpc",
            .identity = c->has_identity ? c->identity : NULL,
            .arn = d->arn,
            .arn_len = d->arn_len,
            .decision = PGW_AUDIT_RATE_LIMITED,
            .code = PGW_RESOURCE_EXHAUSTED,
            .latency_us = pgw_now_mono_us() - c->started_us,
        };
        pgw_audit_log(o->audit, &rec);
    }
    char message[160];
    snprintf(message, sizeof(message),
             "the gateway is serving its maximum of %d concurrent calls "
             "(--max-concurrent-calls): retry later",
             pgw_call_limit_max(o->call_limit));
    reject(c, GRPC_STATUS_RESOURCE_EXHAUSTED, message);
}

static void on_new(pgw_grpc_call *c)
{
    const pgw_grpc_server_options *o = pgw_grpc_server_opts(c->server);
    describe *d = calloc(1, sizeof(*d));
    if (!d) {
        pgw_grpc_call_answer(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        pgw_grpc_call_unref(c);
        return;
    }
    c->state = d;
    pgw_metrics_in_flight("grpc", 1);
    const char *unauthenticated = pgw_grpc_call_require_identity(c);
    if (unauthenticated) {
        reject(c, GRPC_STATUS_UNAUTHENTICATED, unauthenticated);
        pgw_grpc_call_unref(c);
        return;
    }
    if (!c->payload) {
        reject(c, GRPC_STATUS_INVALID_ARGUMENT, "the request carried no message");
        pgw_grpc_call_unref(c);
        return;
    }
    if (pgw_grpc_read_arn_request(c->payload, d->arn, sizeof(d->arn), &d->arn_len) != 0) {
        reject(c, GRPC_STATUS_INVALID_ARGUMENT,
               "the request is not a valid DescribeBatchInferenceJobRequest message");
        pgw_grpc_call_unref(c);
        return;
    }
    d->no_cache = pgw_grpc_call_wants_no_cache(c);
    d->deadline_ms = pgw_grpc_call_deadline_ms(c);

    /* Fast path: a fresh in-process hit is answered right here, in one batch. */
    pgw_lookup_params p = {
        .arn = d->arn,
        .arn_len = d->arn_len,
        .no_cache = d->no_cache,
        .identity = c->has_identity ? c->identity : NULL,
        .frontend = "grpc",
    };
    pgw_cached_answer cached = pgw_lookup_answer_cached(o->lookup, &p, on_cached_answer, c);
    if (cached == PGW_CACHED_ANSWERED) {
        pgw_grpc_call_unref(c);
        return;
    }
    /* The gateway's own bound on calls waiting on the loop: past it, refuse at once. */
    if (!pgw_call_limit_enter(o->call_limit)) {
        refuse_over_limit(c);
        pgw_grpc_call_unref(c);
        return;
    }
    d->holds_call_place = o->call_limit != NULL;
    /* The lookup goes to the loop and may take a while: watch for the caller going away. */
    if (pgw_grpc_call_watch_close(c) != 0) {
        account(c, PGW_CANCELLED);
        pgw_grpc_call_unref(c);
        return;
    }
    /* The new-call reference becomes the loop's. A lookup the in-process cache expects to
     * hit goes ahead of the lookups of cold ARNs, however many of those are waiting. */
    int posted = cached == PGW_CACHED_KNOWN ? pgw_loop_post_urgent(o->loop, loop_start_lookup, c)
                                            : pgw_loop_post(o->loop, loop_start_lookup, c);
    if (posted != 0) {
        reject(c, GRPC_STATUS_UNAVAILABLE, "the gateway is shutting down");
        pgw_grpc_call_unref(c);
    }
}

static void on_close(pgw_grpc_call *c)
{
    if (!c->cancelled)
        return;
    /* The caller went away (cancelled, deadline passed, connection lost): tell the loop,
     * which drops its interest in the lookup. */
    pgw_grpc_call_ref(c);
    if (pgw_loop_post(pgw_grpc_server_opts(c->server)->loop, loop_cancel, c) != 0)
        pgw_grpc_call_unref(c);
}

static void on_free(pgw_grpc_call *c)
{
    free(c->state);
}

const pgw_grpc_method pgw_grpc_describe_method = {
    .name = "DescribeBatchInferenceJob",
    .path = "/" PGW_GRPC_SERVICE "/DescribeBatchInferenceJob",
    .reads_payload = 1,
    .posted_per_thread = 16, /* see pgw_grpc_method: more only costs idle memory */
    .on_new = on_new,
    .on_close = on_close,
    .on_free = on_free,
};
