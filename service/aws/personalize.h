/* The Personalize client: DescribeBatchInferenceJob over AWS JSON 1.1, signed with SigV4 for
 * the ARN's own region, with the AWS SDKs' "standard" retry mode (at most N attempts, full
 * jitter backoff, a retry quota shared by all calls), never retrying past the caller's
 * deadline. Loop thread only. */
#ifndef PGW_PERSONALIZE_H
#define PGW_PERSONALIZE_H

#include <stddef.h>
#include <stdint.h>

#include "service/aws/arn.h"
#include "service/aws/credentials.h"
#include "service/aws/http_client.h"
#include "service/status.h"

typedef struct pgw_personalize pgw_personalize;
typedef struct pgw_personalize_call pgw_personalize_call;
struct PersonalizeGateway__V1__BatchInferenceJob;
struct event_base;

typedef struct pgw_personalize_options {
    const char *endpoint_override; /* AWS_ENDPOINT_URL(_PERSONALIZE), or NULL */
    int64_t attempt_timeout_ms;
    int max_attempts;
} pgw_personalize_options;

/* Borrows base, http and credentials (all must outlive the client). */
pgw_personalize *pgw_personalize_new(struct event_base *base, pgw_http_client *http,
                                     pgw_credentials_provider *credentials,
                                     const pgw_personalize_options *options);

/* Cancels calls in flight (no callbacks) and frees the client. */
void pgw_personalize_free(pgw_personalize *client);

/* The outcome. Borrowed: valid while the callback runs. */
typedef struct pgw_personalize_result {
    pgw_code code;
    const char *message;        /* never NULL; names the AWS code and request id if any */
    const char *aws_error_code; /* or NULL */
    const char *request_id;     /* x-amzn-RequestId of the last attempt, or NULL */
    const struct PersonalizeGateway__V1__BatchInferenceJob *job; /* OK only */
    const uint8_t *job_pb;                                       /* the job packed, OK only */
    size_t job_pb_len;
    int attempts;
} pgw_personalize_result;

typedef void (*pgw_personalize_cb)(const pgw_personalize_result *result, void *user_data);

/* Describes the job named by `arn` (already validated and parsed into `parsed`). The callback
 * fires exactly once, never before this returns, unless the call is cancelled. Returns NULL only
 * when out of memory (no callback). deadline_mono_ms 0 = no caller deadline. */
pgw_personalize_call *pgw_personalize_describe(pgw_personalize *client, const char *arn,
                                               const pgw_arn *parsed, int64_t deadline_mono_ms,
                                               pgw_personalize_cb cb, void *user_data);

/* Stops a call; its callback will not fire. Not from inside its own callback. */
void pgw_personalize_cancel(pgw_personalize_call *call);

#endif
