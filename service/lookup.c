/* lookup: authorize -> L1 -> Redis -> coalesce -> upstream, and back through the caches.
 *
 * Cache values are pgw_cache_entry encodings (cache/entry.h): the packed job (or a NOT_FOUND
 * answer) with the wall-clock times it was fetched, stays fresh until, and may answer as stale
 * until. The same bytes go to Redis and, behind an 8-byte "serve from L1 until" prefix, to L1.
 *
 * Everything runs on the loop thread. A request (pgw_lookup_req) belongs to its caller until
 * its callback runs or it is cancelled; a fetch (one upstream call, shared through
 * singleflight) belongs to the lookup and, once started, always completes, even when every
 * caller has left, because its answer refreshes the cache. Before it starts it waits for an
 * upstream slot (service/admission.h, when bounded): refused there it fails its callers with
 * UNAVAILABLE, and one whose callers all left while it waited is dropped at its turn. */
#include "service/lookup.h"

#include <event2/event.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cache/entry.h"
#include "cache/fleet.h"
#include "cache/l1.h"
#include "cache/redis_tier.h"
#include "cache/singleflight.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/audit.h"
#include "service/admission.h"
#include "service/aws/arn.h"
#include "service/aws/personalize.h"
#include "service/clock.h"
#include "service/identity.h"
#include "service/lookup_internal.h"
#include "service/metrics.h"
#include "service/policy.h"
#include "service/rate_limit.h"

#define L1_PREFIX_LEN 8

struct pgw_lookup {
    struct event_base *base;
    pgw_personalize *personalize;
    pgw_l1 *l1;
    pgw_redis_tier *redis;
    pgw_fleet *fleet;
    pgw_admission *admission;
    pgw_ttl_config ttl;
    pgw_policy *policy;
    pgw_rate_limit *rate_limit;
    pgw_audit *audit;
    uint64_t redis_get_timeouts_seen; /* the tier's count when its last GET error came */
    /* L1 is read by the gRPC threads too (pgw_lookup_answer_cached): every pgw_l1_* call
     * holds this. */
    pthread_mutex_t l1_mu;
    pgw_singleflight *flights;
    pgw_lookup_req *pending; /* every request not yet answered, for pgw_lookup_free */
    struct fetch *fetches;   /* every fetch in flight, for pgw_lookup_free */
    /* The request pgw_lookup_start is working on, and whether it was answered before
     * returning (then the handle must not be returned: it is gone). */
    pgw_lookup_req *starting;
    int starting_answered;
};

struct pgw_lookup_req {
    pgw_lookup *lookup;
    pgw_lookup_req *prev, *next;
    pgw_lookup_cb cb;
    void *user_data;
    char arn[PGW_ARN_MAX_LEN + 1];
    pgw_arn parsed;
    int64_t deadline_ms;
    int no_cache;
    int peek_only;             /* a watch's look at the cache tiers: never upstream */
    int internal;              /* a watch poll: no audit line (the watch was audited) */
    int waiting_redis;         /* a Redis GET is out: its callback still comes */
    pgw_flight_waiter *waiter; /* while joined to a fetch */
    /* Set once armed: first at stale_at_ms, then at deadline_ms; lives in the same allocation
     * as the request (see req_new). */
    struct event *deadline_timer;
    int64_t stale_at_ms; /* when a stale copy answers a caller still waiting */
    uint8_t *stale;      /* an encoded entry past its freshness, for stale-on-error */
    size_t stale_len;
    /* for the audit line */
    char identity[PGW_IDENTITY_MAX_LEN + 1]; /* "" = anonymous */
    const char *frontend;                    /* static string */
    int64_t started_us;
    pgw_audit_decision decision;
};

/* How long before a caller's deadline a stale copy answers, if the fetch has not: a tenth of
 * the time the call had, within these bounds. */
#define STALE_MARGIN_MIN_MS 5
#define STALE_MARGIN_MAX_MS 50

/* One upstream call shared by every request for the same ARN. */
typedef struct fetch {
    pgw_lookup *lookup;
    struct fetch *prev, *next;
    pgw_flight *flight;
    pgw_personalize_call *call;
    pgw_rate_limit_wait *token_wait; /* waiting for an upstream token (then call is NULL) */
    pgw_fleet_wait *fleet_wait;      /* waiting for another replica's fetch (ditto) */
    pgw_admission_ticket *ticket;    /* waiting for an upstream slot (ditto) */
    int holds_slot;                  /* an upstream slot, given back in fetch_free */
    int64_t slot_since_ms;
    struct event *fleet_deadline; /* bounds that wait by the fetch's deadline */
    int holds_lease;              /* we fetch for the fleet: publish the outcome */
    pgw_arn parsed;
    int64_t deadline_ms;
    char arn[PGW_ARN_MAX_LEN + 1];
} fetch;

/* What a completed fetch hands every waiter (the flight result's ctx). */
typedef struct fetch_outcome {
    const char *aws_error_code;
    const char *request_id;
    int64_t fetched_at_ms;
    int upstream_limited;    /* no upstream token or slot in time */
    const char *rejected;    /* a bound refused the fetch: the pgw_rejected_total reason */
    pgw_cache_source source; /* OK answers: UPSTREAM, or REDIS when another replica fetched */
    int64_t age_s;
} fetch_outcome;

const char *pgw_cache_source_name(pgw_cache_source source)
{
    switch (source) {
    case PGW_SOURCE_UPSTREAM:
        return "miss";
    case PGW_SOURCE_L1:
    case PGW_SOURCE_REDIS:
        return "hit";
    case PGW_SOURCE_STALE:
        return "stale";
    case PGW_SOURCE_NONE:
        break;
    }
    return NULL;
}

static uint32_t random_u32(void)
{
    uint32_t r;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
        r = (uint32_t)pgw_now_mono_ms();
    return r;
}

