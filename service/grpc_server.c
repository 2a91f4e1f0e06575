#include "service/grpc_server.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/audit.h"
#include "service/clock.h"
#include "service/health.h"
#include "service/identity.h"
#include "service/log.h"
#include "service/metrics.h"
#include "service/metrics.h"
#include "service/request_decode.h"

#define SERVICE_NAME    "personalize_gateway.v1.PersonalizeGateway"
#define DESCRIBE_METHOD "/" SERVICE_NAME "/DescribeBatchInferenceJob"
#define HEALTH_CHECK    "/grpc.health.v1.Health/Check"
#define HEALTH_WATCH    "/grpc.health.v1.Health/Watch"
/* How often open Health/Watch streams look for a change of readiness. */
#define WATCH_POLL_MS 200
/* Requests kept posted per thread so a burst of calls finds one ready. */
#define POSTED_PER_THREAD 64
#define GENERIC_POSTED    4

typedef enum tag_kind {
    TAG_NEW_DESCRIBE, /* a DescribeBatchInferenceJob call arrived */
    TAG_NEW_GENERIC,  /* a call for a method we do not serve */
    TAG_NEW_CHECK,    /* grpc.health.v1.Health/Check */
    TAG_NEW_WATCH,    /* grpc.health.v1.Health/Watch (server streaming) */
    TAG_WATCH_SEND,   /* one Watch update (or its final status) was sent */
    TAG_CLOSE,        /* RECV_CLOSE_ON_SERVER done: the call ended or was cancelled */
    TAG_SEND,         /* the answer batch is done */
    TAG_SHUTDOWN,     /* grpc_server_shutdown_and_notify finished */
} tag_kind;

typedef struct rpc rpc;

typedef struct rpc_tag {
    tag_kind kind;
    rpc *rpc;
} rpc_tag;

/* One call. References: one per outstanding completion-queue tag plus one while the loop owns
 * the call (from the hand-over until the answer is sent or the cancel is seen); the last
 * release frees it. */
struct rpc {
    pgw_grpc_server *server;
    atomic_int refs;
    rpc_tag new_tag, close_tag, send_tag;

    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array request_md;
    grpc_byte_buffer *payload;
    grpc_call_details details; /* generic calls only */
    int recv_cancelled;        /* filled by RECV_CLOSE_ON_SERVER */
    int close_watched;         /* RECV_CLOSE_ON_SERVER runs in its own batch (see watch_close) */

    /* loop-thread state */
    pgw_lookup_req *lookup;
    int answered;
    char arn[300];
    size_t arn_len;
    int no_cache;
    int64_t deadline_ms;
    int64_t started_us;
    /* the caller, taken on the CQ thread from its certificate or the trusted header */
    char identity[PGW_IDENTITY_MAX_LEN + 1];
    int has_identity;

    /* what the answer batch references, released when the rpc is freed */
    grpc_byte_buffer *response;
    grpc_metadata out_md[2];
    size_t n_out_md;
    grpc_slice status_details;
    int has_status_details;

    /* Health/Watch streams only; guarded by the server's watch_mu */
    rpc_tag watch_send_tag;
    rpc *watch_next;
    int watch_service_known;
    int watch_last_status; /* -1 before the first update */
    int watch_sending;
    int watch_finished; /* the final status went out */
    grpc_byte_buffer *watch_message;
};

struct pgw_grpc_server {
    pgw_grpc_server_options options;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *describe_method, *check_method, *watch_method;
    pthread_mutex_t watch_mu;
    rpc *watchers;
    int port;
    pthread_t *threads;
    int n_threads;
    atomic_int in_flight;
    /* rpc structs alive, posted requests included: the server may only be freed once the
     * last one is (the loop may hold one a moment after gRPC considers its call done). */
    atomic_int live_rpcs;
    atomic_int shutting_down;
    rpc_tag shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int shutdown_done;
};

