/* AWS Signature Version 4 (header-based) request signing.
 *
 * A leaf module: pure functions over OpenSSL 3 (SHA-256, HMAC-SHA256). It does no I/O and
 * reads no clock: the signing time is an input, so every result is reproducible in tests.
 *
 * The signing stages are exposed separately (canonical request, string to sign, signing key,
 * signature) so each can be checked against the official AWS test suite; pgw_sigv4_sign()
 * chains them and returns the headers the caller must add to the request.
 *
 * Canonicalisation follows the SigV4 rules for every service except S3 (the rules botocore and
 * aws-c-auth apply):
 *  - path: the path as sent on the wire; dot segments removed and duplicate slashes collapsed
 *    (botocore's remove_dot_segments), then every byte outside the unreserved set
 *    A-Z a-z 0-9 - . _ ~ and '/' percent-encoded, so an already-encoded path is encoded a
 *    second time ("%20" becomes "%2520"), as AWS expects for non-S3 services;
 *  - query: split on '&', each name and value percent-decoded then re-encoded with the
 *    unreserved set, pairs sorted by encoded name then encoded value; empty pieces ("a&&b")
 *    are ignored and a name without '=' gets an empty value;
 *  - headers: names lowercased, values trimmed with runs of whitespace collapsed to one space,
 *    sorted by name (stable), duplicates joined with ',' in their original order. The headers
 *    botocore never signs (expect, user-agent, x-amzn-trace-id: proxies and tracers rewrite
 *    them) are left out of the signature here too.
 *
 * Secrets: the secret access key and session token never appear in an error message; temporary
 * buffers that held them are wiped with OPENSSL_cleanse.
 */
#ifndef PGW_AWS_SIGV4_H
#define PGW_AWS_SIGV4_H

#include <stddef.h>
#include <time.h>

/* Bounds on inputs: anything larger is rejected with an error, never truncated. */
#define PGW_SIGV4_MAX_METHOD       16
#define PGW_SIGV4_MAX_PATH         4096
#define PGW_SIGV4_MAX_QUERY        8192
#define PGW_SIGV4_MAX_QUERY_PARAMS 128
#define PGW_SIGV4_MAX_HEADERS      64
#define PGW_SIGV4_MAX_HEADER_NAME  128
#define PGW_SIGV4_MAX_HEADER_VALUE 16384 /* STS session tokens can run to several KiB */
#define PGW_SIGV4_MAX_CANONICAL    (256 * 1024)
#define PGW_SIGV4_MAX_SCOPE_PART   64 /* region, service */
#define PGW_SIGV4_MAX_KEY_ID       128
#define PGW_SIGV4_MAX_SECRET       256

#define PGW_SIGV4_ERR_LEN      128
#define PGW_SIGV4_AMZ_DATE_LEN 16  /* "YYYYMMDDTHHMMSSZ" */
#define PGW_SIGV4_HEX_LEN      64  /* hex SHA-256 / HMAC-SHA256 */
#define PGW_SIGV4_KEY_LEN      32  /* derived signing key, bytes */
#define PGW_SIGV4_MAX_STS      256 /* string to sign */
#define PGW_SIGV4_CACHE_SLOTS  8
#define PGW_SIGV4_MAX_OUT_HDRS 4

/* Flags for pgw_sigv4_context.flags and pgw_sigv4_canonical_request(). */
enum {
    /* Use the path as given (still percent-encoded), without removing dot segments or duplicate
     * slashes: the S3 habit, kept for the test suite's "unnormalized" cases. */
    PGW_SIGV4_NO_PATH_NORMALIZE = 1u << 0,
    /* Also add and sign an X-Amz-Content-Sha256 header (S3, and the suite's sign_body cases).
     * Not needed for JSON-protocol services such as Personalize. */
    PGW_SIGV4_SIGN_CONTENT_SHA256 = 1u << 1,
};

/* One header: both strings NUL-terminated, owned by whoever built the array. */
typedef struct pgw_sigv4_header {
    const char *name;
    const char *value;
} pgw_sigv4_header;

/* The request to sign. Nothing here is copied or kept past the call. */
typedef struct pgw_sigv4_request {
    const char *method;              /* e.g. "POST"; letters only, uppercased when signed */
    const char *path;                /* as sent on the wire, starts with '/'; NULL or "" = "/" */
    const char *query;               /* raw query string without '?'; NULL or "" = none */
    const pgw_sigv4_header *headers; /* must include "host" for pgw_sigv4_sign() */
    size_t n_headers;
    const void *body; /* may be NULL when body_len is 0 */
    size_t body_len;
} pgw_sigv4_request;

/* AWS credentials, borrowed for the duration of a call. */
typedef struct pgw_sigv4_credentials {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL or "" when the credentials are long-term */
} pgw_sigv4_credentials;

/* Everything besides the request that a signature depends on. */
typedef struct pgw_sigv4_context {
    const pgw_sigv4_credentials *credentials;
    const char *region;  /* e.g. "us-east-1" */
    const char *service; /* e.g. "personalize" */
    time_t now;          /* signing time, seconds since the epoch (UTC) */
    unsigned flags;      /* PGW_SIGV4_* flags, normally 0 */
} pgw_sigv4_context;