pgw_lookup *pgw_lookup_new(const pgw_lookup_options *options)
{
    pgw_lookup *lk = calloc(1, sizeof(*lk));
    if (!lk)
        return NULL;
    lk->base = options->base;
    lk->personalize = options->personalize;
    lk->l1 = options->l1;
    lk->redis = options->redis;
    lk->fleet = options->redis ? options->fleet : NULL;
    lk->admission = options->admission;
    lk->ttl = options->ttl;
    lk->policy = options->policy;
    lk->rate_limit = options->rate_limit;
    lk->audit = options->audit;
    pthread_mutex_init(&lk->l1_mu, NULL);
    lk->flights = pgw_singleflight_new();
    if (!lk->flights) {
        free(lk);
        return NULL;
    }
    return lk;
}

static void req_free(pgw_lookup_req *req);

void pgw_lookup_free(pgw_lookup *lk)
{
    if (!lk)
        return;
    while (lk->pending) {
        lk->pending->waiter = NULL; /* the flights go with the singleflight below */
        lk->pending->waiting_redis = 0;
        req_free(lk->pending);
    }
    while (lk->fetches) {
        fetch *f = lk->fetches;
        lk->fetches = f->next;
        if (f->token_wait)
            pgw_rate_limit_upstream_cancel(lk->rate_limit, f->token_wait);
        if (f->ticket)
            pgw_admission_cancel(f->ticket);
        if (f->call)
            pgw_personalize_cancel(f->call);
        pgw_fleet_cancel(f->fleet_wait);
        if (f->fleet_deadline)
            event_free(f->fleet_deadline);
        free(f);
    }
    pgw_singleflight_free(lk->flights);
    pthread_mutex_destroy(&lk->l1_mu);
    free(lk);
}

/* --- requests --- */

static void req_free(pgw_lookup_req *req)
{
    pgw_lookup *lk = req->lookup;
    if (req->waiter)
        pgw_singleflight_leave(req->waiter);
    if (req->deadline_timer)
        event_del(req->deadline_timer);
    free(req->stale);
    if (req->prev)
        req->prev->next = req->next;
    else
        lk->pending = req->next;
    if (req->next)
        req->next->prev = req->prev;
    free(req);
}

/* One audit line per answered call. */
static void audit_call(pgw_lookup *lk, const char *frontend, const char *identity, const char *arn,
                       size_t arn_len, pgw_audit_decision decision, const pgw_lookup_result *r,
                       int64_t started_us)
{
    if (!lk->audit)
        return;
    pgw_audit_record rec = {
        .frontend = frontend,
        .identity = identity,
        .arn = arn,
        .arn_len = arn_len,
        .decision = decision,
        .source = r->source,
        .aws_request_id = r->aws_request_id,
        .code = r->code,
        .latency_us = pgw_now_mono_us() - started_us,
    };
    pgw_audit_log(lk->audit, &rec);
}

/* Answers a request and frees it — unless a Redis GET is still out, whose callback then frees
 * it (req->cb cleared marks it answered). */
static void req_finish(pgw_lookup_req *req, const pgw_lookup_result *r)
{
    if (req->cb && !req->internal)
        audit_call(req->lookup, req->frontend, req->identity, req->arn, strlen(req->arn),
                   req->decision, r, req->started_us);
    pgw_lookup_cb cb = req->cb;
    void *user_data = req->user_data;
    req->cb = NULL;
    if (req->lookup->starting == req)
        req->lookup->starting_answered = 1;
    if (req->waiting_redis) {
        if (req->deadline_timer)
            event_del(req->deadline_timer);
    } else {
        req_free(req);
    }
    if (cb)
        cb(r, user_data);
}

static void finish_error(pgw_lookup_req *req, pgw_code code, const char *message)
{
    pgw_lookup_result r = {.code = code, .message = message};
    req_finish(req, &r);
}

/* Answers from an encoded cache entry. Returns 0, or -1 if the bytes do not decode. */
/* Room for a cached NOT_FOUND answer's message. */
#define ENTRY_MESSAGE_LEN 1400

/* Fills *r from a decoded entry; r's pointers borrow from e and message. */
static void result_from_entry(const pgw_cache_entry *e, pgw_cache_source source,
                              pgw_lookup_result *r, char message[ENTRY_MESSAGE_LEN])
{
    int64_t now = pgw_now_wall_ms();
    memset(r, 0, sizeof(*r));
    r->source = source;
    r->age_s = now > e->fetched_at_ms ? (now - e->fetched_at_ms) / 1000 : 0;
    if (e->kind == PGW_CACHE_ENTRY_POSITIVE) {
        r->code = PGW_OK;
        r->message = "OK";
        r->job_pb = e->job_pb;
        r->job_pb_len = e->job_pb_len;
    } else {
        r->code = PGW_NOT_FOUND;
        /* The stored message is the one the fetching caller got, which already names the AWS
         * code and request id: wrapping it again doubled both. */
        if (e->message[0])
            snprintf(message, ENTRY_MESSAGE_LEN, "%s (cached)", e->message);
        else
            snprintf(message, ENTRY_MESSAGE_LEN, "AWS Personalize: %s (request id %s, cached)",
                     e->error_code[0] ? e->error_code : "ResourceNotFoundException",
                     e->request_id[0] ? e->request_id : "none");
        r->message = message;
        r->aws_error_code = e->error_code;
        r->aws_request_id = e->request_id[0] ? e->request_id : NULL;
    }
}

/* Answers from a decoded entry (its bytes must stay valid through the call). */
static void answer_entry(pgw_lookup_req *req, const pgw_cache_entry *e, pgw_cache_source source)
{
    pgw_lookup_result r;
    char message[ENTRY_MESSAGE_LEN];
    result_from_entry(e, source, &r, message);
    req_finish(req, &r);
}

