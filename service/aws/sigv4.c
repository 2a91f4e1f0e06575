/* AWS Signature Version 4 signing; see sigv4.h for the rules applied and the API contract. */
#include "service/aws/sigv4.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALGORITHM  "AWS4-HMAC-SHA256"
#define TERMINATOR "aws4_request"
/* The canonical-request stage also signs the headers pgw_sigv4_sign() adds itself. */
#define MAX_SIGNED_HEADERS (PGW_SIGV4_MAX_HEADERS + PGW_SIGV4_MAX_OUT_HDRS)

struct cache_entry {
    int used;
    unsigned long last_use;
    unsigned char secret_hash[32]; /* SHA-256 of the secret: the secret itself is never kept */
    char date[9];
    char region[PGW_SIGV4_MAX_SCOPE_PART + 1];
    char service[PGW_SIGV4_MAX_SCOPE_PART + 1];
    unsigned char key[PGW_SIGV4_KEY_LEN];
};

struct pgw_sigv4_signer {
    struct cache_entry cache[PGW_SIGV4_CACHE_SLOTS];
    unsigned long tick;
    unsigned long derivations;
    char errstr[PGW_SIGV4_ERR_LEN];
};

/* ---- small helpers ------------------------------------------------------------------------- */

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A growable string with a hard maximum. Growth copies into a fresh block and wipes the old
 * one (no realloc), because these buffers may hold the session token. */
typedef struct sbuf {
    char *p;
    size_t len, cap, max;
    int state; /* 0 ok, 1 over the maximum, 2 out of memory */
} sbuf;

static void sb_init(sbuf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max;
    b->state = 0;
}

