#include "service/aws/personalize.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/aws/aws_error.h"
#include "service/aws/job_json.h"
#include "service/aws/sigv4.h"
#include "service/clock.h"
#include "service/log.h"
#include "service/metrics.h"

/* AWS "standard" retry mode (botocore retries/standard.py). */
#define RETRY_QUOTA_CAPACITY 500
#define RETRY_COST           5
#define RETRY_TIMEOUT_COST   10
#define BACKOFF_CAP_MS       20000
/* Temporary credentials closer than this to expiry are not used to sign. */
#define CREDENTIALS_EXPIRY_MARGIN_MS 10000

struct pgw_personalize {
    struct event_base *base;
    pgw_http_client *http;
    pgw_credentials_provider *credentials;
    pgw_sigv4_signer *signer;
    char *endpoint_override;
    int64_t attempt_timeout_ms;
    int max_attempts;
    int retry_quota;
    uint64_t rng;
    pgw_personalize_call *calls; /* in flight, for pgw_personalize_free */
};

typedef enum call_state {
    CALL_WAITING_CREDENTIALS,
    CALL_IN_TRANSFER,
    CALL_BACKING_OFF,
    CALL_FINISHING, /* the answer is ready; the timer delivers it */
} call_state;

struct pgw_personalize_call {
    pgw_personalize *client;
    pgw_personalize_call *prev, *next;
    call_state state;
    char arn[PGW_ARN_MAX_LEN + 1];
    pgw_arn parsed;
    int64_t deadline_ms;
    pgw_personalize_cb cb;
    void *user_data;

    int attempts;
    int quota_spent;       /* retry tokens this call took, refunded on success */
    int refreshed_expired; /* already refreshed once after ExpiredTokenException */
    int cred_pending;      /* a credentials get is outstanding (its callback will come) */
    int cancelled;         /* cancelled while cred_pending: on_credentials frees the call */
    pgw_http_transfer *transfer;
    int64_t attempt_started_ms;
    pgw_credentials *signed_with; /* a reference to the credentials of the last attempt */
    struct event *timer;          /* backoff, and deferred delivery */

    /* the final answer, delivered from the timer so callbacks never run inside _describe */
    pgw_code code;
    char message[512];
    char aws_code[128];
    char request_id[128];
};

static uint64_t next_random(pgw_personalize *c)
{
    /* xorshift64*: plenty for backoff jitter, which needs spread, not secrecy. */
    c->rng ^= c->rng >> 12;
    c->rng ^= c->rng << 25;
    c->rng ^= c->rng >> 27;
    return c->rng * 2685821657736338717ULL;
}

pgw_personalize *pgw_personalize_new(struct event_base *base, pgw_http_client *http,
                                     pgw_credentials_provider *credentials,
                                     const pgw_personalize_options *options)
{
    pgw_personalize *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->http = http;
    c->credentials = credentials;
    c->signer = pgw_sigv4_signer_new();
    c->endpoint_override = options->endpoint_override ? strdup(options->endpoint_override) : NULL;
    c->attempt_timeout_ms = options->attempt_timeout_ms > 0 ? options->attempt_timeout_ms : 10000;
    c->max_attempts = options->max_attempts > 0 ? options->max_attempts : 3;
    c->retry_quota = RETRY_QUOTA_CAPACITY;
    pgw_metrics_set_upstream_retry_quota(c->retry_quota);
    if (getrandom(&c->rng, sizeof(c->rng), 0) != sizeof(c->rng) || c->rng == 0)
        c->rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t)pgw_now_wall_ms();
    if (!c->signer || (options->endpoint_override && !c->endpoint_override)) {
        pgw_personalize_free(c);
        return NULL;
    }
    return c;
}

static void call_free(pgw_personalize_call *call)
{
    pgw_personalize *c = call->client;
    if (call->transfer)
        pgw_http_cancel(call->transfer);
    if (call->timer)
        event_free(call->timer);
    pgw_credentials_unref(call->signed_with);
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    free(call);
}