static int answer_from_entry(pgw_lookup_req *req, const uint8_t *bytes, size_t len,
                             pgw_cache_source source)
{
    pgw_cache_entry e;
    if (pgw_cache_entry_decode(bytes, len, &e) != 0)
        return -1;
    answer_entry(req, &e, source);
    return 0;
}

/* Answers from the copy kept for stale-on-error (req->stale) and frees it. Returns 0 when the
 * bytes do not decode. */
static int answer_kept_copy(pgw_lookup_req *req, pgw_cache_source source)
{
    uint8_t *bytes = req->stale;
    size_t len = req->stale_len;
    req->stale = NULL; /* answer_from_entry frees req; keep the bytes alive through it */
    int rc = answer_from_entry(req, bytes, len, source);
    free(bytes);
    return rc == 0;
}

/* Answers from the kept copy when it is in fact still fresh by its TTL. Returns 1 if
 * answered. */
static int answer_fresh_copy(pgw_lookup_req *req)
{
    pgw_cache_entry e;
    if (!req->stale || pgw_cache_entry_decode(req->stale, req->stale_len, &e) != 0 ||
        !pgw_cache_entry_is_fresh(&e, pgw_now_wall_ms()))
        return 0;
    return answer_kept_copy(req, PGW_SOURCE_L1);
}

/* Serves the stale copy a failed fetch left us with, if any. Returns 1 if answered. */
static int answer_stale(pgw_lookup_req *req)
{
    pgw_cache_entry e;
    if (!req->stale || pgw_cache_entry_decode(req->stale, req->stale_len, &e) != 0 ||
        e.kind != PGW_CACHE_ENTRY_POSITIVE ||
        !pgw_cache_entry_is_stale_usable(&e, pgw_now_wall_ms()))
        return 0;
    pgw_metrics_cache_stale_served();
    return answer_kept_copy(req, PGW_SOURCE_STALE);
}

static void keep_stale(pgw_lookup_req *req, const uint8_t *bytes, size_t len)
{
    if (req->no_cache) /* the caller asked for a fresh answer: stale would mislead */
        return;
    uint8_t *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, bytes, len);
    free(req->stale);
    req->stale = copy;
    req->stale_len = len;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    pgw_lookup_req *req = arg;
    if (req->stale_at_ms) {
        /* Shortly before the deadline: a stale copy answers now, while the caller is still
         * there to get it (at the deadline itself the caller's own timer wins the race and
         * the copy is wasted). Without one, wait for the deadline itself. */
        req->stale_at_ms = 0;
        if (answer_stale(req))
            return;
        int64_t left = req->deadline_ms - pgw_now_mono_ms();
        if (left > 0) {
            struct timeval tv = {left / 1000, (left % 1000) * 1000};
            evtimer_add(req->deadline_timer, &tv);
            return;
        }
    }
    finish_error(req, PGW_DEADLINE_EXCEEDED, "deadline exceeded before AWS Personalize answered");
}

/* --- cache writes --- */

static void l1_store(pgw_lookup *lk, const char *arn, const uint8_t *entry, size_t len,
                     int64_t fresh_until_wall, int64_t stale_until_wall)
{
    if (!lk->l1)
        return;
    int64_t now_wall = pgw_now_wall_ms(), now_mono = pgw_now_mono_ms();
    /* With Redis, L1 serves only briefly so replicas converge on what Redis holds. */
    int64_t serve_for = lk->redis ? pgw_ttl_l1_ms(&lk->ttl, fresh_until_wall, now_wall)
                                  : fresh_until_wall - now_wall;
    int64_t keep_for = stale_until_wall - now_wall;
    if (keep_for <= 0)
        return;
    uint8_t *buf = malloc(L1_PREFIX_LEN + len);
    if (!buf)
        return;
    int64_t serve_until = now_mono + (serve_for > 0 ? serve_for : 0);
    memcpy(buf, &serve_until, L1_PREFIX_LEN);
    memcpy(buf + L1_PREFIX_LEN, entry, len);
    pthread_mutex_lock(&lk->l1_mu);
    pgw_l1_put(lk->l1, arn, buf, L1_PREFIX_LEN + len, now_mono + keep_for, now_mono);
    pthread_mutex_unlock(&lk->l1_mu);
    free(buf);
}

/* Writes an upstream answer to both tiers. `job` is NULL for a NOT_FOUND answer. With
 * `publish`, tells the fleet too (after the Redis write, on the same connection: waiters that
 * read Redis on the notice find the value). Returns 1 if published. */
static int cache_store(pgw_lookup *lk, const char *arn, const pgw_personalize_result *r,
                       int publish)
{
    int negative = r->code == PGW_NOT_FOUND;
    if (negative && lk->ttl.negative_ttl_ms <= 0)
        return 0;
    pgw_ttl_plan plan;
    pgw_ttl_plan_entry(&lk->ttl, negative ? NULL : r->job->status, negative, pgw_now_wall_ms(),
                       random_u32(), &plan);
    pgw_cache_entry e = {
        .kind = negative ? PGW_CACHE_ENTRY_NEGATIVE : PGW_CACHE_ENTRY_POSITIVE,
        .fetched_at_ms = plan.fetched_at_ms,
        .fresh_until_ms = plan.fresh_until_ms,
        .stale_until_ms = plan.stale_until_ms,
        .job_pb = r->job_pb,
        .job_pb_len = r->job_pb_len,
    };
    if (negative) {
        snprintf(e.error_code, sizeof(e.error_code), "%s",
                 r->aws_error_code ? r->aws_error_code : "");
        snprintf(e.message, sizeof(e.message), "%s", r->message);
        snprintf(e.request_id, sizeof(e.request_id), "%s", r->request_id ? r->request_id : "");
    }
    size_t len;
    uint8_t *bytes = pgw_cache_entry_encode(&e, &len);
    if (!bytes)
        return 0;
    l1_store(lk, arn, bytes, len, plan.fresh_until_ms, plan.stale_until_ms);
    if (lk->redis) {
        char key[PGW_ARN_MAX_LEN + 32];
        if (pgw_redis_key_for_arn(arn, key, sizeof(key)) > 0)
            pgw_redis_tier_set(lk->redis, key, bytes, len, plan.redis_ttl_ms);
    }
    if (publish && lk->fleet)
        pgw_fleet_publish_fill(lk->fleet, arn, bytes, len);
    free(bytes);
    return publish && lk->fleet;
}