static void sb_free(sbuf *b)
{
    if (b->p != NULL)
        OPENSSL_clear_free(b->p, b->cap);
    sb_init(b, b->max);
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->state != 0)
        return;
    if (n > b->max || b->len + n + 1 > b->max) {
        b->state = 1;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->max)
            cap = b->max;
        char *p = malloc(cap);
        if (p == NULL) {
            b->state = 2;
            return;
        }
        if (b->p != NULL) {
            memcpy(p, b->p, b->len);
            OPENSSL_clear_free(b->p, b->cap);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_putc(sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

/* Hands the string over to the caller (freed with pgw_sigv4_string_free). */
static char *sb_take(sbuf *b)
{
    char *p = b->p;
    if (p == NULL) {
        p = malloc(1);
        if (p != NULL)
            p[0] = '\0';
    }
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

static int sb_check(const sbuf *b, const char *what, char *err, size_t err_len)
{
    if (b->state == 1)
        return fail(err, err_len, "%s exceeds %zu bytes", what, b->max);
    if (b->state == 2)
        return fail(err, err_len, "out of memory building %s", what);
    return 0;
}

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static void sb_encode(sbuf *b, const unsigned char *s, size_t n, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        if (is_unreserved(s[i]) || (keep_slash && s[i] == '/')) {
            sb_putc(b, (char)s[i]);
        } else {
            char e[3] = {'%', hex[s[i] >> 4], hex[s[i] & 15]};
            sb_put(b, e, 3);
        }
    }
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (at least n bytes); a '%' not followed by two hex digits
 * stays literal, as Python's unquote does. Returns the decoded length. */
static size_t pct_decode(const char *s, size_t n, unsigned char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
            (lo = hexval((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = (unsigned char)s[i];
        }
    }
    return o;
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int sha256_hex(const void *data, size_t n, char out[PGW_SIGV4_HEX_LEN + 1])
{
    unsigned char md[32];
    unsigned int md_len = 0;
    static const unsigned char empty = 0;
    if (data == NULL)
        data = &empty;
    if (!EVP_Digest(data, n, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
        return -1;
    to_hex(md, 32, out);
    return 0;
}

static int hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                       unsigned char out[32])
{
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, msg, msg_len, out, &len) == NULL || len != 32)
        return -1;
    return 0;
}

/* RFC 7230 token characters: what a header name may contain. */
static int is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A header value may hold any byte but control characters (tab excepted): a CR or LF would
 * let a value inject headers into the request we send. */
static int valid_value(const char *v, size_t *len_out)
{
    size_t n = 0;
    for (; v[n] != '\0'; n++) {
        unsigned char c = (unsigned char)v[n];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
        if (n >= PGW_SIGV4_MAX_HEADER_VALUE)
            return 0;
    }
    *len_out = n;
    return 1;
}

static int valid_scope_part(const char *s)
{
    size_t n = 0;
    if (s == NULL)
        return 0;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
        if (n >= PGW_SIGV4_MAX_SCOPE_PART)
            return 0;
    }
    return n > 0;
}

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* ---- stage 1: canonical request -------------------------------------------------------------- */

/* Appends the canonical URI of path: botocore's remove_dot_segments (unless disabled), then
 * every byte but the unreserved set and '/' percent-encoded. */
static int canonical_path(sbuf *cr, const char *path, unsigned flags, char *err, size_t err_len)
{
    if (path == NULL || path[0] == '\0')
        path = "/";
    size_t n = strnlen(path, PGW_SIGV4_MAX_PATH + 1);
    if (n > PGW_SIGV4_MAX_PATH)
        return fail(err, err_len, "path exceeds %d bytes", PGW_SIGV4_MAX_PATH);
    if (path[0] != '/')
        return fail(err, err_len, "path does not start with '/'");
    if (flags & PGW_SIGV4_NO_PATH_NORMALIZE) {
        sb_encode(cr, (const unsigned char *)path, n, 1);
        return 0;
    }

    /* norm is "/" + the kept segments joined by "/" (+ "/" when the path ended with one);
     * seg_start[i] is where the i-th kept segment's "/" sits, so ".." just cuts back to it. */
    char norm[PGW_SIGV4_MAX_PATH + 2];
    uint16_t seg_start[PGW_SIGV4_MAX_PATH / 2 + 2];
    size_t norm_len = 0, nseg = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && path[j] != '/')
            j++;
        size_t seg_len = j - i;
        const char *seg = path + i;
        if (seg_len == 0 || (seg_len == 1 && seg[0] == '.')) {
            /* empty (duplicate slash) or "." segment: dropped */
        } else if (seg_len == 2 && seg[0] == '.' && seg[1] == '.') {
            if (nseg > 0)
                norm_len = seg_start[--nseg];
        } else {
            seg_start[nseg++] = (uint16_t)norm_len;
            norm[norm_len++] = '/';
            memcpy(norm + norm_len, seg, seg_len);
            norm_len += seg_len;
        }
        i = j + 1;
    }
    if (path[n - 1] == '/' && nseg > 0)
        norm[norm_len++] = '/';
    if (norm_len == 0)
        norm[norm_len++] = '/';
    sb_encode(cr, (const unsigned char *)norm, norm_len, 1);
    return 0;
}

struct qpair {
    const char *key;
    const char *value;
};

static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : strcmp(x->value, y->value);
}