static void rpc_unref(rpc *r)
{
    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->call) {
        grpc_call_unref(r->call);
        atomic_fetch_sub(&r->server->in_flight, 1);
    }
    grpc_metadata_array_destroy(&r->request_md);
    grpc_call_details_destroy(&r->details);
    if (r->payload)
        grpc_byte_buffer_destroy(r->payload);
    if (r->response)
        grpc_byte_buffer_destroy(r->response);
    for (size_t i = 0; i < r->n_out_md; i++) {
        grpc_slice_unref(r->out_md[i].key);
        grpc_slice_unref(r->out_md[i].value);
    }
    if (r->has_status_details)
        grpc_slice_unref(r->status_details);
    if (r->watch_message)
        grpc_byte_buffer_destroy(r->watch_message);
    pgw_grpc_server *s = r->server;
    free(r);
    if (atomic_fetch_sub(&s->live_rpcs, 1) == 1) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->mu);
    }
}

static rpc *rpc_new(pgw_grpc_server *s)
{
    rpc *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->server = s;
    atomic_fetch_add(&s->live_rpcs, 1);
    atomic_init(&r->refs, 1); /* the "new call" tag */
    r->new_tag.rpc = r->close_tag.rpc = r->send_tag.rpc = r;
    r->close_tag.kind = TAG_CLOSE;
    r->send_tag.kind = TAG_SEND;
    r->watch_send_tag.kind = TAG_WATCH_SEND;
    r->watch_send_tag.rpc = r;
    r->watch_last_status = -1;
    grpc_metadata_array_init(&r->request_md);
    grpc_call_details_init(&r->details);
    return r;
}

/* Posts one request for a new call (of the served method, or any other method). */
static void post_request(pgw_grpc_server *s, tag_kind kind)
{
    if (atomic_load(&s->shutting_down))
        return;
    rpc *r = rpc_new(s);
    if (!r)
        return;
    r->new_tag.kind = kind;
    grpc_call_error e;
    void *method = kind == TAG_NEW_DESCRIBE ? s->describe_method
                   : kind == TAG_NEW_CHECK  ? s->check_method
                   : kind == TAG_NEW_WATCH  ? s->watch_method
                                            : NULL;
    if (method)
        e = grpc_server_request_registered_call(s->server, method, &r->call, &r->deadline,
                                                &r->request_md, &r->payload, s->cq, s->cq,
                                                &r->new_tag);
    else
        e = grpc_server_request_call(s->server, &r->call, &r->details, &r->request_md, s->cq, s->cq,
                                     &r->new_tag);
    if (e != GRPC_CALL_OK) {
        r->call = NULL;
        rpc_unref(r);
    }
}

/* Sends the final batch: initial metadata, the message (success only) and the status. Any
 * thread. Consumes nothing; the rpc keeps what the batch references until it is freed. */
static void send_answer(rpc *r, grpc_status_code code, const char *message)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = r->n_out_md;
    ops[n].data.send_initial_metadata.metadata = r->n_out_md ? r->out_md : NULL;
    n++;
    if (code == GRPC_STATUS_OK && r->response) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = r->response;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    if (message && code != GRPC_STATUS_OK) {
        r->status_details = grpc_slice_from_copied_string(message);
        r->has_status_details = 1;
        ops[n].data.send_status_from_server.status_details = &r->status_details;
    }
    n++;
    if (!r->close_watched) {
        /* Answered at once: the end of the call rides in the same batch. */
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n].data.recv_close_on_server.cancelled = &r->recv_cancelled;
        n++;
    }
    atomic_fetch_add(&r->refs, 1);
    if (grpc_call_start_batch(r->call, ops, n, &r->send_tag, NULL) != GRPC_CALL_OK)
        rpc_unref(r); /* no tag will come */
}

/* Starts RECV_CLOSE_ON_SERVER on its own, so a cancellation is seen while the lookup runs. */
static int watch_close(rpc *r)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &r->recv_cancelled;
    r->close_watched = 1;
    atomic_fetch_add(&r->refs, 1);
    if (grpc_call_start_batch(r->call, &op, 1, &r->close_tag, NULL) != GRPC_CALL_OK) {
        rpc_unref(r);
        return -1;
    }
    return 0;
}