/* --- upstream, coalesced --- */

/* The upstream bound's gauges, after any change. */
static void admission_gauges(pgw_lookup *lk)
{
    pgw_admission_stats st;
    pgw_admission_stats_get(lk->admission, &st);
    pgw_metrics_set_upstream_admission(st.in_flight, st.queued);
}

/* Unlinks a fetch from the lookup and frees it (not its upstream call), giving back its
 * upstream slot. */
static void fetch_free(fetch *f)
{
    if (f->holds_slot) {
        pgw_admission_release(f->lookup->admission, pgw_now_mono_ms() - f->slot_since_ms);
        admission_gauges(f->lookup);
    }
    if (f->prev)
        f->prev->next = f->next;
    else
        f->lookup->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
    if (f->fleet_deadline)
        event_free(f->fleet_deadline);
    free(f);
}

static void on_fetched(const pgw_personalize_result *r, void *user_data)
{
    fetch *f = user_data;
    pgw_lookup *lk = f->lookup;
    int published = 0;
    if (r->code == PGW_OK || r->code == PGW_NOT_FOUND)
        published = cache_store(lk, f->arn, r, f->holds_lease);
    if (f->holds_lease && !published && lk->fleet)
        pgw_fleet_publish_failure(lk->fleet, f->arn, r->code, r->message);
    fetch_outcome out = {
        .aws_error_code = r->aws_error_code,
        .request_id = r->request_id,
        .fetched_at_ms = pgw_now_wall_ms(),
        .source = PGW_SOURCE_UPSTREAM,
    };
    pgw_flight_result fr = {
        .code = r->code,
        .message = r->message,
        .data = r->job_pb,
        .data_len = r->job_pb_len,
        .ctx = &out,
    };
    pgw_flight *flight = f->flight;
    fetch_free(f); /* the personalize call frees itself after this callback */
    pgw_singleflight_complete(lk->flights, flight, &fr);
}

static void join_fetch(pgw_lookup_req *req);

static void on_flight_done(const pgw_flight_result *fr, void *user_data)
{
    pgw_lookup_req *req = user_data;
    req->waiter = NULL;
    const fetch_outcome *out = fr->ctx;
    pgw_code code = (pgw_code)fr->code;
    if (out && out->upstream_limited)
        req->decision = PGW_AUDIT_UPSTREAM_LIMITED;
    if (code == PGW_DEADLINE_EXCEEDED && req->deadline_ms > pgw_now_mono_ms() + 10) {
        /* The fetch ran out of the time of the caller that started it; this caller still has
         * time of its own: fetch again. */
        join_fetch(req);
        return;
    }
    if ((code == PGW_UNAVAILABLE || code == PGW_INTERNAL || code == PGW_DEADLINE_EXCEEDED) &&
        answer_stale(req))
        return;
    if (out && out->rejected) /* counted per call refused, as the callers see it */
        pgw_metrics_rejected(out->rejected);
    pgw_lookup_result r = {
        .code = code,
        .message = fr->message ? fr->message : pgw_code_name(code),
        .job_pb = fr->data,
        .job_pb_len = fr->data_len,
        .source = code != PGW_OK ? PGW_SOURCE_NONE
                  : out          ? out->source
                                 : PGW_SOURCE_UPSTREAM,
        .age_s = out ? out->age_s : 0,
        .aws_error_code = out ? out->aws_error_code : NULL,
        .aws_request_id = out ? out->request_id : NULL,
    };
    req_finish(req, &r);
}

/* Unlinks and frees a fetch that ends without an upstream answer of its own (refused, failed
 * to start, or answered by another replica), completing its flight with *fr. */
static void fetch_end(fetch *f, const pgw_flight_result *fr)
{
    pgw_lookup *lk = f->lookup;
    pgw_flight *flight = f->flight;
    if (f->holds_lease)
        pgw_fleet_publish_failure(lk->fleet, f->arn, fr->code, fr->message);
    fetch_free(f);
    pgw_singleflight_complete(lk->flights, flight, fr);
}

static void start_fetch_call(fetch *f)
{
    f->call = pgw_personalize_describe(f->lookup->personalize, f->arn, &f->parsed, f->deadline_ms,
                                       on_fetched, f);
    if (!f->call) {
        pgw_flight_result fr = {.code = PGW_INTERNAL, .message = "out of memory"};
        fetch_end(f, &fr);
    }
}

static void on_upstream_token(void *arg)
{
    fetch *f = arg;
    f->token_wait = NULL;
    start_fetch_call(f);
}

/* Fails a fetch that a bound refused: UNAVAILABLE (the upstream is saturated; stale answers
 * still serve). */
static void refuse_fetch(fetch *f, const char *reason, const char *message)
{
    fetch_outcome out = {.upstream_limited = 1, .rejected = reason};
    pgw_flight_result fr = {.code = PGW_UNAVAILABLE, .message = message, .ctx = &out};
    fetch_end(f, &fr);
}