/* Appends the canonical query string of query (see sigv4.h). */
static int canonical_query(sbuf *cr, const char *query, char *err, size_t err_len)
{
    if (query == NULL || query[0] == '\0')
        return 0;
    size_t n = strnlen(query, PGW_SIGV4_MAX_QUERY + 1);
    if (n > PGW_SIGV4_MAX_QUERY)
        return fail(err, err_len, "query exceeds %d bytes", PGW_SIGV4_MAX_QUERY);

    /* One arena for every encoded name and value: each encodes to at most three times its raw
     * length plus a NUL, so 3n + 2 per pair bounds it and the pointers into it stay valid. */
    struct qpair pairs[PGW_SIGV4_MAX_QUERY_PARAMS];
    size_t npairs = 0;
    size_t arena_cap = 3 * n + 2 * (PGW_SIGV4_MAX_QUERY_PARAMS + 1) + 1;
    char *arena = malloc(arena_cap);
    unsigned char *raw = malloc(n + 1);
    int rc = -1;
    if (arena == NULL || raw == NULL) {
        fail(err, err_len, "out of memory building query");
        goto done;
    }
    size_t used = 0;
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && query[j] != '&')
            j++;
        if (j > i) {
            if (npairs == PGW_SIGV4_MAX_QUERY_PARAMS) {
                fail(err, err_len, "query has more than %d parameters", PGW_SIGV4_MAX_QUERY_PARAMS);
                goto done;
            }
            const char *eq = memchr(query + i, '=', j - i);
            size_t klen = eq ? (size_t)(eq - (query + i)) : j - i;
            const char *v = eq ? eq + 1 : query + j;
            size_t vlen = eq ? (size_t)(query + j - v) : 0;
            const char *parts[2] = {query + i, v};
            size_t lens[2] = {klen, vlen};
            const char *enc[2];
            for (int k = 0; k < 2; k++) {
                size_t dlen = pct_decode(parts[k], lens[k], raw);
                char *dst = arena + used;
                for (size_t m = 0; m < dlen; m++) {
                    if (is_unreserved(raw[m])) {
                        arena[used++] = (char)raw[m];
                    } else {
                        static const char hex[] = "0123456789ABCDEF";
                        arena[used++] = '%';
                        arena[used++] = hex[raw[m] >> 4];
                        arena[used++] = hex[raw[m] & 15];
                    }
                }
                arena[used++] = '\0';
                enc[k] = dst;
            }
            pairs[npairs].key = enc[0];
            pairs[npairs].value = enc[1];
            npairs++;
        }
        i = j + 1;
    }
    qsort(pairs, npairs, sizeof pairs[0], qpair_cmp);
    for (size_t i = 0; i < npairs; i++) {
        if (i > 0)
            sb_putc(cr, '&');
        sb_puts(cr, pairs[i].key);
        sb_putc(cr, '=');
        sb_puts(cr, pairs[i].value);
    }
    rc = 0;
done:
    if (arena != NULL)
        OPENSSL_clear_free(arena, arena_cap);
    if (raw != NULL)
        OPENSSL_clear_free(raw, n + 1);
    return rc;
}

struct hentry {
    char lname[PGW_SIGV4_MAX_HEADER_NAME + 1];
    const char *value;
    size_t index;
};

static int hentry_cmp(const void *a, const void *b)
{
    const struct hentry *x = a, *y = b;
    int c = strcmp(x->lname, y->lname);
    if (c != 0)
        return c;
    return (x->index > y->index) - (x->index < y->index);
}

/* Headers botocore leaves unsigned because intermediaries rewrite them. */
static int never_signed(const char *lname)
{
    return strcmp(lname, "expect") == 0 || strcmp(lname, "user-agent") == 0 ||
           strcmp(lname, "x-amzn-trace-id") == 0;
}

/* Appends value trimmed, with each run of spaces and tabs collapsed to one space. */
static void put_trimmed(sbuf *b, const char *v)
{
    int pending = 0, wrote = 0;
    for (; *v != '\0'; v++) {
        if (*v == ' ' || *v == '\t') {
            pending = wrote;
            continue;
        }
        if (pending)
            sb_putc(b, ' ');
        pending = 0;
        sb_putc(b, *v);
        wrote = 1;
    }
}