static void add_metadata(rpc *r, const char *key, const char *value)
{
    if (r->n_out_md >= sizeof(r->out_md) / sizeof(r->out_md[0]))
        return;
    r->out_md[r->n_out_md].key = grpc_slice_from_static_string(key);
    r->out_md[r->n_out_md].value = grpc_slice_from_copied_string(value);
    r->n_out_md++;
}

/* --- loop thread --- */

static void log_call(const rpc *r, pgw_code code, pgw_cache_source source)
{
    if (!pgw_log_enabled(PGW_LOG_DEBUG))
        return;
    pgw_log(PGW_LOG_DEBUG, "call",
            json_pack("{s:s, s:s, s:s#, s:s?, s:s, s:I}", "frontend", "grpc", "method",
                      "DescribeBatchInferenceJob", "arn", r->arn, (int)r->arn_len, "identity",
                      r->has_identity ? r->identity : NULL, "code", pgw_code_name(code),
                      "latency_us", (json_int_t)(pgw_now_mono_us() - r->started_us)));
    (void)source;
}

/* Counts a describe call once, when it is answered or abandoned. */
static void account(rpc *r, pgw_code code)
{
    pgw_metrics_request("grpc", code, (double)(pgw_now_mono_us() - r->started_us) / 1e6);
    pgw_metrics_in_flight("grpc", -1);
}

/* Answers a describe call that never reached lookup. */
static void reject(rpc *r, grpc_status_code code, const char *message)
{
    account(r, (pgw_code)code);
    send_answer(r, code, message);
}

/* Sends a lookup's answer: the job with x-cache and age metadata, or the error status. */
static void answer_call(rpc *r, const pgw_lookup_result *res)
{
    log_call(r, res->code, res->source);
    account(r, res->code);
    if (res->code == PGW_OK) {
        /* DescribeBatchInferenceJobResponse is field 1 (length-delimited) around the packed
         * job, so the cached bytes go out as they are, with no unpack and re-pack. */
        uint8_t prefix[11];
        size_t np = 0;
        prefix[np++] = 0x0a;
        size_t len = res->job_pb_len;
        do {
            prefix[np++] = (uint8_t)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
            len >>= 7;
        } while (len);
        grpc_slice slice = grpc_slice_malloc(np + res->job_pb_len);
        memcpy(GRPC_SLICE_START_PTR(slice), prefix, np);
        memcpy(GRPC_SLICE_START_PTR(slice) + np, res->job_pb, res->job_pb_len);
        r->response = grpc_raw_byte_buffer_create(&slice, 1);
        grpc_slice_unref(slice);

        const char *cache = pgw_cache_source_name(res->source);
        char age[24];
        snprintf(age, sizeof(age), "%lld", (long long)res->age_s);
        add_metadata(r, "x-cache", cache);
        add_metadata(r, "age", age);
    }
    send_answer(r, (grpc_status_code)res->code, res->message);
}

/* pgw_lookup_answer_cached's callback: runs on this completion-queue thread. */
static void on_cached_answer(const pgw_lookup_result *res, void *user_data)
{
    answer_call(user_data, res);
}

static void on_lookup_done(const pgw_lookup_result *res, void *user_data)
{
    rpc *r = user_data;
    r->lookup = NULL;
    r->answered = 1;
    answer_call(r, res);
    rpc_unref(r); /* the loop's reference */
}

static void loop_start_lookup(void *arg)
{
    rpc *r = arg;
    if (r->answered) { /* cancelled before the loop got to it */
        rpc_unref(r);
        return;
    }
    pgw_lookup_params p = {
        .arn = r->arn,
        .arn_len = r->arn_len,
        .deadline_ms = r->deadline_ms,
        .no_cache = r->no_cache,
        .identity = r->has_identity ? r->identity : NULL,
        .frontend = "grpc",
    };
    /* The callback may run (and drop the loop's reference) inside pgw_lookup_start: hold one
     * more so r outlives the call. */
    atomic_fetch_add(&r->refs, 1);
    pgw_lookup_req *req = pgw_lookup_start(r->server->options.lookup, &p, on_lookup_done, r);
    if (!r->answered)
        r->lookup = req;
    rpc_unref(r);
}