/* The global upstream bucket: only a real upstream call takes a token (never a hit). */
static void take_token_and_call(fetch *f)
{
    pgw_lookup *lk = f->lookup;
    switch (pgw_rate_limit_upstream_acquire(lk->rate_limit, pgw_now_mono_ms(), f->deadline_ms,
                                            on_upstream_token, f, &f->token_wait)) {
    case PGW_RATE_LIMIT_GRANTED:
        start_fetch_call(f);
        break;
    case PGW_RATE_LIMIT_WAIT:
        break;
    case PGW_RATE_LIMIT_REJECTED: {
        pgw_metrics_rate_limited("upstream");
        fetch_outcome out = {.upstream_limited = 1};
        pgw_flight_result fr = {
            .code = PGW_UNAVAILABLE,
            .message = "the gateway's upstream rate limit is exhausted: retry later",
            .ctx = &out,
        };
        fetch_end(f, &fr);
        break;
    }
    }
}

#define SATURATED_MESSAGE                                                                          \
    "the upstream is saturated (every upstream slot busy and the queue behind them full): "        \
    "retry later"
#define TOO_LATE_MESSAGE                                                                           \
    "the upstream is saturated: the queued fetch could not finish before the deadline"

/* pgw_admission's callback: the fetch got an upstream slot, or was refused. Runs from the
 * admission's bulk-priority turn, so refusals (each answers its callers) never run inside the
 * Redis reply or the task that asked. */
static void on_upstream_slot(pgw_admission_outcome outcome, void *arg)
{
    fetch *f = arg;
    f->ticket = NULL;
    if (outcome == PGW_ADMISSION_FULL || outcome == PGW_ADMISSION_LATE) {
        admission_gauges(f->lookup);
        if (outcome == PGW_ADMISSION_FULL)
            refuse_fetch(f, "upstream_queue_full", SATURATED_MESSAGE);
        else
            refuse_fetch(f, "upstream_deadline", TOO_LATE_MESSAGE);
        return;
    }
    f->holds_slot = 1;
    f->slot_since_ms = pgw_now_mono_ms();
    admission_gauges(f->lookup);
    if (pgw_singleflight_waiters(f->flight) == 0 && !f->holds_lease) {
        /* Every caller left while it queued: under saturation an upstream call nobody waits
         * for is not worth its slot (unless other replicas wait for it: the lease). */
        pgw_flight_result fr = {.code = PGW_CANCELLED, .message = "every caller left"};
        fetch_end(f, &fr);
        return;
    }
    take_token_and_call(f);
}

/* This replica fetches: an upstream slot first, so the upstream work in flight and queued
 * stays bounded (the outcome comes later from the loop, at the bulk priority, never inside
 * this call), then a token of the upstream rate limit, then the call. */
static void fetch_admit(fetch *f)
{
    pgw_lookup *lk = f->lookup;
    if (!lk->admission) {
        take_token_and_call(f);
        return;
    }
    if (pgw_admission_acquire(lk->admission, f->deadline_ms, on_upstream_slot, f, &f->ticket) !=
        0) {
        pgw_flight_result fr = {.code = PGW_INTERNAL, .message = "out of memory"};
        fetch_end(f, &fr);
        return;
    }
    admission_gauges(lk);
}

/* Another replica fetched the ARN: answer this replica's waiters from its cache entry. */
static void fetch_filled(fetch *f, const uint8_t *bytes, size_t len)
{
    pgw_cache_entry e;
    if (pgw_cache_entry_decode(bytes, len, &e) != 0) {
        fetch_admit(f); /* not ours to read: fetch ourselves */
        return;
    }
    l1_store(f->lookup, f->arn, bytes, len, e.fresh_until_ms, e.stale_until_ms);
    pgw_lookup_result r;
    char message[ENTRY_MESSAGE_LEN];
    result_from_entry(&e, PGW_SOURCE_REDIS, &r, message);
    fetch_outcome out = {
        .aws_error_code = r.aws_error_code,
        .request_id = r.aws_request_id,
        .fetched_at_ms = e.fetched_at_ms,
        .source = PGW_SOURCE_REDIS,
        .age_s = r.age_s,
    };
    pgw_flight_result fr = {
        .code = r.code,
        .message = r.message,
        .data = r.job_pb,
        .data_len = r.job_pb_len,
        .ctx = &out,
    };
    fetch_end(f, &fr);
}

static void on_fleet(const pgw_fleet_outcome *o, void *user_data)
{
    fetch *f = user_data;
    f->fleet_wait = NULL;
    if (f->fleet_deadline)
        event_del(f->fleet_deadline);
    switch (o->verdict) {
    case PGW_FLEET_FETCH:
        pgw_metrics_fleet_lease(o->holds_lease ? (o->taken_over ? "taken_over" : "won")
                                               : "fallback");
        f->holds_lease = o->holds_lease;
        fetch_admit(f);
        break;
    case PGW_FLEET_FILLED:
        pgw_metrics_fleet_lease("waited");
        fetch_filled(f, o->entry, o->entry_len);
        break;
    case PGW_FLEET_FAILED: {
        pgw_metrics_fleet_lease("waited");
        pgw_flight_result fr = {.code = o->code, .message = o->message};
        fetch_end(f, &fr);
        break;
    }
    }
}

static void on_fleet_deadline(evutil_socket_t fd, short what, void *arg)
{
    fetch *f = arg;
    pgw_fleet_cancel(f->fleet_wait);
    f->fleet_wait = NULL;
    /* Waiters with time of their own start a fetch of their own (on_flight_done). */
    pgw_flight_result fr = {
        .code = PGW_DEADLINE_EXCEEDED,
        .message = "deadline exceeded while another replica fetched from AWS Personalize",
    };
    fetch_end(f, &fr);
}

/* Asks the fleet whether another replica already fetches this ARN. Returns 0 if the fetch
 * goes on through on_fleet, -1 if the fleet cannot be asked (no deadline timer). */
