#include "service/lookup.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service/aws/arn.h"
#include "service/aws/personalize.h"
#include "service/clock.h"
#include "service/lookup_internal.h"

struct pgw_lookup {
    struct event_base *base;
    pgw_personalize *personalize;
};

struct pgw_lookup_req {
    pgw_lookup *lookup;
    pgw_lookup_cb cb;
    void *user_data;
    struct event *deadline_timer;
    pgw_personalize_call *upstream;
    char arn[PGW_ARN_MAX_LEN + 1];
};

pgw_lookup *pgw_lookup_new(const pgw_lookup_options *options)
{
    pgw_lookup *lk = calloc(1, sizeof(*lk));
    if (!lk)
        return NULL;
    lk->base = options->base;
    lk->personalize = options->personalize;
    return lk;
}

void pgw_lookup_free(pgw_lookup *lk)
{
    free(lk);
}

static void req_free(pgw_lookup_req *req)
{
    if (req->upstream)
        pgw_personalize_cancel(req->upstream);
    if (req->deadline_timer)
        event_free(req->deadline_timer);
    free(req);
}

static void answer_error(pgw_lookup_cb cb, void *user_data, pgw_code code, const char *message)
{
    pgw_lookup_result r = {.code = code, .message = message};
    cb(&r, user_data);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    pgw_lookup_req *req = arg;
    answer_error(req->cb, req->user_data, PGW_DEADLINE_EXCEEDED,
                 "deadline exceeded before AWS Personalize answered");
    req_free(req);
}

static void on_upstream(const pgw_personalize_result *r, void *user_data)
{
    pgw_lookup_req *req = user_data;
    req->upstream = NULL; /* finished: the client frees it */
    pgw_lookup_result out = {
        .code = r->code,
        .message = r->message,
        .job_pb = r->job_pb,
        .job_pb_len = r->job_pb_len,
        .source = r->code == PGW_OK ? PGW_SOURCE_UPSTREAM : PGW_SOURCE_NONE,
        .aws_error_code = r->aws_error_code,
        .aws_request_id = r->request_id,
    };
    req->cb(&out, req->user_data);
    req_free(req);
}

pgw_lookup_req *pgw_lookup_start(pgw_lookup *lk, const pgw_lookup_params *params, pgw_lookup_cb cb,
                                 void *user_data)
{
    pgw_arn parsed;
    char err[300];
    if (pgw_arn_parse(params->arn, params->arn_len, &parsed, err, sizeof(err)) != 0) {
        answer_error(cb, user_data, PGW_INVALID_ARGUMENT, err);
        return NULL;
    }
    if (params->deadline_ms && params->deadline_ms <= pgw_now_mono_ms()) {
        answer_error(cb, user_data, PGW_DEADLINE_EXCEEDED, "deadline already exceeded");
        return NULL;
    }
    pgw_lookup_req *req = calloc(1, sizeof(*req));
    if (!req) {
        answer_error(cb, user_data, PGW_INTERNAL, "out of memory");
        return NULL;
    }
    req->lookup = lk;
    req->cb = cb;
    req->user_data = user_data;
    memcpy(req->arn, params->arn, params->arn_len);
    req->arn[params->arn_len] = '\0';
    if (params->deadline_ms) {
        int64_t left = params->deadline_ms - pgw_now_mono_ms();
        req->deadline_timer = evtimer_new(lk->base, on_deadline, req);
        struct timeval tv = {left / 1000, (left % 1000) * 1000};
        if (req->deadline_timer)
            evtimer_add(req->deadline_timer, &tv);
    }
    req->upstream = pgw_personalize_describe(lk->personalize, req->arn, &parsed,
                                             params->deadline_ms, on_upstream, req);
    if (!req->upstream) {
        req_free(req);
        answer_error(cb, user_data, PGW_INTERNAL, "out of memory");
        return NULL;
    }
    return req;
}

void pgw_lookup_cancel(pgw_lookup_req *req)
{
    if (req)
        req_free(req);
}