static void loop_cancel(void *arg)
{
    rpc *r = arg;
    if (!r->answered) {
        r->answered = 1;
        account(r, PGW_CANCELLED);
        if (r->lookup) {
            pgw_lookup_cancel(r->lookup);
            r->lookup = NULL;
        }
        rpc_unref(r); /* the loop's reference: no answer will be sent */
    }
    rpc_unref(r); /* this task's reference */
}

/* --- completion-queue threads --- */

static int64_t deadline_to_mono_ms(gpr_timespec deadline)
{
    gpr_timespec d = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return 0;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_MONOTONIC));
    int64_t ms = (int64_t)left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return pgw_now_mono_ms() + (ms > 0 ? ms : 0);
}

static int wants_no_cache(const grpc_metadata_array *md)
{
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, "cache-control") != 0)
            continue;
        const grpc_slice v = md->metadata[i].value;
        size_t len = GRPC_SLICE_LENGTH(v);
        const char *p = (const char *)GRPC_SLICE_START_PTR(v);
        for (size_t j = 0; j + 8 <= len; j++)
            if (strncasecmp(p + j, "no-cache", 8) == 0)
                return 1;
    }
    return 0;
}

/* Reads the whole (possibly compressed, possibly multi-slice) request and takes the ARN from
 * it with its length (request_decode.h: an embedded NUL must reach the ARN check). An ARN
 * longer than r->arn keeps a prefix, which lookup's ARN check rejects by length. Returns 0 or
 * -1 (not a valid message). */
static int read_request(grpc_byte_buffer *bb, rpc *r)
{
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb))
        return -1;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    int rc = pgw_request_decode_arn(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), r->arn,
                                    sizeof(r->arn), &r->arn_len, NULL, 0);
    grpc_slice_unref(all);
    return rc;
}

/* Finds the caller's identity: the verified client certificate under mutual TLS, else the
 * trusted header if one is configured. */
static void take_identity(rpc *r)
{
    const pgw_grpc_server_options *o = &r->server->options;
    int rc = -1;
    if (o->tls_client_ca_file)
        rc = pgw_identity_from_call(r->call, r->identity, sizeof(r->identity));
    else if (o->identity_header)
        rc = pgw_identity_from_metadata(&r->request_md, o->identity_header, r->identity,
                                        sizeof(r->identity));
    r->has_identity = rc == 0;
}

/* Answers UNAUTHENTICATED (before the request is even decoded: a caller without an identity
 * learns nothing) and writes its audit line. */
static void refuse_unauthenticated(rpc *r)
{
    pgw_metrics_auth_decision("unauthenticated");
    if (r->server->options.audit) {
        pgw_audit_record rec = {
            .frontend = "grpc",
            .decision = PGW_AUDIT_UNAUTHENTICATED,
            .code = PGW_UNAUTHENTICATED,
            .latency_us = pgw_now_mono_us() - r->started_us,
        };
        pgw_audit_log(r->server->options.audit, &rec);
    }
    reject(r, GRPC_STATUS_UNAUTHENTICATED,
           r->server->options.tls_client_ca_file
               ? "this gateway requires a client certificate signed by its client CA"
               : "this gateway requires a caller identity");
}

