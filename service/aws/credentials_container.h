/* Container credentials: ECS task roles and EKS Pod Identity. GET on
 * AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (on http://169.254.170.2) or
 * AWS_CONTAINER_CREDENTIALS_FULL_URI, with an Authorization header from
 * AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE (re-read on every fetch: Pod Identity rotates it) or
 * AWS_CONTAINER_AUTHORIZATION_TOKEN. A full URI over plain http must point at loopback,
 * 169.254.170.2, 169.254.170.23 or fd00:ec2::23 (the SDKs' allow-list); https may go anywhere.
 * Loop thread only. */
#ifndef PGW_CREDENTIALS_CONTAINER_H
#define PGW_CREDENTIALS_CONTAINER_H

#include <stddef.h>

#include "service/aws/credentials.h"
#include "service/aws/http_client.h"

#define PGW_CONTAINER_TIMEOUT_MS 5000

/* Nonzero when `url` may be used for container credentials (the allow-list above). */
int pgw_credentials_container_url_allowed(const char *url);

/* The provider configured by the environment, or NULL: when neither URI variable is set
 * (*err left empty), or when the configuration is invalid (message in err). One get at a
 * time. */
pgw_credentials_provider *pgw_credentials_provider_container_from_env(pgw_http_client *http,
                                                                      char *err, size_t err_len);

#endif