int pgw_sigv4_canonical_request(const pgw_sigv4_request *req, unsigned flags, char **canonical,
                                char **signed_headers, char *err, size_t err_len)
{
    sbuf cr, sh;
    struct hentry *ents = NULL;
    size_t nents = 0;
    char payload_hash[PGW_SIGV4_HEX_LEN + 1];
    int rc = -1;

    sb_init(&cr, PGW_SIGV4_MAX_CANONICAL);
    sb_init(&sh, PGW_SIGV4_MAX_CANONICAL);
    if (canonical != NULL)
        *canonical = NULL;
    if (signed_headers != NULL)
        *signed_headers = NULL;
    if (req == NULL || canonical == NULL) {
        fail(err, err_len, "no request to sign");
        goto done;
    }
    if (req->n_headers > MAX_SIGNED_HEADERS || (req->n_headers > 0 && req->headers == NULL)) {
        fail(err, err_len, "request has more than %d headers", MAX_SIGNED_HEADERS);
        goto done;
    }
    if (req->body == NULL && req->body_len > 0) {
        fail(err, err_len, "request body is NULL but has a length");
        goto done;
    }

    /* method */
    size_t mlen = req->method ? strnlen(req->method, PGW_SIGV4_MAX_METHOD + 1) : 0;
    if (mlen == 0 || mlen > PGW_SIGV4_MAX_METHOD) {
        fail(err, err_len, "method missing or longer than %d bytes", PGW_SIGV4_MAX_METHOD);
        goto done;
    }
    for (size_t i = 0; i < mlen; i++) {
        char c = req->method[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) {
            fail(err, err_len, "method is not made of letters");
            goto done;
        }
        sb_putc(&cr, (char)(c >= 'a' ? c - ('a' - 'A') : c));
    }
    sb_putc(&cr, '\n');

    if (canonical_path(&cr, req->path, flags, err, err_len) != 0)
        goto done;
    sb_putc(&cr, '\n');
    if (canonical_query(&cr, req->query, err, err_len) != 0)
        goto done;
    sb_putc(&cr, '\n');

    /* headers */
    ents = calloc(req->n_headers ? req->n_headers : 1, sizeof *ents);
    if (ents == NULL) {
        fail(err, err_len, "out of memory building headers");
        goto done;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const pgw_sigv4_header *h = &req->headers[i];
        size_t vlen;
        if (h->name == NULL || h->value == NULL) {
            fail(err, err_len, "header %zu has no name or value", i);
            goto done;
        }
        size_t nlen = strnlen(h->name, PGW_SIGV4_MAX_HEADER_NAME + 1);
        if (nlen == 0 || nlen > PGW_SIGV4_MAX_HEADER_NAME) {
            fail(err, err_len, "header %zu name empty or longer than %d bytes", i,
                 PGW_SIGV4_MAX_HEADER_NAME);
            goto done;
        }
        for (size_t k = 0; k < nlen; k++) {
            if (!is_tchar((unsigned char)h->name[k])) {
                fail(err, err_len, "header %zu name has a character not allowed in a name", i);
                goto done;
            }
            ents[nents].lname[k] = (char)ascii_lower((unsigned char)h->name[k]);
        }
        ents[nents].lname[nlen] = '\0';
        /* The message names the header, never the value: it may be the session token. */
        if (!valid_value(h->value, &vlen)) {
            fail(err, err_len, "value of header '%s' has control characters or exceeds %d bytes",
                 ents[nents].lname, PGW_SIGV4_MAX_HEADER_VALUE);
            goto done;
        }
        if (never_signed(ents[nents].lname))
            continue;
        ents[nents].value = h->value;
        ents[nents].index = i;
        nents++;
    }
    qsort(ents, nents, sizeof *ents, hentry_cmp);
    for (size_t i = 0; i < nents; i++) {
        int same = i > 0 && strcmp(ents[i].lname, ents[i - 1].lname) == 0;
        if (same) {
            sb_putc(&cr, ',');
        } else {
            if (i > 0) {
                sb_putc(&cr, '\n');
                sb_putc(&sh, ';');
            }
            sb_puts(&cr, ents[i].lname);
            sb_putc(&cr, ':');
            sb_puts(&sh, ents[i].lname);
        }
        put_trimmed(&cr, ents[i].value);
    }
    if (nents > 0)
        sb_putc(&cr, '\n');
    sb_putc(&cr, '\n');
    sb_put(&cr, sh.p ? sh.p : "", sh.len);
    sb_putc(&cr, '\n');

    if (sha256_hex(req->body, req->body_len, payload_hash) != 0) {
        fail(err, err_len, "SHA-256 of the body failed");
        goto done;
    }
    sb_puts(&cr, payload_hash);

    if (sb_check(&cr, "canonical request", err, err_len) != 0 ||
        sb_check(&sh, "signed headers", err, err_len) != 0)
        goto done;
    *canonical = sb_take(&cr);
    if (signed_headers != NULL)
        *signed_headers = sb_take(&sh);
    if (*canonical == NULL || (signed_headers != NULL && *signed_headers == NULL)) {
        pgw_sigv4_string_free(*canonical);
        *canonical = NULL;
        if (signed_headers != NULL) {
            pgw_sigv4_string_free(*signed_headers);
            *signed_headers = NULL;
        }
        fail(err, err_len, "out of memory building canonical request");
        goto done;
    }
    rc = 0;
done:
    free(ents);
    sb_free(&cr);
    sb_free(&sh);
    return rc;
}

