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

#define PGW_IMDS_MAX_TOKEN 256 /* bytes of session token accepted */
#define PGW_IMDS_MAX_ROLE  64  /* IAM role names are 1..64 characters */

/* Checks IMDS' session token answer (PUT /latest/api/token): 1..PGW_IMDS_MAX_TOKEN bytes of
 * printable ASCII without spaces, since it is sent back in a header. Copies it NUL-terminated
 * into out (out_len > PGW_IMDS_MAX_TOKEN). Returns 0, or -1 (out is then ""). No I/O. */
int pgw_imds_parse_token(const char *body, size_t len, char *out, size_t out_len);

/* Takes the role name from IMDS' answer to GET .../security-credentials/: its first line,
 * without trailing blanks, which must be an IAM role name ([A-Za-z0-9+=,.@_-], 1..64, not "."
 * or "..") because it becomes a path segment of the next request. Copies it NUL-terminated
 * into out (out_len > PGW_IMDS_MAX_ROLE). Returns 0, or -1 (out is then ""). No I/O. */
int pgw_imds_parse_role(const char *body, size_t len, char *out, size_t out_len);

/* The provider, or NULL when AWS_EC2_METADATA_DISABLED is true (*err left empty) or on
 * failure (message in err). One get at a time. */
pgw_credentials_provider *pgw_credentials_provider_imds_from_env(pgw_http_client *http, char *err,
                                                                 size_t err_len);

#endif
