/* Pieces shared by the credentials sources (web identity, profile, container, IMDS): timestamp
 * and JSON parsing of temporary credentials, small secret files, URL checks, and the
 * one-transfer-at-a-time bookkeeping every source needs.
 *
 * Nothing here logs. Error texts never contain a secret: they name the field or the HTTP
 * status, never a value. */
#ifndef PGW_CREDENTIALS_SOURCE_H
#define PGW_CREDENTIALS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "service/aws/credentials.h"

/* Largest token file (web identity, container authorization) read. Kubernetes service account
 * tokens are 1-2 KiB. */
#define PGW_CREDENTIALS_MAX_TOKEN_FILE 16384
/* Largest answer accepted from STS, a container endpoint or IMDS. */
#define PGW_CREDENTIALS_MAX_ANSWER (64 * 1024)

/* Parses an ISO 8601 / RFC 3339 UTC time as AWS writes it ("2024-05-01T12:34:56Z", with
 * optional fraction, "Z" or a numeric offset) into milliseconds since the epoch. Returns 0 or
 * -1. No I/O. */
int pgw_credentials_parse_time(const char *text, int64_t *out_ms);

/* Reads a small file (a token) into a new NUL-terminated heap string, without surrounding
 * whitespace. Returns it (free with pgw_credentials_secret_free), or NULL with a message in
 * err naming the path but never the content. Empty files and files over max_bytes fail. */
char *pgw_credentials_read_secret_file(const char *path, size_t max_bytes, char *err,
                                       size_t err_len);

/* Wipes (OPENSSL_cleanse) and frees a heap string. NULL is a no-op. */
void pgw_credentials_secret_free(char *s);

/* Builds credentials from the JSON that container endpoints and IMDS answer
 * ({"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}); IMDS' "Code" must be "Success"
 * when present. Returns new credentials (one reference) or NULL with a message in err. The
 * parsed copies of the secrets are wiped before release. */
pgw_credentials *pgw_credentials_from_json(const char *body, size_t len, const char *source,
                                           char *err, size_t err_len);

/* Wipes a response body the HTTP client handed us (it held secrets) in place. */
void pgw_credentials_wipe_body(const char *body, size_t len);

/* Splits a URL with libcurl's URL API. host gets "host" or "host:port" (as curl sends the Host
 * header), path the path ("/" when empty), scheme the lowercase scheme; bare_host, when not
 * NULL, the host alone (IPv6 without brackets). Returns 0 or -1. */
int pgw_credentials_url_parts(const char *url, char *scheme, size_t scheme_len, char *host,
                              size_t host_len, char *path, size_t path_len, char *bare_host,
                              size_t bare_host_len);

/* Nonzero for a true value of an AWS boolean setting ("true", any case). */
int pgw_credentials_env_true(const char *value);

/* getenv, but NULL for unset or empty. */
const char *pgw_credentials_getenv(const char *name);

/* A pending get: the callback a source owes its caller. Sources handle one get at a time (the
 * cached provider in front of them makes sure of that). */
typedef struct pgw_credentials_pending {
    pgw_credentials_cb cb;
    void *user_data;
    int busy;
} pgw_credentials_pending;

/* Fires the pending callback once (clearing it first, so the callback may start another get). */
void pgw_credentials_pending_finish(pgw_credentials_pending *p, pgw_credentials *creds,
                                    const char *error);

#endif