void pgw_personalize_free(pgw_personalize *c)
{
    if (!c)
        return;
    while (c->calls) {
        /* A credentials callback may still come for this call: detach it first. */
        c->calls->cb = NULL;
        call_free(c->calls);
    }
    pgw_sigv4_signer_free(c->signer);
    free(c->endpoint_override);
    free(c);
}

static void deliver(pgw_personalize_call *call, const pgw_personalize_result *r)
{
    if (call->cb)
        call->cb(r, call->user_data);
}

static void on_timer(evutil_socket_t fd, short what, void *arg);

/* Ends a call with an error, from the timer (so never inside pgw_personalize_describe). */
static void finish_error(pgw_personalize_call *call, pgw_code code, const char *aws_code,
                         const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void finish_error(pgw_personalize_call *call, pgw_code code, const char *aws_code,
                         const char *request_id, const char *fmt, ...)
{
    call->code = code;
    snprintf(call->aws_code, sizeof(call->aws_code), "%s", aws_code ? aws_code : "");
    snprintf(call->request_id, sizeof(call->request_id), "%s", request_id ? request_id : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->message, sizeof(call->message), fmt, ap);
    va_end(ap);
    call->state = CALL_FINISHING;
    struct timeval now = {0, 0};
    evtimer_add(call->timer, &now);
}

static void deliver_error(pgw_personalize_call *call)
{
    pgw_personalize_result r = {
        .code = call->code,
        .message = call->message,
        .aws_error_code = call->aws_code[0] ? call->aws_code : NULL,
        .request_id = call->request_id[0] ? call->request_id : NULL,
        .attempts = call->attempts,
    };
    if (call->code != PGW_NOT_FOUND && call->code != PGW_INVALID_ARGUMENT) {
        pgw_log(PGW_LOG_WARN, "upstream call failed",
                json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "arn", call->arn, "code",
                          pgw_code_name(call->code), "aws_error", call->aws_code, "request_id",
                          call->request_id, "error", call->message, "attempts", call->attempts));
    }
    deliver(call, &r);
    call_free(call);
}

static int64_t remaining_ms(const pgw_personalize_call *call)
{
    return call->deadline_ms ? call->deadline_ms - pgw_now_mono_ms() : INT64_MAX;
}

static void start_attempt(pgw_personalize_call *call);

/* Schedules another attempt after full-jitter backoff if the retry policy allows it. Returns
 * 1 if scheduled, 0 if the caller must give up. */
static int schedule_retry(pgw_personalize_call *call, int timeout)
{
    pgw_personalize *c = call->client;
    if (call->attempts >= c->max_attempts)
        return 0;
    int cost = timeout ? RETRY_TIMEOUT_COST : RETRY_COST;
    if (c->retry_quota < cost)
        return 0;
    int64_t cap = 1000LL << (call->attempts - 1 < 5 ? call->attempts - 1 : 5);
    if (cap > BACKOFF_CAP_MS)
        cap = BACKOFF_CAP_MS;
    int64_t delay = (int64_t)(next_random(c) % (uint64_t)(cap + 1));
    /* A retry that could not finish before the deadline is pointless: give up now. */
    if (remaining_ms(call) <= delay + 50)
        return 0;
    c->retry_quota -= cost;
    call->quota_spent += cost;
    pgw_metrics_upstream_retry();
    pgw_metrics_set_upstream_retry_quota(c->retry_quota);
    call->state = CALL_BACKING_OFF;
    struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
    evtimer_add(call->timer, &tv);
    return 1;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pgw_personalize_call *call = arg;
    if (call->state == CALL_FINISHING)
        deliver_error(call);
    else
        start_attempt(call);
}