static void on_new_describe(rpc *r)
{
    pgw_grpc_server *s = r->server;
    atomic_fetch_add(&s->in_flight, 1);
    r->started_us = pgw_now_mono_us();
    pgw_metrics_in_flight("grpc", 1);
    take_identity(r);
    if (!r->has_identity && s->options.require_identity) {
        refuse_unauthenticated(r);
        rpc_unref(r);
        return;
    }
    if (!r->payload) {
        reject(r, GRPC_STATUS_INVALID_ARGUMENT, "the request carried no message");
        rpc_unref(r);
        return;
    }
    if (read_request(r->payload, r) != 0) {
        reject(r, GRPC_STATUS_INVALID_ARGUMENT,
               "the request is not a valid DescribeBatchInferenceJobRequest message");
        rpc_unref(r);
        return;
    }
    r->no_cache = wants_no_cache(&r->request_md);
    r->deadline_ms = deadline_to_mono_ms(r->deadline);

    /* Fast path: a fresh in-process hit is answered right here, in one batch. */
    pgw_lookup_params p = {
        .arn = r->arn,
        .arn_len = r->arn_len,
        .no_cache = r->no_cache,
        .identity = r->has_identity ? r->identity : NULL,
        .frontend = "grpc",
    };
    if (pgw_lookup_answer_cached(s->options.lookup, &p, on_cached_answer, r)) {
        rpc_unref(r);
        return;
    }
    /* The lookup goes to the loop and may take a while: watch for the caller going away. */
    if (watch_close(r) != 0) {
        account(r, PGW_CANCELLED);
        rpc_unref(r);
        return;
    }
    /* The new-call reference becomes the loop's. */
    if (pgw_loop_post(s->options.loop, loop_start_lookup, r) != 0) {
        reject(r, GRPC_STATUS_UNAVAILABLE, "the gateway is shutting down");
        rpc_unref(r);
    }
}

static void on_new_generic(rpc *r)
{
    atomic_fetch_add(&r->server->in_flight, 1);
    send_answer(r, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
    rpc_unref(r);
}

/* --- grpc.health.v1.Health --- */

/* The health request's service name is "" (the whole server) or our service: else unknown. */
static int health_service_known(grpc_byte_buffer *payload)
{
    if (!payload)
        return 1;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, payload))
        return 0;
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(
        NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (!req)
        return 0;
    int known = req->service[0] == '\0' || strcmp(req->service, SERVICE_NAME) == 0;
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    return known;
}

