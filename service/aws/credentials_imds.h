/* EC2 instance metadata credentials, IMDSv2 only: PUT /latest/api/token (a session token with
 * a 21600 s TTL, kept and reused until shortly before it expires), then GET
 * /latest/meta-data/iam/security-credentials/ (the role name) and .../<role> (the credentials),
 * with the token in X-aws-ec2-metadata-token. AWS_EC2_METADATA_SERVICE_ENDPOINT overrides
 * http://169.254.169.254; AWS_EC2_METADATA_DISABLED=true turns the source off. Every request
 * has a 1 s timeout, as in the SDKs, so a machine outside EC2 learns it quickly and never
 * stalls. Loop thread only. */
#ifndef PGW_CREDENTIALS_IMDS_H
#define PGW_CREDENTIALS_IMDS_H

#include <stddef.h>

#include "service/aws/credentials.h"
#include "service/aws/http_client.h"

#define PGW_IMDS_TIMEOUT_MS       1000
#define PGW_IMDS_TOKEN_TTL_S      21600
#define PGW_IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"

/* The provider, or NULL when AWS_EC2_METADATA_DISABLED is true (*err left empty) or on
 * failure (message in err). One get at a time. */
pgw_credentials_provider *pgw_credentials_provider_imds_from_env(pgw_http_client *http, char *err,
                                                                 size_t err_len);

#endif
