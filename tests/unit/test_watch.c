/* The watch registry without polls (an interval of an hour never ticks here): changes arrive
 * as fill notices (pgw_watch_on_fill), as they do from another replica. What a watcher is told
 * (news only: never a duplicate, never an older state), when it ends (terminal, NOT_FOUND,
 * shutdown), the catch-up of a late watcher, detaching from inside a callback, and the
 * --watch-max-streams slots. */
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "cache/entry.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/watch.h"
#include "test_util.h"

#define ARN  "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/unit"
#define ARN2 "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/other"

typedef struct seen {
    int calls, finals;
    pgw_code last_code;
    char statuses[8][32];
    pgw_watcher **self; /* detach itself on the first update */
    pgw_watcher *other; /* detach another watcher on the first update */
} seen;

static void on_update(const pgw_watch_update *u, void *ud)
{
    seen *s = ud;
    if (u->code == PGW_OK && s->calls < 8) {
        PersonalizeGateway__V1__BatchInferenceJob *job =
            personalize_gateway__v1__batch_inference_job__unpack(NULL, u->job_pb_len, u->job_pb);
        snprintf(s->statuses[s->calls], sizeof(s->statuses[0]), "%s", job ? job->status : "?");
        personalize_gateway__v1__batch_inference_job__free_unpacked(job, NULL);
    }
    s->calls++;
    s->last_code = u->code;
    s->finals += u->final;
    if (s->self && *s->self && !u->final) {
        pgw_watch_detach(*s->self);
        *s->self = NULL;
    }
    if (s->other) {
        pgw_watch_detach(s->other);
        s->other = NULL;
    }
}

/* A packed job with this status and last-updated time (seconds). Caller frees. */
static uint8_t *job(const char *status, int64_t updated_s, size_t *len)
{
    PersonalizeGateway__V1__BatchInferenceJob j =
        PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = updated_s;
    j.batch_inference_job_arn = (char *)ARN;
    j.status = (char *)status;
    j.last_updated_date_time = &ts;
    *len = personalize_gateway__v1__batch_inference_job__get_packed_size(&j);
    uint8_t *buf = malloc(*len);
    personalize_gateway__v1__batch_inference_job__pack(&j, buf);
    return buf;
}

/* A fill notice's cache entry for that job (or a NOT_FOUND entry when status is NULL). */
static void notice(pgw_watch_registry *reg, const char *arn, const char *status, int64_t t)
{
    size_t jl = 0, el = 0;
    uint8_t *j = status ? job(status, t, &jl) : NULL;
    pgw_cache_entry e = {
        .kind = status ? PGW_CACHE_ENTRY_POSITIVE : PGW_CACHE_ENTRY_NEGATIVE,
        .fetched_at_ms = 1,
        .fresh_until_ms = 2,
        .stale_until_ms = 3,
        .job_pb = j,
        .job_pb_len = jl,
    };
    if (!status)
        snprintf(e.error_code, sizeof(e.error_code), "ResourceNotFoundException");
    uint8_t *bytes = pgw_cache_entry_encode(&e, &el);
    pgw_watch_on_fill(arn, bytes, el, reg);
    free(bytes);
    free(j);
}

static pgw_watcher *attach(pgw_watch_registry *reg, const char *arn, const char *status, int64_t t,
                           seen *s)
{
    if (pgw_watch_reserve(reg) != PGW_WATCH_RESERVED)
        return NULL;
    size_t len;
    uint8_t *j = job(status, t, &len);
    pgw_watcher *w = pgw_watch_attach(reg, arn, j, len, on_update, s);
    free(j);
    return w;
}

static pgw_watch_registry *registry(struct event_base *base, int max_streams)
{
    pgw_watch_options o = {
        .base = base, .poll_interval_ms = 3600 * 1000, .max_streams = max_streams};
    return pgw_watch_registry_new(&o);
}

static void test_news_only_then_terminal(struct event_base *base)
{
    pgw_watch_registry *reg = registry(base, 10);
    seen a = {0}, b = {0};
    CHECK(attach(reg, ARN, "PENDING", 100, &a) != NULL);
    CHECK(attach(reg, ARN, "PENDING", 100, &b) != NULL);
    pgw_watch_stats st;
    pgw_watch_stats_get(reg, &st);
    CHECK(st.streams == 2 && st.arns == 1);
    notice(reg, ARN, "PENDING", 100); /* what they have: no message */
    CHECK(a.calls == 0 && b.calls == 0);
    notice(reg, ARN, "IN PROGRESS", 200);
    notice(reg, ARN, "IN PROGRESS", 200); /* a duplicate (the poller's own notice) */
    notice(reg, ARN, "PENDING", 100);     /* a lagging tier: older, never sent */
    CHECK(a.calls == 1 && b.calls == 1);
    CHECK_STR(a.statuses[0], "IN PROGRESS");
    notice(reg, ARN2, "ACTIVE", 300); /* another ARN: nobody here */
    CHECK(a.calls == 1);
    notice(reg, ARN, "ACTIVE", 300);
    CHECK(a.calls == 2 && a.finals == 1 && a.last_code == PGW_OK);
    CHECK_STR(b.statuses[1], "ACTIVE");
    pgw_watch_stats_get(reg, &st);
    CHECK(st.streams == 0 && st.arns == 0); /* terminal: the group is gone */
    notice(reg, ARN, "ACTIVE", 400);
    CHECK(a.calls == 2);
    pgw_watch_registry_free(reg);
}