static void handle_success(pgw_personalize_call *call, const pgw_http_response *resp,
                           const char *request_id)
{
    pgw_personalize *c = call->client;
    char err[256];
    PersonalizeGateway__V1__BatchInferenceJob *job = NULL;
    if (pgw_job_from_aws_json(resp->body, resp->body_len, &job, err, sizeof(err)) != 0) {
        finish_error(call, PGW_INTERNAL, NULL, request_id,
                     "upstream returned an unreadable DescribeBatchInferenceJob answer: %s "
                     "(request id %s)",
                     err, request_id ? request_id : "none");
        return;
    }
    size_t len = personalize_gateway__v1__batch_inference_job__get_packed_size(job);
    uint8_t *packed = malloc(len ? len : 1);
    if (!packed) {
        pgw_job_free(job);
        finish_error(call, PGW_INTERNAL, NULL, request_id, "out of memory");
        return;
    }
    personalize_gateway__v1__batch_inference_job__pack(job, packed);
    /* A success refunds what this call's retries took from the shared quota (or 1). */
    c->retry_quota += call->quota_spent ? call->quota_spent : 1;
    if (c->retry_quota > RETRY_QUOTA_CAPACITY)
        c->retry_quota = RETRY_QUOTA_CAPACITY;
    pgw_metrics_set_upstream_retry_quota(c->retry_quota);
    pgw_personalize_result r = {
        .code = PGW_OK,
        .message = "OK",
        .request_id = request_id,
        .job = job,
        .job_pb = packed,
        .job_pb_len = len,
        .attempts = call->attempts,
    };
    deliver(call, &r);
    free(packed);
    pgw_job_free(job);
    call_free(call);
}

/* curl re-sends a request by itself when the kept-alive connection it reused turns out dead
 * (the server closed it without answering). AWS saw each of those requests, so each counts as
 * an attempt and a retry, against the attempt bound and the shared quota alike; send_attempt
 * caps how many sends one transfer may make so the bound holds. */
static void count_silent_resends(pgw_personalize_call *call, const pgw_http_response *resp)
{
    pgw_personalize *c = call->client;
    for (int i = 1; i < resp->sends; i++) {
        call->attempts++;
        int cost = RETRY_COST < c->retry_quota ? RETRY_COST : c->retry_quota;
        c->retry_quota -= cost;
        call->quota_spent += cost;
        pgw_metrics_upstream("transport_error", 0);
        pgw_metrics_upstream_retry();
        pgw_metrics_set_upstream_retry_quota(c->retry_quota);
    }
}

static void on_response(const pgw_http_response *resp, void *user_data)
{
    pgw_personalize_call *call = user_data;
    pgw_personalize *c = call->client;
    call->transfer = NULL; /* the http client frees it after this returns */
    double seconds = (double)(pgw_now_mono_ms() - call->attempt_started_ms) / 1000.0;
    count_silent_resends(call, resp);
    pgw_metrics_upstream_transfer(resp->http_version, resp->new_connections);
    const char *request_id =
        resp->transport_error ? NULL : pgw_http_response_header(resp, "x-amzn-RequestId");

    if (resp->transport_error) {
        pgw_metrics_upstream(resp->timed_out ? "timeout" : "transport_error", seconds);
        if (call->deadline_ms && remaining_ms(call) <= 0) {
            finish_error(call, PGW_DEADLINE_EXCEEDED, NULL, NULL,
                         "deadline exceeded waiting for AWS Personalize");
            return;
        }
        if (schedule_retry(call, resp->timed_out))
            return;
        finish_error(call, PGW_UNAVAILABLE, NULL, NULL,
                     "AWS Personalize unreachable after %d attempt(s): %s", call->attempts,
                     resp->error);
        return;
    }
    if (resp->status == 200) {
        pgw_metrics_upstream("ok", seconds);
        handle_success(call, resp, request_id);
        return;
    }

    pgw_aws_error e;
    pgw_aws_error_parse((int)resp->status, pgw_http_response_header(resp, "x-amzn-ErrorType"),
                        resp->body, resp->body_len, &e);
    pgw_metrics_upstream(e.throttling                ? "throttled"
                         : e.status == PGW_NOT_FOUND ? "not_found"
                         : resp->status >= 500       ? "server_error"
                                                     : "client_error",
                         seconds);

    if (e.expired_token && !call->refreshed_expired) {
        /* The credentials expired under us: refresh once and retry at once. */
        call->refreshed_expired = 1;
        pgw_credentials_provider_invalidate(c->credentials, call->signed_with);
        start_attempt(call);
        return;
    }
    if (e.retryable && schedule_retry(call, 0))
        return;
    const char *code = e.code[0] ? e.code : "UnknownError";
    if (e.credentials_problem) {
        finish_error(call, e.status, code, request_id,
                     "AWS rejected the gateway's credentials: %s (request id %s)", code,
                     request_id ? request_id : "none");
        return;
    }
    finish_error(call, e.status, code, request_id, "AWS Personalize: %s: %s (request id %s)", code,
                 e.message[0] ? e.message : "no message", request_id ? request_id : "none");
}