void pgw_sigv4_string_free(char *s)
{
    if (s != NULL)
        OPENSSL_clear_free(s, strlen(s) + 1);
}

/* ---- stage 2: string to sign ----------------------------------------------------------------- */

static int valid_amz_date(const char *d)
{
    if (d == NULL || strnlen(d, PGW_SIGV4_AMZ_DATE_LEN + 1) != PGW_SIGV4_AMZ_DATE_LEN)
        return 0;
    for (int i = 0; i < PGW_SIGV4_AMZ_DATE_LEN; i++) {
        char c = d[i];
        if (i == 8 ? c != 'T' : i == 15 ? c != 'Z' : !(c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

int pgw_sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
                             const char *canonical_request, char *out, size_t out_len, char *err,
                             size_t err_len)
{
    char hash[PGW_SIGV4_HEX_LEN + 1];
    if (!valid_amz_date(amz_date))
        return fail(err, err_len, "timestamp is not YYYYMMDDTHHMMSSZ");
    if (!valid_scope_part(region) || !valid_scope_part(service))
        return fail(err, err_len, "region or service empty, too long or not [A-Za-z0-9._-]");
    if (canonical_request == NULL || out == NULL)
        return fail(err, err_len, "no canonical request or output buffer");
    if (sha256_hex(canonical_request, strlen(canonical_request), hash) != 0)
        return fail(err, err_len, "SHA-256 of the canonical request failed");
    int n = snprintf(out, out_len, ALGORITHM "\n%s\n%.8s/%s/%s/" TERMINATOR "\n%s", amz_date,
                     amz_date, region, service, hash);
    if (n < 0 || (size_t)n >= out_len)
        return fail(err, err_len, "string to sign does not fit in %zu bytes", out_len);
    return 0;
}

/* ---- stage 3: signing key and signature ------------------------------------------------------ */

int pgw_sigv4_derive_key(const char *secret_access_key, const char *date, const char *region,
                         const char *service, unsigned char key[PGW_SIGV4_KEY_LEN], char *err,
                         size_t err_len)
{
    unsigned char k_secret[4 + PGW_SIGV4_MAX_SECRET];
    unsigned char k_date[32], k_region[32], k_service[32];
    int rc = -1;

    size_t slen = secret_access_key ? strnlen(secret_access_key, PGW_SIGV4_MAX_SECRET + 1) : 0;
    if (slen == 0 || slen > PGW_SIGV4_MAX_SECRET)
        return fail(err, err_len, "secret access key empty or longer than %d bytes",
                    PGW_SIGV4_MAX_SECRET);
    if (date == NULL || strnlen(date, 8) != 8)
        return fail(err, err_len, "date is not YYYYMMDD");
    for (int i = 0; i < 8; i++)
        if (!(date[i] >= '0' && date[i] <= '9'))
            return fail(err, err_len, "date is not YYYYMMDD");
    if (!valid_scope_part(region) || !valid_scope_part(service))
        return fail(err, err_len, "region or service empty, too long or not [A-Za-z0-9._-]");

    memcpy(k_secret, "AWS4", 4);
    memcpy(k_secret + 4, secret_access_key, slen);
    if (hmac_sha256(k_secret, 4 + slen, date, 8, k_date) != 0 ||
        hmac_sha256(k_date, 32, region, strlen(region), k_region) != 0 ||
        hmac_sha256(k_region, 32, service, strlen(service), k_service) != 0 ||
        hmac_sha256(k_service, 32, TERMINATOR, strlen(TERMINATOR), key) != 0) {
        fail(err, err_len, "HMAC-SHA256 failed deriving the signing key");
        goto done;
    }
    rc = 0;
done:
    OPENSSL_cleanse(k_secret, sizeof k_secret);
    OPENSSL_cleanse(k_date, sizeof k_date);
    OPENSSL_cleanse(k_region, sizeof k_region);
    OPENSSL_cleanse(k_service, sizeof k_service);
    if (rc != 0)
        OPENSSL_cleanse(key, PGW_SIGV4_KEY_LEN);
    return rc;
}

int pgw_sigv4_signature(const unsigned char key[PGW_SIGV4_KEY_LEN], const char *string_to_sign,
                        char hex[PGW_SIGV4_HEX_LEN + 1], char *err, size_t err_len)
{
    unsigned char mac[32];
    if (key == NULL || string_to_sign == NULL || hex == NULL)
        return fail(err, err_len, "missing key, string to sign or output");
    if (hmac_sha256(key, PGW_SIGV4_KEY_LEN, string_to_sign, strlen(string_to_sign), mac) != 0)
        return fail(err, err_len, "HMAC-SHA256 of the string to sign failed");
    to_hex(mac, 32, hex);
    OPENSSL_cleanse(mac, sizeof mac);
    return 0;
}

int pgw_sigv4_format_date(time_t now, char out[PGW_SIGV4_AMZ_DATE_LEN + 1])
{
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return -1;
    if (strftime(out, PGW_SIGV4_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != PGW_SIGV4_AMZ_DATE_LEN)
        return -1;
    return 0;
}

/* ---- the signer and its key cache ------------------------------------------------------------ */

pgw_sigv4_signer *pgw_sigv4_signer_new(void)
{
    return calloc(1, sizeof(pgw_sigv4_signer));
}

void pgw_sigv4_signer_free(pgw_sigv4_signer *s)
{
    if (s == NULL)
        return;
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

const char *pgw_sigv4_signer_errstr(const pgw_sigv4_signer *s)
{
    return s ? s->errstr : "no signer";
}

unsigned long pgw_sigv4_signer_derivations(const pgw_sigv4_signer *s)
{
    return s ? s->derivations : 0;
}

/* Finds the signing key for (secret, date, region, service) in the cache, deriving and
 * inserting it (evicting the least recently used entry) on a miss. */
static int signing_key(pgw_sigv4_signer *s, const char *secret, const char *date8,
                       const char *region, const char *service, unsigned char key[32])
{
    unsigned char h[32];
    unsigned int hlen = 0;
    size_t slen = strnlen(secret, PGW_SIGV4_MAX_SECRET + 1);
    if (!EVP_Digest(secret, slen, h, &hlen, EVP_sha256(), NULL) || hlen != 32)
        return fail(s->errstr, sizeof s->errstr, "SHA-256 of the secret failed");

    struct cache_entry *victim = NULL;
    for (int i = 0; i < PGW_SIGV4_CACHE_SLOTS; i++) {
        struct cache_entry *e = &s->cache[i];
        if (!e->used) {
            if (victim == NULL || victim->used)
                victim = e;
            continue;
        }
        if (CRYPTO_memcmp(e->secret_hash, h, 32) == 0 && memcmp(e->date, date8, 8) == 0 &&
            strcmp(e->region, region) == 0 && strcmp(e->service, service) == 0) {
            e->last_use = ++s->tick;
            memcpy(key, e->key, 32);
            OPENSSL_cleanse(h, sizeof h);
            return 0;
        }
        if (victim == NULL || (victim->used && e->last_use < victim->last_use))
            victim = e;
    }

    if (pgw_sigv4_derive_key(secret, date8, region, service, key, s->errstr, sizeof s->errstr) !=
        0) {
        OPENSSL_cleanse(h, sizeof h);
        return -1;
    }
    s->derivations++;
    OPENSSL_cleanse(victim, sizeof *victim);
    victim->used = 1;
    victim->last_use = ++s->tick;
    memcpy(victim->secret_hash, h, 32);
    memcpy(victim->date, date8, 8);
    victim->date[8] = '\0';
    snprintf(victim->region, sizeof victim->region, "%s", region);
    snprintf(victim->service, sizeof victim->service, "%s", service);
    memcpy(victim->key, key, 32);
    OPENSSL_cleanse(h, sizeof h);
    return 0;
}

void pgw_sigv4_output_cleanup(pgw_sigv4_output *out)
{
    if (out == NULL)
        return;
    free(out->authorization);
    pgw_sigv4_string_free(out->security_token);
    memset(out, 0, sizeof *out);
}

/* Access key ids are printable ASCII without the separators of the Authorization header. */
static int valid_key_id(const char *id)
{
    size_t n = 0;
    if (id == NULL)
        return 0;
    for (; id[n] != '\0'; n++) {
        unsigned char c = (unsigned char)id[n];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',' || c == '=' || c == ';')
            return 0;
        if (n >= PGW_SIGV4_MAX_KEY_ID)
            return 0;
    }
    return n > 0;
}

int pgw_sigv4_sign(pgw_sigv4_signer *s, const pgw_sigv4_request *req, const pgw_sigv4_context *ctx,
                   pgw_sigv4_output *out)
{
    pgw_sigv4_header hdrs[MAX_SIGNED_HEADERS];
    pgw_sigv4_request signed_req;
    char *creq = NULL, *sh = NULL;
    char sts[PGW_SIGV4_MAX_STS];
    unsigned char key[PGW_SIGV4_KEY_LEN];
    sbuf auth;
    int rc = -1, have_host = 0;
    char *err;
    size_t err_len;

    sb_init(&auth, 2 * PGW_SIGV4_MAX_CANONICAL);
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (s == NULL || out == NULL)
        return -1;
    err = s->errstr;
    err_len = sizeof s->errstr;
    err[0] = '\0';
    memset(out, 0, sizeof *out);
    memset(key, 0, sizeof key);

    if (req == NULL || ctx == NULL || ctx->credentials == NULL) {
        fail(err, err_len, "missing request, context or credentials");
        goto done;
    }
    const pgw_sigv4_credentials *cr = ctx->credentials;
    if (!valid_key_id(cr->access_key_id)) {
        fail(err, err_len, "access key id empty, longer than %d bytes or malformed",
             PGW_SIGV4_MAX_KEY_ID);
        goto done;
    }
    if (cr->secret_access_key == NULL || cr->secret_access_key[0] == '\0' ||
        strnlen(cr->secret_access_key, PGW_SIGV4_MAX_SECRET + 1) > PGW_SIGV4_MAX_SECRET) {
        fail(err, err_len, "secret access key empty or longer than %d bytes", PGW_SIGV4_MAX_SECRET);
        goto done;
    }
    if (!valid_scope_part(ctx->region) || !valid_scope_part(ctx->service)) {
        fail(err, err_len, "region or service empty, too long or not [A-Za-z0-9._-]");
        goto done;
    }
    if (req->n_headers > PGW_SIGV4_MAX_HEADERS || (req->n_headers > 0 && req->headers == NULL)) {
        fail(err, err_len, "request has more than %d headers", PGW_SIGV4_MAX_HEADERS);
        goto done;
    }
    if (pgw_sigv4_format_date(ctx->now, out->amz_date) != 0) {
        fail(err, err_len, "signing time out of range");
        goto done;
    }

    /* The caller's headers, then the ones we add; refuse any the caller set that we own. */
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name;
        if (name == NULL) {
            fail(err, err_len, "header %zu has no name", i);
            goto done;
        }
        if (strcasecmp(name, "host") == 0)
            have_host = 1;
        if (strcasecmp(name, "authorization") == 0 || strcasecmp(name, "x-amz-date") == 0 ||
            strcasecmp(name, "x-amz-security-token") == 0 ||
            ((ctx->flags & PGW_SIGV4_SIGN_CONTENT_SHA256) &&
             strcasecmp(name, "x-amz-content-sha256") == 0)) {
            fail(err, err_len, "request already carries %s, which the signer sets", name);
            goto done;
        }
        hdrs[n++] = req->headers[i];
    }
    if (!have_host) {
        fail(err, err_len, "request has no host header, which must be signed");
        goto done;
    }
    out->headers[out->n_headers++] = (pgw_sigv4_header){"X-Amz-Date", out->amz_date};
    hdrs[n++] = (pgw_sigv4_header){"x-amz-date", out->amz_date};
    if (cr->session_token != NULL && cr->session_token[0] != '\0') {
        size_t tlen;
        if (!valid_value(cr->session_token, &tlen)) {
            fail(err, err_len, "session token has control characters or exceeds %d bytes",
                 PGW_SIGV4_MAX_HEADER_VALUE);
            goto done;
        }
        out->security_token = malloc(tlen + 1);
        if (out->security_token == NULL) {
            fail(err, err_len, "out of memory copying the session token");
            goto done;
        }
        memcpy(out->security_token, cr->session_token, tlen + 1);
        out->headers[out->n_headers++] =
            (pgw_sigv4_header){"X-Amz-Security-Token", out->security_token};
        hdrs[n++] = (pgw_sigv4_header){"x-amz-security-token", out->security_token};
    }
    if (ctx->flags & PGW_SIGV4_SIGN_CONTENT_SHA256) {
        if (req->body == NULL && req->body_len > 0) {
            fail(err, err_len, "request body is NULL but has a length");
            goto done;
        }
        if (sha256_hex(req->body, req->body_len, out->content_sha256) != 0) {
            fail(err, err_len, "SHA-256 of the body failed");
            goto done;
        }
        out->headers[out->n_headers++] =
            (pgw_sigv4_header){"X-Amz-Content-Sha256", out->content_sha256};
        hdrs[n++] = (pgw_sigv4_header){"x-amz-content-sha256", out->content_sha256};
    }

    signed_req = *req;
    signed_req.headers = hdrs;
    signed_req.n_headers = n;
    if (pgw_sigv4_canonical_request(&signed_req, ctx->flags & PGW_SIGV4_NO_PATH_NORMALIZE, &creq,
                                    &sh, err, err_len) != 0 ||
        pgw_sigv4_string_to_sign(out->amz_date, ctx->region, ctx->service, creq, sts, sizeof sts,
                                 err, err_len) != 0 ||
        signing_key(s, cr->secret_access_key, out->amz_date, ctx->region, ctx->service, key) != 0 ||
        pgw_sigv4_signature(key, sts, out->signature, err, err_len) != 0)
        goto done;

    sb_puts(&auth, ALGORITHM " Credential=");
    sb_puts(&auth, cr->access_key_id);
    sb_putc(&auth, '/');
    sb_put(&auth, out->amz_date, 8);
    sb_putc(&auth, '/');
    sb_puts(&auth, ctx->region);
    sb_putc(&auth, '/');
    sb_puts(&auth, ctx->service);
    sb_puts(&auth, "/" TERMINATOR ", SignedHeaders=");
    sb_puts(&auth, sh);
    sb_puts(&auth, ", Signature=");
    sb_puts(&auth, out->signature);
    if (sb_check(&auth, "authorization header", err, err_len) != 0)
        goto done;
    out->authorization = sb_take(&auth);
    if (out->authorization == NULL) {
        fail(err, err_len, "out of memory building the authorization header");
        goto done;
    }
    out->headers[out->n_headers++] = (pgw_sigv4_header){"Authorization", out->authorization};
    rc = 0;
done:
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(sts, sizeof sts);
    pgw_sigv4_string_free(creq);
    pgw_sigv4_string_free(sh);
    sb_free(&auth);
    if (rc != 0)
        pgw_sigv4_output_cleanup(out);
    return rc;
}