static int fetch_ask_fleet(fetch *f, int accept_cached)
{
    pgw_lookup *lk = f->lookup;
    if (f->deadline_ms) {
        int64_t left = f->deadline_ms - pgw_now_mono_ms();
        f->fleet_deadline = evtimer_new(lk->base, on_fleet_deadline, f);
        if (!f->fleet_deadline || left <= 0)
            return -1;
        struct timeval tv = {left / 1000, (left % 1000) * 1000};
        evtimer_add(f->fleet_deadline, &tv);
    }
    f->fleet_wait = pgw_fleet_acquire(lk->fleet, f->arn, accept_cached, on_fleet, f);
    return 0;
}

static void join_fetch(pgw_lookup_req *req)
{
    pgw_lookup *lk = req->lookup;
    if (req->peek_only) {
        finish_error(req, PGW_UNAVAILABLE, "not in the cache");
        return;
    }
    int leader = 0;
    pgw_flight *flight =
        pgw_singleflight_join(lk->flights, req->arn, on_flight_done, req, &leader, &req->waiter);
    if (!flight) {
        finish_error(req, PGW_INTERNAL, "out of memory");
        return;
    }
    if (!leader) {
        pgw_metrics_coalesced_waiters(1);
        return;
    }
    fetch *f = calloc(1, sizeof(*f));
    if (!f) {
        pgw_flight_result fr = {.code = PGW_INTERNAL, .message = "out of memory"};
        pgw_singleflight_complete(lk->flights, flight, &fr);
        return;
    }
    f->lookup = lk;
    f->flight = flight;
    f->parsed = req->parsed;
    f->deadline_ms = req->deadline_ms;
    memcpy(f->arn, req->arn, sizeof(f->arn));
    f->next = lk->fetches;
    if (f->next)
        f->next->prev = f;
    lk->fetches = f;
    if (lk->fleet && fetch_ask_fleet(f, !req->no_cache) == 0)
        return;
    fetch_admit(f);
}

/* --- the tiers --- */

static int try_l1(pgw_lookup_req *req, int count);

static void on_redis(pgw_redis_result result, const uint8_t *value, size_t len, void *user_data)
{
    pgw_lookup_req *req = user_data;
    pgw_lookup *lk = req->lookup;
    req->waiting_redis = 0;
    if (!req->cb) { /* answered (deadline, stale) or cancelled meanwhile */
        req_free(req);
        return;
    }
    if (result == PGW_REDIS_HIT) {
        pgw_cache_entry e;
        if (pgw_cache_entry_decode(value, len, &e) == 0) {
            int64_t now = pgw_now_wall_ms();
            if (pgw_cache_entry_is_fresh(&e, now)) {
                pgw_metrics_cache_lookup("redis", 1);
                l1_store(lk, req->arn, value, len, e.fresh_until_ms, e.stale_until_ms);
                answer_entry(req, &e, PGW_SOURCE_REDIS); /* value is valid through the call */
                return;
            }
            if (e.kind == PGW_CACHE_ENTRY_POSITIVE && pgw_cache_entry_is_stale_usable(&e, now))
                keep_stale(req, value, len);
        }
        /* A value that does not decode (corrupt, foreign, older format) is a miss. */
        pgw_metrics_cache_lookup("redis", 0);
    } else if (result == PGW_REDIS_MISS) {
        pgw_metrics_cache_lookup("redis", 0);
    }
    pgw_redis_tier_stats rs;
    pgw_redis_tier_stats_get(lk->redis, &rs);
    if (result == PGW_REDIS_ERROR) {
        /* A GET answered at its timeout is counted by the tier just before this callback:
         * that is the kind, whatever the breaker did since (the timeout may have tripped it). */
        int timed_out = rs.get_timeouts != lk->redis_get_timeouts_seen;
        lk->redis_get_timeouts_seen = rs.get_timeouts;
        pgw_metrics_redis_error(timed_out                                ? "timeout"
                                : rs.breaker == PGW_REDIS_BREAKER_CLOSED ? "error"
                                                                         : "breaker_open");
    }
    pgw_metrics_set_redis_breaker_state(rs.breaker == PGW_REDIS_BREAKER_CLOSED ? 0
                                        : rs.breaker == PGW_REDIS_BREAKER_OPEN ? 1
                                                                               : 2);
    /* Redis failed (down, slow, its breaker open) but L1 holds a copy that is past its short
     * L1 time yet still fresh by its own TTL: as good as what Redis would have answered, and
     * a cached ARN must not turn into an upstream call because Redis hiccuped (under a burst
     * of misses that call waits behind all of them). */
    if (result == PGW_REDIS_ERROR && answer_fresh_copy(req))
        return;
    /* A fetch for this ARN may have completed while the GET was out: its answer is in L1 now,
     * and a new fetch would cost AWS a second call for one stampede. */
    if (!req->no_cache && try_l1(req, 0))
        return;
    join_fetch(req);
}

typedef enum l1_state { L1_MISS, L1_FRESH, L1_STALE } l1_state;

/* Copies out the L1 entry of `arn` into *out (malloc'd, the caller frees) and says whether it
 * may be served (fresh, and within its L1 time) or only kept for stale-on-error. Any thread:
 * the L1 tier is shared with the gRPC threads' fast path under l1_mu. */
static l1_state l1_fetch(pgw_lookup *lk, const char *arn, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    if (!lk->l1)
        return L1_MISS;
    int64_t now = pgw_now_mono_ms(), serve_until = 0;
    size_t len = 0;
    uint8_t *copy = NULL;
    pthread_mutex_lock(&lk->l1_mu);
    const uint8_t *v = pgw_l1_get(lk->l1, arn, now, &len);
    if (v && len > L1_PREFIX_LEN && (copy = malloc(len - L1_PREFIX_LEN))) {
        memcpy(&serve_until, v, L1_PREFIX_LEN);
        memcpy(copy, v + L1_PREFIX_LEN, len - L1_PREFIX_LEN);
    }
    pthread_mutex_unlock(&lk->l1_mu);
    pgw_cache_entry e;
    if (!copy || pgw_cache_entry_decode(copy, len - L1_PREFIX_LEN, &e) != 0) {
        free(copy);
        return L1_MISS;
    }
    *out = copy;
    *out_len = len - L1_PREFIX_LEN;
    if (now < serve_until && pgw_cache_entry_is_fresh(&e, pgw_now_wall_ms()))
        return L1_FRESH;
    if (e.kind == PGW_CACHE_ENTRY_POSITIVE)
        return L1_STALE;
    free(copy);
    *out = NULL;
    return L1_MISS;
}