/* Builds, signs and sends one attempt with the given credentials. */
static void send_attempt(pgw_personalize_call *call, pgw_credentials *creds)
{
    pgw_personalize *c = call->client;
    char url[512];
    if (c->endpoint_override)
        snprintf(url, sizeof(url), "%s", c->endpoint_override);
    else if (pgw_arn_default_endpoint(&call->parsed, url, sizeof(url)) != 0) {
        finish_error(call, PGW_INTERNAL, NULL, NULL, "cannot build the upstream URL");
        return;
    }

    /* The Host header is signed, so derive it from the URL exactly as it will be sent. */
    char host[300] = "", path[256] = "/";
    CURLU *u = curl_url();
    char *h = NULL, *port = NULL, *p = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK) {
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
            snprintf(host, sizeof(host), "%s:%s", h, port);
        else
            snprintf(host, sizeof(host), "%s", h);
        if (curl_url_get(u, CURLUPART_PATH, &p, 0) == CURLUE_OK && p[0])
            snprintf(path, sizeof(path), "%s", p);
    }
    curl_free(h);
    curl_free(port);
    curl_free(p);
    curl_url_cleanup(u);
    if (!host[0]) {
        finish_error(call, PGW_INTERNAL, NULL, NULL, "cannot parse the upstream URL");
        return;
    }

    json_t *req = json_pack("{s:s}", "batchInferenceJobArn", call->arn);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        finish_error(call, PGW_INTERNAL, NULL, NULL, "out of memory");
        return;
    }

    const pgw_sigv4_header to_sign[] = {
        {"Host", host},
        {"Content-Type", "application/x-amz-json-1.1"},
        {"X-Amz-Target", "AmazonPersonalize.DescribeBatchInferenceJob"},
    };
    pgw_sigv4_request sreq = {
        .method = "POST",
        .path = path,
        .headers = to_sign,
        .n_headers = sizeof(to_sign) / sizeof(to_sign[0]),
        .body = body,
        .body_len = strlen(body),
    };
    pgw_sigv4_credentials sc = {creds->access_key_id, creds->secret_access_key,
                                creds->session_token};
    pgw_sigv4_context ctx = {
        .credentials = &sc,
        .region = call->parsed.region, /* always the ARN's region, override or not */
        .service = "personalize",
        .now = (time_t)(pgw_now_wall_ms() / 1000),
    };
    pgw_sigv4_output out = {0};
    if (pgw_sigv4_sign(c->signer, &sreq, &ctx, &out) != 0) {
        free(body);
        finish_error(call, PGW_INTERNAL, NULL, NULL, "cannot sign the upstream request: %s",
                     pgw_sigv4_signer_errstr(c->signer));
        return;
    }

    /* "Name: value" lines for curl; the signer's output headers follow ours. */
    char lines[3 + PGW_SIGV4_MAX_OUT_HDRS][64 + 1] = {{0}};
    char *heap_lines[3 + PGW_SIGV4_MAX_OUT_HDRS] = {0};
    const char *headers[3 + PGW_SIGV4_MAX_OUT_HDRS + 1] = {0};
    size_t n = 0;
    int ok = 1;
    for (size_t i = 0; i < sreq.n_headers + out.n_headers && ok; i++) {
        const pgw_sigv4_header *hd =
            i < sreq.n_headers ? &to_sign[i] : &out.headers[i - sreq.n_headers];
        size_t need = strlen(hd->name) + 2 + strlen(hd->value) + 1;
        char *line = need <= sizeof(lines[0]) ? lines[n] : (heap_lines[n] = malloc(need));
        ok = line != NULL;
        if (ok) {
            snprintf(line, need, "%s: %s", hd->name, hd->value);
            headers[n++] = line;
        }
    }
    int64_t timeout = c->attempt_timeout_ms;
    int64_t left = remaining_ms(call);
    if (left < timeout)
        timeout = left;
    /* This attempt plus the retries still allowed (by the attempt bound and by the quota):
     * the most times curl may send it, counting its own re-sends on a dead connection. */
    int retries_left = c->max_attempts - call->attempts - 1;
    if (retries_left > c->retry_quota / RETRY_COST)
        retries_left = c->retry_quota / RETRY_COST;
    pgw_http_request hreq = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = timeout,
        .max_sends = 1 + (retries_left > 0 ? retries_left : 0),
    };
    if (ok && timeout > 0) {
        call->transfer = pgw_http_start(c->http, &hreq, on_response, call);
        if (call->transfer) {
            call->attempts++;
            call->attempt_started_ms = pgw_now_mono_ms();
            pgw_credentials_unref(call->signed_with);
            call->signed_with = pgw_credentials_ref(creds);
            call->state = CALL_IN_TRANSFER;
        }
    }
    /* The header lines held the signature and token: wipe before release. */
    for (size_t i = 0; i < n; i++)
        OPENSSL_cleanse((void *)headers[i], strlen(headers[i]));
    for (size_t i = 0; i < sizeof(heap_lines) / sizeof(heap_lines[0]); i++)
        free(heap_lines[i]);
    pgw_sigv4_output_cleanup(&out);
    free(body);
    if (timeout <= 0)
        finish_error(call, PGW_DEADLINE_EXCEEDED, NULL, NULL,
                     "deadline exceeded before the upstream call");
    else if (!call->transfer)
        finish_error(call, PGW_INTERNAL, NULL, NULL, "cannot start the upstream request");
}

