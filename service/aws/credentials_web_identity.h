/* Web identity credentials (IRSA on EKS): a token file (re-read at every fetch, because the
 * kubelet rotates it) exchanged for temporary credentials with STS AssumeRoleWithWebIdentity.
 * Configured by AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME), or by
 * web_identity_token_file + role_arn in a profile. Loop thread only. */
#ifndef PGW_CREDENTIALS_WEB_IDENTITY_H
#define PGW_CREDENTIALS_WEB_IDENTITY_H

#include "service/aws/credentials.h"
#include "service/aws/http_client.h"

typedef struct pgw_credentials_web_identity_options {
    pgw_http_client *http;    /* borrowed, must outlive the provider */
    const char *token_file;   /* required */
    const char *role_arn;     /* required */
    const char *session_name; /* NULL: a generated name */
    const char *region;       /* for the regional STS endpoint; NULL: global */
    const char *source;       /* name given to the credentials ("web_identity", "profile") */
} pgw_credentials_web_identity_options;

/* Creates the provider (strings copied). Every get reads the token file and calls STS; one get
 * at a time (put a cached provider in front). Returns NULL with a message in err when the
 * options are incomplete. */
pgw_credentials_provider *
pgw_credentials_provider_web_identity_new(const pgw_credentials_web_identity_options *options,
                                          char *err, size_t err_len);

/* The provider configured by AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or NULL when they
 * are not both set (*err left empty) or on failure (message in err). */
pgw_credentials_provider *pgw_credentials_provider_web_identity_from_env(pgw_http_client *http,
                                                                         char *err, size_t err_len);

#endif