/* Looks in L1. Returns 1 if the request was answered from it. `count`: record the hit or
 * miss in the counters (not for a second look). */
static int try_l1(pgw_lookup_req *req, int count)
{
    uint8_t *bytes;
    size_t len;
    switch (l1_fetch(req->lookup, req->arn, &bytes, &len)) {
    case L1_FRESH:
        if (count)
            pgw_metrics_cache_lookup("l1", 1);
        answer_from_entry(req, bytes, len, PGW_SOURCE_L1);
        free(bytes);
        return 1;
    case L1_STALE:
        if (req->no_cache) {
            free(bytes);
        } else {
            free(req->stale);
            req->stale = bytes;
            req->stale_len = len;
        }
        break;
    case L1_MISS:
        break;
    }
    if (count)
        pgw_metrics_cache_lookup("l1", 0);
    return 0;
}

pgw_cached_answer pgw_lookup_answer_cached(pgw_lookup *lk, const pgw_lookup_params *params,
                                           pgw_lookup_cb cb, void *user_data)
{
    /* No-cache calls take the ordinary path, and so do malformed ARNs (a NUL, a byte that is
     * not ASCII...): the ordinary path refuses them before any cache tier is consulted. */
    pgw_arn parsed;
    if (!lk->l1 || params->no_cache ||
        pgw_arn_parse(params->arn, params->arn_len, &parsed, NULL, 0) != 0)
        return PGW_CACHED_NOT_ANSWERED;
    int64_t started_us = pgw_now_mono_us();
    char arn[PGW_ARN_MAX_LEN + 1];
    memcpy(arn, params->arn, params->arn_len);
    arn[params->arn_len] = '\0';
    uint8_t *bytes;
    size_t len;
    l1_state state = l1_fetch(lk, arn, &bytes, &len);
    if (state == L1_MISS)
        return PGW_CACHED_NOT_ANSWERED; /* the loop path counts the miss */
    /* Policy and per-caller limits keep state on the loop thread: such callers take the
     * ordinary path, as do entries past their L1 time (Redis, or stale-on-error, decides). */
    pgw_cache_entry e;
    if (state != L1_FRESH || lk->policy || pgw_rate_limit_caller_enabled(lk->rate_limit) ||
        pgw_cache_entry_decode(bytes, len, &e) != 0) {
        free(bytes);
        return PGW_CACHED_KNOWN;
    }
    pgw_metrics_cache_lookup("l1", 1);
    pgw_lookup_result r;
    char message[ENTRY_MESSAGE_LEN];
    result_from_entry(&e, PGW_SOURCE_L1, &r, message);
    audit_call(lk, params->frontend, params->identity, arn, params->arn_len, PGW_AUDIT_ALLOW, &r,
               started_us);
    cb(&r, user_data);
    free(bytes);
    return PGW_CACHED_ANSWERED;
}

static void start_tiers(pgw_lookup_req *req);

/* Answers a call refused before it became a request, with its audit line. */
static void refuse(pgw_lookup *lk, const pgw_lookup_params *params, pgw_audit_decision decision,
                   pgw_code code, const char *message, int64_t started_us, pgw_lookup_cb cb,
                   void *user_data)
{
    pgw_lookup_result r = {.code = code, .message = message};
    audit_call(lk, params->frontend, params->identity, params->arn, params->arn_len, decision, &r,
               started_us);
    cb(&r, user_data);
}

/* A request for an authorized caller, registered in lk->pending; NULL (the callback has run
 * with INTERNAL) when memory runs out. */
/* Where a request's deadline timer lives: right after the request, in the same allocation
 * (one allocation per call fewer than evtimer_new). */
#define REQ_EVENT_OFFSET                                                                           \
    ((sizeof(pgw_lookup_req) + _Alignof(max_align_t) - 1) / _Alignof(max_align_t) *                \
     _Alignof(max_align_t))

static pgw_lookup_req *req_new(pgw_lookup *lk, const pgw_lookup_params *params,
                               const pgw_arn *parsed, pgw_lookup_cb cb, void *user_data)
{
    pgw_lookup_req *req = calloc(1, REQ_EVENT_OFFSET + event_get_struct_event_size());
    if (!req) {
        pgw_lookup_result r = {.code = PGW_INTERNAL, .message = "out of memory"};
        cb(&r, user_data);
        return NULL;
    }
    req->lookup = lk;
    req->cb = cb;
    req->user_data = user_data;
    memcpy(req->arn, params->arn, params->arn_len);
    req->parsed = *parsed;
    req->deadline_ms = params->deadline_ms;
    req->no_cache = params->no_cache;
    if (params->identity)
        snprintf(req->identity, sizeof(req->identity), "%s", params->identity);
    req->frontend = params->frontend;
    req->started_us = pgw_now_mono_us();
    req->decision = PGW_AUDIT_ALLOW;
    req->next = lk->pending;
    if (req->next)
        req->next->prev = req;
    lk->pending = req;
    return req;
}

/* Runs the tiers; returns the handle, or NULL when the request was answered before returning. */
static pgw_lookup_req *req_run(pgw_lookup_req *req)
{
    pgw_lookup *lk = req->lookup;
    lk->starting = req;
    lk->starting_answered = 0;
    start_tiers(req);
    int answered = lk->starting_answered;
    lk->starting = NULL;
    return answered ? NULL : req;
}