/* The headers pgw_sigv4_sign() asks the caller to add, in this order: X-Amz-Date,
 * X-Amz-Security-Token (only with a session token), X-Amz-Content-Sha256 (only with
 * PGW_SIGV4_SIGN_CONTENT_SHA256), Authorization. headers[i] point into this struct and the
 * heap strings it owns: do not copy the struct; release it with pgw_sigv4_output_cleanup(). */
typedef struct pgw_sigv4_output {
    pgw_sigv4_header headers[PGW_SIGV4_MAX_OUT_HDRS];
    size_t n_headers;
    char amz_date[PGW_SIGV4_AMZ_DATE_LEN + 1];
    char content_sha256[PGW_SIGV4_HEX_LEN + 1];
    char signature[PGW_SIGV4_HEX_LEN + 1];
    char *authorization;  /* heap */
    char *security_token; /* heap copy, wiped on cleanup; NULL without a session token */
} pgw_sigv4_output;

/* A signer: holds the small cache of derived signing keys and the last error.
 *
 * Thread safety: none. A signer is meant to be used from the single event-loop thread that owns
 * all outbound I/O; give each other thread its own signer if that ever changes. */
typedef struct pgw_sigv4_signer pgw_sigv4_signer;

/* Creates a signer with an empty key cache. Returns NULL only when out of memory. The caller
 * owns the result and releases it with pgw_sigv4_signer_free(). */
pgw_sigv4_signer *pgw_sigv4_signer_new(void);

/* Wipes the cached signing keys and frees the signer. NULL is a no-op. */
void pgw_sigv4_signer_free(pgw_sigv4_signer *s);

/* Signs req for ctx. On success returns 0 and fills *out (which the caller then releases with
 * pgw_sigv4_output_cleanup()); on failure returns -1, leaves *out empty (cleanup is still
 * safe), and pgw_sigv4_signer_errstr() says why. The request must carry a "host" header and must
 * not already carry Authorization, X-Amz-Date or X-Amz-Security-Token. The session token, when
 * present, is signed (as botocore does). The derived key is cached per (secret, date, region,
 * service): the four-HMAC derivation runs once per day per region and service. */
int pgw_sigv4_sign(pgw_sigv4_signer *s, const pgw_sigv4_request *req, const pgw_sigv4_context *ctx,
                   pgw_sigv4_output *out);

/* Releases what a pgw_sigv4_sign() output owns and zeroes it. Safe on a zeroed or failed
 * output, and twice. */
void pgw_sigv4_output_cleanup(pgw_sigv4_output *out);

/* The reason for the signer's last failure (empty after a success). Never contains a secret.
 * Owned by the signer, valid until its next call. */
const char *pgw_sigv4_signer_errstr(const pgw_sigv4_signer *s);

/* How many signing keys this signer has derived so far (cache misses); for tests and metrics. */
unsigned long pgw_sigv4_signer_derivations(const pgw_sigv4_signer *s);

/* Formats now as the SigV4 timestamp "YYYYMMDDTHHMMSSZ" into out. Returns 0, or -1 when the
 * time cannot be represented with a four-digit year. */
int pgw_sigv4_format_date(time_t now, char out[PGW_SIGV4_AMZ_DATE_LEN + 1]);

/* Stage 1: builds the canonical request of req, signing exactly the headers in req (so the
 * caller includes x-amz-date and the others itself; up to PGW_SIGV4_MAX_HEADERS +
 * PGW_SIGV4_MAX_OUT_HDRS of them), with the payload hash of req->body. flags
 * takes PGW_SIGV4_NO_PATH_NORMALIZE. On success returns 0 and sets *canonical and, if
 * signed_headers is not NULL, *signed_headers ("host;x-amz-date"), both heap strings the caller
 * releases with pgw_sigv4_string_free(). On failure returns -1 with a message in err (which may
 * be NULL). */
int pgw_sigv4_canonical_request(const pgw_sigv4_request *req, unsigned flags, char **canonical,
                                char **signed_headers, char *err, size_t err_len);

/* Stage 2: writes the string to sign for canonical_request into out (out_len bytes, at least
 * PGW_SIGV4_MAX_STS is always enough). amz_date is the "YYYYMMDDTHHMMSSZ" timestamp. Returns 0,
 * or -1 with a message in err. */
int pgw_sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                             const char *canonical_request, char *out, size_t out_len, char *err,
                             size_t err_len);

/* Stage 3a: derives the signing key HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region),
 * service), "aws4_request") into key. date is "YYYYMMDD" (longer strings are cut at 8 chars, so
 * an amz_date works too). Returns 0, or -1 with a message in err. The caller should
 * OPENSSL_cleanse key when done. */
int pgw_sigv4_derive_key(const char *secret_access_key, const char *date, const char *region,
                         const char *service, unsigned char key[PGW_SIGV4_KEY_LEN], char *err,
                         size_t err_len);

/* Stage 3b: writes the lowercase hex HMAC-SHA256 of string_to_sign under key into hex. Returns
 * 0, or -1 with a message in err. */
int pgw_sigv4_signature(const unsigned char key[PGW_SIGV4_KEY_LEN], const char *string_to_sign,
                        char hex[PGW_SIGV4_HEX_LEN + 1], char *err, size_t err_len);

/* Wipes and frees a string returned by pgw_sigv4_canonical_request() (it may contain the
 * session token). NULL is a no-op. */
void pgw_sigv4_string_free(char *s);

#endif
