/* Credentials from the shared AWS files: ~/.aws/credentials and ~/.aws/config (or
 * AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE), profile AWS_PROFILE (default "default"). In
 * the config file a profile is "[profile NAME]" (and "[default]"); in the credentials file
 * "[NAME]"; the credentials file wins where both set a key. A profile gives:
 *  - aws_access_key_id + aws_secret_access_key (+ aws_session_token): static keys;
 *  - role_arn + web_identity_token_file (+ role_session_name): STS AssumeRoleWithWebIdentity;
 *  - role_arn + source_profile (another profile resolved the same way, up to 4 deep; a profile
 *    naming itself uses its own keys) or credential_source (Environment, Ec2InstanceMetadata,
 *    EcsContainer): STS AssumeRole signed with the source's credentials, with external_id,
 *    role_session_name and duration_seconds when set.
 * credential_process and SSO profiles are not supported (an error says so). The files are read
 * once, at creation; token files at every fetch. */
#ifndef PGW_CREDENTIALS_PROFILE_H
#define PGW_CREDENTIALS_PROFILE_H

#include <stddef.h>

#include "service/aws/credentials.h"
#include "service/aws/credentials_ini.h"
#include "service/aws/http_client.h"

#define PGW_PROFILE_MAX_DEPTH 4

/* Builds the provider for profile `name` from parsed files (either may be NULL). Returns it,
 * or NULL with a message in err (naming the profile and the problem, never a value). No I/O
 * besides what the providers built do later. */
pgw_credentials_provider *pgw_credentials_provider_profile_new(pgw_http_client *http,
                                                               const pgw_ini *config,
                                                               const pgw_ini *credentials,
                                                               const char *name, char *err,
                                                               size_t err_len);

/* Nonzero when profile `name` appears in either file. */
int pgw_credentials_profile_exists(const pgw_ini *config, const pgw_ini *credentials,
                                   const char *name);

/* The value of `key` for profile `name` (credentials file first), or NULL. Borrowed. */
const char *pgw_credentials_profile_get(const pgw_ini *config, const pgw_ini *credentials,
                                        const char *name, const char *key);

/* Reads and parses the shared files the environment names. *config and *credentials are set
 * (NULL where a file is absent or empty). Returns 0, or -1 with a message in err when a file
 * exists but cannot be read or parsed. */
int pgw_credentials_profile_load_files(pgw_ini **config, pgw_ini **credentials, char *err,
                                       size_t err_len);

/* The provider for the environment's profile, or NULL: when the profile is in neither file
 * and AWS_PROFILE is unset (*err left empty: the source is not configured), or on an error
 * (message in err; a profile named by AWS_PROFILE but absent is an error). */
pgw_credentials_provider *pgw_credentials_provider_profile_from_env(pgw_http_client *http,
                                                                    char *err, size_t err_len);

#endif
