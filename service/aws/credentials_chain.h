/* The AWS SDKs' default credentials chain: the first source that is configured wins, in this
 * order (the Java and Go SDKs' order):
 *   1. environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
 *   2. web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN;
 *   3. shared files: the AWS_PROFILE (or "default") profile, when it holds credential settings;
 *   4. container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI;
 *   5. EC2 instance metadata (IMDSv2), unless AWS_EC2_METADATA_DISABLED=true.
 * "Configured" is decided once, at start, from the environment and files: a configured source
 * that then fails is retried (the gateway stays unready), never silently replaced by a later
 * one. The chosen source sits behind the caching provider (credentials_cached.h). */
#ifndef PGW_CREDENTIALS_CHAIN_H
#define PGW_CREDENTIALS_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "service/aws/credentials.h"
#include "service/aws/http_client.h"

struct event_base;

typedef enum pgw_credentials_source_kind {
    PGW_CREDENTIALS_SOURCE_NONE = 0,
    PGW_CREDENTIALS_SOURCE_ENVIRONMENT,
    PGW_CREDENTIALS_SOURCE_WEB_IDENTITY,
    PGW_CREDENTIALS_SOURCE_PROFILE,
    PGW_CREDENTIALS_SOURCE_CONTAINER,
    PGW_CREDENTIALS_SOURCE_IMDS,
} pgw_credentials_source_kind;

/* "environment", "web_identity", "profile", "container", "imds" or "none": the label used in
 * logs and metrics. */
const char *pgw_credentials_source_name(pgw_credentials_source_kind kind);

typedef struct pgw_credentials_chain_options {
    struct event_base *base;
    pgw_http_client *http;     /* borrowed: must outlive the provider */
    int64_t refresh_window_ms; /* see credentials_cached.h; 0: default */
    int eager;                 /* fetch at once when the loop runs (readiness) */
    pgw_credentials_change_cb on_change;
    void *on_change_data;
} pgw_credentials_chain_options;

/* Picks the first configured source and returns it behind a caching provider; *kind (may be
 * NULL) says which. Returns NULL when no source is configured or the configured one is
 * invalid, with a message in err (never a secret) and *kind set to the source at fault (NONE
 * when none is configured). */
pgw_credentials_provider *pgw_credentials_chain_new(const pgw_credentials_chain_options *options,
                                                    pgw_credentials_source_kind *kind, char *err,
                                                    size_t err_len);

#endif