static void test_same_time_new_status_is_news(struct event_base *base)
{
    pgw_watch_registry *reg = registry(base, 10);
    seen a = {0};
    pgw_watcher *w = attach(reg, ARN, "PENDING", 100, &a);
    notice(reg, ARN, "IN PROGRESS", 100);
    CHECK(a.calls == 1);
    pgw_watch_detach(w);
    pgw_watch_registry_free(reg);
}

static void test_not_found_and_shutdown_end_streams(struct event_base *base)
{
    pgw_watch_registry *reg = registry(base, 10);
    seen a = {0}, b = {0};
    attach(reg, ARN, "PENDING", 100, &a);
    attach(reg, ARN2, "PENDING", 100, &b);
    notice(reg, ARN, NULL, 0);
    CHECK(a.calls == 1 && a.finals == 1 && a.last_code == PGW_NOT_FOUND);
    CHECK(b.calls == 0);
    pgw_watch_shutdown(reg);
    CHECK(b.calls == 1 && b.finals == 1 && b.last_code == PGW_UNAVAILABLE);
    CHECK(pgw_watch_is_shut_down(reg));
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_SHUT_DOWN);
    pgw_watch_stats st;
    pgw_watch_stats_get(reg, &st);
    CHECK(st.streams == 0 && st.arns == 0);
    pgw_watch_registry_free(reg);
}

static void test_late_watcher_catches_up_from_the_loop(struct event_base *base)
{
    pgw_watch_registry *reg = registry(base, 10);
    seen a = {0}, late = {0};
    pgw_watcher *wa = attach(reg, ARN, "PENDING", 100, &a);
    notice(reg, ARN, "IN PROGRESS", 200);
    /* Its first message came from a tier that had not caught up yet. */
    pgw_watcher *wl = attach(reg, ARN, "PENDING", 100, &late);
    CHECK(late.calls == 0); /* never inside attach */
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(late.calls == 1);
    CHECK_STR(late.statuses[0], "IN PROGRESS");
    CHECK(a.calls == 1); /* the others already had it */
    pgw_watch_detach(wa);
    pgw_watch_detach(wl);
    pgw_watch_registry_free(reg);
}

static void test_detach_inside_callbacks(struct event_base *base)
{
    pgw_watch_registry *reg = registry(base, 10);
    seen a = {0}, b = {0}, c = {0};
    pgw_watcher *wa = attach(reg, ARN, "PENDING", 100, &a);
    pgw_watcher *wb = attach(reg, ARN, "PENDING", 100, &b);
    pgw_watcher *wc = attach(reg, ARN, "PENDING", 100, &c);
    (void)wc;
    /* Watchers are told newest first: c detaches itself, then b detaches a. */
    c.self = &wc;
    b.other = wa;
    notice(reg, ARN, "IN PROGRESS", 200);
    CHECK(c.calls == 1 && wc == NULL);
    CHECK(b.calls == 1);
    CHECK(a.calls == 0); /* detached before its turn */
    pgw_watch_stats st;
    pgw_watch_stats_get(reg, &st);
    CHECK(st.streams == 1 && st.arns == 1);
    pgw_watch_detach(wb); /* the last one: the group goes */
    pgw_watch_stats_get(reg, &st);
    CHECK(st.streams == 0 && st.arns == 0);
    pgw_watch_registry_free(reg);
}

static void test_slots(struct event_base *base)
{
    pgw_watch_registry *reg = registry(base, 2);
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_RESERVED);
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_RESERVED);
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_FULL);
    seen a = {0};
    size_t len;
    uint8_t *j = job("PENDING", 1, &len);
    pgw_watcher *w = pgw_watch_attach(reg, ARN, j, len, on_update, &a); /* takes a slot over */
    free(j);
    CHECK(w != NULL);
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_FULL);
    pgw_watch_detach(w); /* gives it back */
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_RESERVED);
    pgw_watch_unreserve(reg);
    pgw_watch_unreserve(reg);
    pgw_watch_stats st;
    pgw_watch_stats_get(reg, &st);
    CHECK(st.streams == 0 && st.arns == 0);
    CHECK(pgw_watch_max_streams(reg) == 2);
    pgw_watch_registry_free(reg);

    reg = registry(base, 0); /* --watch-max-streams 0: no watch stream at all */
    CHECK(pgw_watch_reserve(reg) == PGW_WATCH_FULL);
    pgw_watch_registry_free(reg);
}

static void test_terminal_check(void)
{
    size_t len;
    uint8_t *j = job("CREATE FAILED", 1, &len);
    CHECK(pgw_watch_job_is_terminal(j, len));
    free(j);
    j = job("IN PROGRESS", 1, &len);
    CHECK(!pgw_watch_job_is_terminal(j, len));
    free(j);
    CHECK(!pgw_watch_job_is_terminal((const uint8_t *)"\xff\xff", 2));
}

int main(void)
{
    struct event_base *base = event_base_new();
    test_news_only_then_terminal(base);
    test_same_time_new_status_is_news(base);
    test_not_found_and_shutdown_end_streams(base);
    test_late_watcher_catches_up_from_the_loop(base);
    test_detach_inside_callbacks(base);
    test_slots(base);
    test_terminal_check();
    event_base_free(base);
    return pgw_test_finish("test_watch");
}