static void on_credentials(pgw_credentials *creds, const char *error, void *user_data)
{
    pgw_personalize_call *call = user_data;
    call->cred_pending = 0;
    if (call->cancelled) {
        call_free(call); /* pgw_personalize_cancel left the free to us */
        return;
    }
    if (!creds) {
        finish_error(call, PGW_UNAVAILABLE, NULL, NULL, "no AWS credentials available: %s",
                     error ? error : "no source configured");
        return;
    }
    if (pgw_credentials_expired(creds, pgw_now_wall_ms(), CREDENTIALS_EXPIRY_MARGIN_MS)) {
        finish_error(call, PGW_UNAVAILABLE, NULL, NULL,
                     "AWS credentials from %s have expired and could not be refreshed",
                     creds->source);
        return;
    }
    send_attempt(call, creds);
}

static void start_attempt(pgw_personalize_call *call)
{
    call->state = CALL_WAITING_CREDENTIALS;
    call->cred_pending = 1;
    if (pgw_credentials_provider_get(call->client->credentials, on_credentials, call) != 0) {
        call->cred_pending = 0;
        finish_error(call, PGW_UNAVAILABLE, NULL, NULL, "no AWS credentials available");
    }
}

pgw_personalize_call *pgw_personalize_describe(pgw_personalize *c, const char *arn,
                                               const pgw_arn *parsed, int64_t deadline_mono_ms,
                                               pgw_personalize_cb cb, void *user_data)
{
    pgw_personalize_call *call = calloc(1, sizeof(*call));
    if (!call)
        return NULL;
    call->client = c;
    call->timer = evtimer_new(c->base, on_timer, call);
    if (!call->timer) {
        free(call);
        return NULL;
    }
    snprintf(call->arn, sizeof(call->arn), "%s", arn);
    call->parsed = *parsed;
    call->deadline_ms = deadline_mono_ms;
    call->cb = cb;
    call->user_data = user_data;
    call->next = c->calls;
    if (call->next)
        call->next->prev = call;
    c->calls = call;
    start_attempt(call);
    return call;
}

void pgw_personalize_cancel(pgw_personalize_call *call)
{
    if (!call)
        return;
    call->cb = NULL;
    if (call->cred_pending) {
        /* The provider will still call on_credentials with this call: free it there. */
        call->cancelled = 1;
        return;
    }
    call_free(call);
}
