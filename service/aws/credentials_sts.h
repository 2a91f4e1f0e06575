/* AWS STS (query protocol) for the credentials sources: AssumeRoleWithWebIdentity (unsigned)
 * and AssumeRole (SigV4, service "sts"), over the event loop's HTTP client, answers parsed
 * with expat.
 *
 * Endpoint, as the AWS SDKs resolve it: AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL, else the
 * regional endpoint https://sts.<region>.amazonaws.com (".amazonaws.com.cn" for cn-* regions),
 * else the global https://sts.amazonaws.com when no region is known. */
#ifndef PGW_CREDENTIALS_STS_H
#define PGW_CREDENTIALS_STS_H

#include <stddef.h>
#include <stdint.h>

#include "service/aws/credentials.h"
#include "service/aws/http_client.h"

#define PGW_STS_TIMEOUT_MS 10000
#define PGW_STS_URL_MAX    512

/* Writes the STS endpoint URL for `region` (may be NULL) into url. Reads the AWS_ENDPOINT_URL*
 * environment. Returns 0, or -1 when it does not fit or, without an override, when region is
 * not a valid AWS region name (it becomes part of the host name). */
int pgw_sts_endpoint(const char *region, char *url, size_t url_len);

/* The signing region for an STS endpoint: `region` when known, else "us-east-1" (the global
 * endpoint's). */
const char *pgw_sts_signing_region(const char *region);

/* Parses an STS answer (HTTP status and XML body). On a 200 with <Credentials>, returns 0 and
 * sets *out (one reference, `source` as its source). Otherwise returns -1 with the AWS error
 * code and message (or what was wrong with the XML) in err. The parsed copies of the secrets
 * are wiped. No I/O. */
int pgw_sts_parse_answer(long http_status, const char *body, size_t len, const char *source,
                         pgw_credentials **out, char *err, size_t err_len);

/* Default session name when none is configured: "personalize-gateway-<unix ms>". */
void pgw_sts_default_session_name(char *out, size_t out_len);

typedef struct pgw_sts_call pgw_sts_call;

/* What one STS call needs. Strings are copied. */
typedef struct pgw_sts_call_options {
    pgw_http_client *http;
    const char *url;                /* from pgw_sts_endpoint */
    const char *region;             /* signing region (AssumeRole only) */
    const char *action;             /* "AssumeRoleWithWebIdentity" or "AssumeRole" */
    const char *role_arn;           /* required */
    const char *session_name;       /* required */
    const char *web_identity_token; /* AssumeRoleWithWebIdentity: the token (secret) */
    const char *external_id;        /* AssumeRole: optional */
    int duration_seconds;           /* optional, 0: STS' default */
    const pgw_credentials *signing; /* AssumeRole: the source credentials */
    const char *source;             /* the name given to the credentials obtained */
} pgw_sts_call_options;

/* Starts a call. Returns a handle (for pgw_sts_call_cancel) and cb fires exactly once later
 * with the credentials or an error; or returns NULL with a message in err and cb never fires.
 * The handle is freed by the library after cb returns. */
pgw_sts_call *pgw_sts_call_start(const pgw_sts_call_options *options, pgw_credentials_cb cb,
                                 void *user_data, char *err, size_t err_len);

/* Stops a call in flight; its callback will not fire. Not from inside the callback. */
void pgw_sts_call_cancel(pgw_sts_call *call);

#endif