static int current_serving_status(void)
{
    return pgw_health_ready(NULL)
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static grpc_byte_buffer *health_message(int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    grpc_slice slice =
        grpc_slice_malloc(grpc__health__v1__health_check_response__get_packed_size(&resp));
    grpc__health__v1__health_check_response__pack(&resp, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

static void on_new_check(rpc *r)
{
    atomic_fetch_add(&r->server->in_flight, 1);
    if (watch_close(r) == 0) {
        if (health_service_known(r->payload)) {
            r->response = health_message(current_serving_status());
            send_answer(r, GRPC_STATUS_OK, NULL);
        } else {
            send_answer(r, GRPC_STATUS_NOT_FOUND, "unknown service");
        }
    }
    rpc_unref(r);
}

/* Sends each Watch stream its next update: the current status when it changed, or after
 * shutdown began, the final OK status. Any thread; takes watch_mu. */
static void poll_watchers(pgw_grpc_server *s)
{
    int status = current_serving_status();
    int finishing = atomic_load(&s->shutting_down);
    pthread_mutex_lock(&s->watch_mu);
    for (rpc *w = s->watchers; w; w = w->watch_next) {
        if (w->watch_sending || w->watch_finished)
            continue;
        int want = w->watch_service_known
                       ? status
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        grpc_op ops[2];
        memset(ops, 0, sizeof(ops));
        size_t n = 0;
        if (want != w->watch_last_status) {
            if (w->watch_last_status == -1) {
                ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
                n++;
            }
            if (w->watch_message)
                grpc_byte_buffer_destroy(w->watch_message);
            w->watch_message = health_message(want);
            ops[n].op = GRPC_OP_SEND_MESSAGE;
            ops[n].data.send_message.send_message = w->watch_message;
            n++;
            w->watch_last_status = want;
        } else if (finishing) {
            ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
            ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
            n++;
            w->watch_finished = 1;
        } else {
            continue;
        }
        w->watch_sending = 1;
        atomic_fetch_add(&w->refs, 1);
        if (grpc_call_start_batch(w->call, ops, n, &w->watch_send_tag, NULL) != GRPC_CALL_OK) {
            w->watch_sending = 0;
            w->watch_finished = 1;
            atomic_fetch_sub(&w->refs, 1); /* still held by the list: cannot reach zero */
        }
    }
    pthread_mutex_unlock(&s->watch_mu);
}

static void on_new_watch(rpc *r)
{
    pgw_grpc_server *s = r->server;
    atomic_fetch_add(&s->in_flight, 1);
    r->watch_service_known = health_service_known(r->payload);
    if (watch_close(r) != 0) {
        rpc_unref(r);
        return;
    }
    /* The new-call reference now belongs to the watcher list, until the stream closes. */
    pthread_mutex_lock(&s->watch_mu);
    r->watch_next = s->watchers;
    s->watchers = r;
    pthread_mutex_unlock(&s->watch_mu);
    poll_watchers(s);
}

static void on_watch_sent(rpc *r)
{
    pthread_mutex_lock(&r->server->watch_mu);
    r->watch_sending = 0;
    pthread_mutex_unlock(&r->server->watch_mu);
    poll_watchers(r->server);
    rpc_unref(r);
}

/* A Watch stream ended (client went away, or after our final status): leave the list. */
static void drop_watcher(rpc *r)
{
    pgw_grpc_server *s = r->server;
    pthread_mutex_lock(&s->watch_mu);
    for (rpc **p = &s->watchers; *p; p = &(*p)->watch_next) {
        if (*p == r) {
            *p = r->watch_next;
            pthread_mutex_unlock(&s->watch_mu);
            rpc_unref(r); /* the list's reference */
            return;
        }
    }
    pthread_mutex_unlock(&s->watch_mu);
}

static void on_close(rpc *r)
{
    if (r->new_tag.kind == TAG_NEW_WATCH)
        drop_watcher(r);
    if (r->recv_cancelled && r->new_tag.kind == TAG_NEW_DESCRIBE) {
        /* The caller went away (cancelled, deadline passed, connection lost): tell the loop,
         * which drops its interest in the lookup. */
        atomic_fetch_add(&r->refs, 1);
        if (pgw_loop_post(r->server->options.loop, loop_cancel, r) != 0)
            rpc_unref(r);
    }
    rpc_unref(r);
}

static void *cq_thread(void *arg)
{
    pgw_grpc_server *s = arg;
    for (;;) {
        gpr_timespec wake = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                         gpr_time_from_millis(WATCH_POLL_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s->cq, wake, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            poll_watchers(s);
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        rpc_tag *tag = ev.tag;
        switch (tag->kind) {
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&s->mu);
            s->shutdown_done = 1;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->mu);
            break;
        case TAG_NEW_DESCRIBE:
        case TAG_NEW_GENERIC:
        case TAG_NEW_CHECK:
        case TAG_NEW_WATCH:
            if (!ev.success) { /* the server is shutting down */
                if (tag->rpc->call) {
                    grpc_call_unref(tag->rpc->call);
                    tag->rpc->call = NULL;
                }
                rpc_unref(tag->rpc);
                break;
            }
            post_request(s, tag->kind); /* keep one posted in its place */
            if (tag->kind == TAG_NEW_DESCRIBE)
                on_new_describe(tag->rpc);
            else if (tag->kind == TAG_NEW_CHECK)
                on_new_check(tag->rpc);
            else if (tag->kind == TAG_NEW_WATCH)
                on_new_watch(tag->rpc);
            else
                on_new_generic(tag->rpc);
            break;
        case TAG_WATCH_SEND:
            on_watch_sent(tag->rpc);
            break;
        case TAG_CLOSE:
            on_close(tag->rpc);
            break;
        case TAG_SEND:
            rpc_unref(tag->rpc);
            break;
        }
    }
    return NULL;
}

/* --- TLS ---------------------------------------------------------------------------------- */

#define MAX_PEM_BYTES (1 << 20)

/* Reads a PEM file into a NUL-terminated malloc'ed string. NULL with err naming the flag. */
static char *read_pem(const char *path, const char *flag, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: cannot open %.200s", flag, path);
        return NULL;
    }
    char *buf = malloc(MAX_PEM_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f) || n == 0 || n > MAX_PEM_BYTES;
    fclose(f);
    if (bad) {
        snprintf(err, err_len, "%s: cannot read %.200s (empty, unreadable or over 1 MiB)", flag,
                 path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Checks the PEM texts with OpenSSL, so a bad file gets an error naming its flag instead of
 * gRPC failing to listen: the certificate parses, the key parses and belongs to it, and the
 * client CA holds at least one certificate. */
static int check_pems(const char *cert, const char *key, const char *ca, char *err, size_t err_len)
{
    int ok = 0;
    BIO *b = BIO_new_mem_buf(cert, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(key, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!x)
        snprintf(err, err_len, "--tls-cert: no PEM certificate in the file");
    else if (!k)
        snprintf(err, err_len, "--tls-key: no unencrypted PEM private key in the file");
    else if (X509_check_private_key(x, k) != 1)
        snprintf(err, err_len, "--tls-key: does not match the --tls-cert certificate");
    else
        ok = 1;
    X509_free(x);
    EVP_PKEY_free(k);
    if (ok && ca) {
        b = BIO_new_mem_buf(ca, -1);
        X509 *c = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        if (!c) {
            snprintf(err, err_len, "--tls-client-ca: no PEM certificate in the file");
            ok = 0;
        }
        X509_free(c);
    }
    return ok ? 0 : -1;
}

/* The listening port's credentials: plain text, TLS, or mutual TLS. Under mutual TLS client
 * certificates are requested and, when presented, must verify against the client CA (else the
 * handshake fails); a client that presents none is let through the handshake and refused per
 * call with UNAUTHENTICATED, a status its developer can act on, instead of an opaque
 * handshake error. NULL with err set on failure. */
static grpc_server_credentials *make_credentials(const pgw_grpc_server_options *o, char *err,
                                                 size_t err_len)
{
    if (!o->tls_cert_file)
        return grpc_insecure_server_credentials_create();
    grpc_server_credentials *creds = NULL;
    char *key = NULL, *ca = NULL;
    char *cert = read_pem(o->tls_cert_file, "--tls-cert", err, err_len);
    if (cert)
        key = read_pem(o->tls_key_file, "--tls-key", err, err_len);
    if (key && o->tls_client_ca_file)
        ca = read_pem(o->tls_client_ca_file, "--tls-client-ca", err, err_len);
    if (key && (ca || !o->tls_client_ca_file) && check_pems(cert, key, ca, err, err_len) == 0) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
        creds = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1,
            ca ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
               : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        if (!creds)
            snprintf(err, err_len, "--tls-cert: gRPC refused the TLS certificate or key");
    }
    if (key) {
        explicit_bzero(key, strlen(key)); /* gRPC keeps its own copy */
        free(key);
    }
    free(cert);
    free(ca);
    return creds;
}

pgw_grpc_server *pgw_grpc_server_new(const pgw_grpc_server_options *options, char *err,
                                     size_t err_len)
{
    pgw_grpc_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->options = *options;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->shutdown_tag.kind = TAG_SHUTDOWN;

    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER,
         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = options->max_recv_bytes},
        /* A second gateway on a busy port must fail, not silently share it. */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
    };
    grpc_channel_args channel_args = {2, args};
    s->server = grpc_server_create(&channel_args, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    s->describe_method = grpc_server_register_method(s->server, DESCRIBE_METHOD, NULL,
                                                     GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    s->check_method = grpc_server_register_method(s->server, HEALTH_CHECK, NULL,
                                                  GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    s->watch_method = grpc_server_register_method(s->server, HEALTH_WATCH, NULL,
                                                  GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = make_credentials(options, err, err_len);
    if (!creds) {
        pgw_grpc_server_free(s);
        return NULL;
    }
    s->port = grpc_server_add_http2_port(s->server, options->addr, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        snprintf(err, err_len, "--grpc-addr: cannot listen on %s", options->addr);
        pgw_grpc_server_free(s);
        return NULL;
    }
    return s;
}

int pgw_grpc_server_port(const pgw_grpc_server *s)
{
    return s->port;
}

int pgw_grpc_server_start(pgw_grpc_server *s)
{
    grpc_server_start(s->server);
    s->threads = calloc((size_t)s->options.threads, sizeof(pthread_t));
    if (!s->threads)
        return -1;
    for (int t = 0; t < s->options.threads; t++) {
        for (int i = 0; i < POSTED_PER_THREAD; i++)
            post_request(s, TAG_NEW_DESCRIBE);
        for (int i = 0; i < GENERIC_POSTED; i++) {
            post_request(s, TAG_NEW_GENERIC);
            post_request(s, TAG_NEW_CHECK);
            post_request(s, TAG_NEW_WATCH);
        }
    }
    for (int t = 0; t < s->options.threads; t++) {
        if (pthread_create(&s->threads[t], NULL, cq_thread, s) != 0)
            return -1;
        s->n_threads++;
    }
    return 0;
}

static int shutdown_notified(pgw_grpc_server *s)
{
    return s->shutdown_done;
}

static int no_live_rpcs(pgw_grpc_server *s)
{
    return atomic_load(&s->live_rpcs) == 0;
}

/* Waits on the server's condition variable until done(s) holds or timeout_ms passes (-1:
 * forever). Returns whether it holds. */
static int wait_until(pgw_grpc_server *s, int (*done)(pgw_grpc_server *), int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->mu);
    while (!done(s)) {
        if (timeout_ms < 0)
            pthread_cond_wait(&s->cond, &s->mu);
        else if (pthread_cond_timedwait(&s->cond, &s->mu, &until) != 0)
            break;
    }
    int ok = done(s);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void pgw_grpc_server_shutdown(pgw_grpc_server *s, int grace_ms)
{
    atomic_store(&s->shutting_down, 1);
    grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
    poll_watchers(s); /* Watch streams get NOT_SERVING, then their final status */
    if (s->n_threads == 0) {
        grpc_server_cancel_all_calls(s->server);
    } else if (!wait_until(s, shutdown_notified, grace_ms)) {
        pgw_log(PGW_LOG_WARN, "grace period over: cancelling the calls still in flight",
                json_pack("{s:i}", "in_flight", atomic_load(&s->in_flight)));
        grpc_server_cancel_all_calls(s->server);
    }
    if (s->n_threads) {
        wait_until(s, shutdown_notified, -1);
        /* The loop may still hold a call gRPC is done with (it answered, but has not dropped
         * its reference yet), and the completion-queue threads still fail the requests we had
         * posted: wait for the last of them. */
        if (!wait_until(s, no_live_rpcs, 10000))
            pgw_log(PGW_LOG_ERROR, "calls still referenced 10 s after shutdown",
                    json_pack("{s:i}", "rpcs", atomic_load(&s->live_rpcs)));
    }
}

void pgw_grpc_server_free(pgw_grpc_server *s)
{
    if (!s)
        return;
    if (s->server)
        grpc_server_destroy(s->server);
    if (s->cq) {
        grpc_completion_queue_shutdown(s->cq);
        if (s->n_threads) {
            for (int t = 0; t < s->n_threads; t++)
                pthread_join(s->threads[t], NULL);
        } else {
            while (
                grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                GRPC_QUEUE_SHUTDOWN)
                ;
        }
        grpc_completion_queue_destroy(s->cq);
    }
    free(s->threads);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->watch_mu);
    free(s);
}

int pgw_grpc_server_in_flight(const pgw_grpc_server *s)
{
    return atomic_load(&s->in_flight);
}