pgw_lookup_req *pgw_lookup_start(pgw_lookup *lk, const pgw_lookup_params *params, pgw_lookup_cb cb,
                                 void *user_data)
{
    int64_t started_us = pgw_now_mono_us();
    pgw_arn parsed;
    char err[300];
    if (pgw_arn_parse(params->arn, params->arn_len, &parsed, err, sizeof(err)) != 0) {
        refuse(lk, params, PGW_AUDIT_INVALID, PGW_INVALID_ARGUMENT, err, started_us, cb, user_data);
        return NULL;
    }
    /* Authorize before any cache tier: a cached answer never reaches a caller who may not see
     * it. */
    char why[400];
    switch (pgw_policy_check(lk->policy, params->identity, &parsed, why, sizeof(why))) {
    case PGW_POLICY_ALLOW:
        if (lk->policy)
            pgw_metrics_auth_decision("allow");
        break;
    case PGW_POLICY_DENY:
        pgw_metrics_auth_decision("deny");
        refuse(lk, params, PGW_AUDIT_DENY, PGW_PERMISSION_DENIED, why, started_us, cb, user_data);
        return NULL;
    case PGW_POLICY_NO_IDENTITY:
        pgw_metrics_auth_decision("unauthenticated");
        refuse(lk, params, PGW_AUDIT_UNAUTHENTICATED, PGW_UNAUTHENTICATED, why, started_us, cb,
               user_data);
        return NULL;
    }
    int64_t retry_ms = 0;
    if (!pgw_rate_limit_caller_take(lk->rate_limit, params->identity, pgw_now_mono_ms(),
                                    &retry_ms)) {
        pgw_metrics_rate_limited("caller");
        snprintf(why, sizeof(why), "the caller is over its rate limit: retry in %lld ms",
                 (long long)retry_ms);
        refuse(lk, params, PGW_AUDIT_RATE_LIMITED, PGW_RESOURCE_EXHAUSTED, why, started_us, cb,
               user_data);
        return NULL;
    }
    pgw_lookup_req *req = req_new(lk, params, &parsed, cb, user_data);
    if (!req)
        return NULL;
    req->started_us = started_us;
    return req_run(req);
}

pgw_lookup_req *pgw_lookup_poll(pgw_lookup *lk, const char *arn, pgw_lookup_poll_mode mode,
                                int64_t deadline_ms, pgw_lookup_cb cb, void *user_data)
{
    pgw_arn parsed;
    char err[300];
    size_t arn_len = strlen(arn);
    if (pgw_arn_parse(arn, arn_len, &parsed, err, sizeof(err)) != 0) {
        pgw_lookup_result r = {.code = PGW_INVALID_ARGUMENT, .message = err};
        cb(&r, user_data);
        return NULL;
    }
    pgw_lookup_params params = {
        .arn = arn,
        .arn_len = arn_len,
        .deadline_ms = deadline_ms,
        .no_cache = mode == PGW_LOOKUP_POLL_FETCH,
        .frontend = "watch",
    };
    pgw_lookup_req *req = req_new(lk, &params, &parsed, cb, user_data);
    if (!req)
        return NULL;
    req->internal = 1;
    req->peek_only = mode == PGW_LOOKUP_POLL_PEEK;
    return req_run(req);
}

/* L1, then Redis, then the coalesced upstream fetch; stops at the first that answers. */
static void start_tiers(pgw_lookup_req *req)
{
    pgw_lookup *lk = req->lookup;
    if (!req->no_cache && try_l1(req, 1))
        return;
    if (req->deadline_ms) {
        int64_t left = req->deadline_ms - pgw_now_mono_ms();
        if (left <= 0) {
            finish_error(req, PGW_DEADLINE_EXCEEDED, "deadline already exceeded");
            return;
        }
        struct event *timer = (struct event *)((char *)req + REQ_EVENT_OFFSET);
        /* A tenth of the time left, 5 to 50 ms: room for the answer to reach the caller. */
        int64_t margin = left / 10 < STALE_MARGIN_MIN_MS   ? STALE_MARGIN_MIN_MS
                         : left / 10 > STALE_MARGIN_MAX_MS ? STALE_MARGIN_MAX_MS
                                                           : left / 10;
        int64_t first = left > margin ? left - margin : left;
        req->stale_at_ms = left > margin ? req->deadline_ms - margin : 0;
        struct timeval tv = {first / 1000, (first % 1000) * 1000};
        if (evtimer_assign(timer, lk->base, on_deadline, req) == 0) {
            req->deadline_timer = timer;
            evtimer_add(timer, &tv);
        }
    }
    if (!req->no_cache && lk->redis) {
        char key[PGW_ARN_MAX_LEN + 32];
        if (pgw_redis_key_for_arn(req->arn, key, sizeof(key)) > 0) {
            req->waiting_redis = 1;
            pgw_redis_tier_get(lk->redis, key, on_redis, req); /* may call back right here */
            return;
        }
    }
    join_fetch(req);
}

void pgw_lookup_cancel(pgw_lookup_req *req)
{
    if (!req)
        return;
    if (req->cb && !req->internal) {
        pgw_lookup_result r = {.code = PGW_CANCELLED, .message = "cancelled"};
        audit_call(req->lookup, req->frontend, req->identity, req->arn, strlen(req->arn),
                   req->decision, &r, req->started_us);
    }
    req->cb = NULL;
    if (req->waiting_redis) { /* on_redis frees it */
        if (req->deadline_timer)
            event_del(req->deadline_timer);
        if (req->waiter) {
            pgw_singleflight_leave(req->waiter);
            req->waiter = NULL;
        }
        return;
    }
    req_free(req);
}
