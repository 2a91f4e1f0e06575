#include "service/aws/credentials_source.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service/text.h"

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int pgw_credentials_parse_time(const char *text, int64_t *out_ms)
{
    if (!text)
        return -1;
    const char *p = text;
    struct tm tm = {0};
    int y, mo, d, h, mi, s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
        return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &s))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
        return -1;
    int64_t ms = 0;
    if (*p == '.') {
        p++;
        int scale = 100, any = 0;
        while (isdigit((unsigned char)*p)) {
            ms += (*p - '0') * scale;
            scale /= 10;
            p++;
            any = 1;
        }
        if (!any)
            return -1;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om))
            return -1;
        offset_s = sign * (oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out_ms = ((int64_t)t - offset_s) * 1000 + ms;
    return 0;
}

void pgw_credentials_secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

char *pgw_credentials_read_secret_file(const char *path, size_t max_bytes, char *err,
                                       size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open %.200s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max_bytes + 1);
    size_t len = 0;
    int failed = buf == NULL;
    while (!failed) {
        ssize_t n = read(fd, buf + len, max_bytes + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, err_len, "cannot read %.200s: %s", path, strerror(errno));
            failed = 1;
        } else if (n == 0) {
            break;
        } else {
            len += (size_t)n;
            if (len > max_bytes) {
                snprintf(err, err_len, "%.200s is larger than %zu bytes", path, max_bytes);
                failed = 1;
            }
        }
    }
    close(fd);
    if (failed) {
        if (buf) {
            OPENSSL_cleanse(buf, len);
            free(buf);
        } else {
            snprintf(err, err_len, "out of memory");
        }
        return NULL;
    }
    buf[len] = '\0';
    size_t start = 0;
    while (start < len && isspace((unsigned char)buf[start]))
        start++;
    while (len > start && isspace((unsigned char)buf[len - 1]))
        len--;
    if (len == start) {
        snprintf(err, err_len, "%.200s is empty", path);
        free(buf);
        return NULL;
    }
    memmove(buf, buf + start, len - start);
    OPENSSL_cleanse(buf + (len - start), max_bytes + 1 - (len - start));
    buf[len - start] = '\0';
    return buf;
}

/* jansson keeps its own copies of the strings: wipe them before json_decref frees them. */
static void wipe_json_strings(json_t *obj)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        if (json_is_string(v))
            OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
    }
}

pgw_credentials *pgw_credentials_from_json(const char *body, size_t len, const char *source,
                                           char *err, size_t err_len)
{
    json_error_t jerr;
    /* The error text of json_loadb may quote the input: never pass it on. */
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(root)) {
        snprintf(err, err_len, "the answer is not a JSON object");
        if (root) {
            json_decref(root);
        }
        return NULL;
    }
    pgw_credentials *creds = NULL;
    const char *code = json_string_value(json_object_get(root, "Code"));
    const char *akid = json_string_value(json_object_get(root, "AccessKeyId"));
    const char *secret = json_string_value(json_object_get(root, "SecretAccessKey"));
    const char *token = json_string_value(json_object_get(root, "Token"));
    const char *expiration = json_string_value(json_object_get(root, "Expiration"));
    int64_t expires = 0;
    if (code && strcmp(code, "Success") != 0) {
        char q[PGW_TEXT_QUOTE_SIZE(64)];
        snprintf(err, err_len, "the answer's Code is \"%s\", not Success",
                 pgw_text_quote_str(code, 64, q, sizeof(q)));
    } else if (!akid || !*akid || !secret || !*secret) {
        snprintf(err, err_len, "the answer lacks AccessKeyId or SecretAccessKey");
    } else if (!pgw_credentials_usable(akid, secret, token)) {
        /* Found by fuzz_credentials_imds: a CR/LF in the key id or the token would have gone
         * into a request header. */
        snprintf(err, err_len,
                 "the answer's AccessKeyId or Token holds characters a request header cannot "
                 "carry");
    } else if (expiration && pgw_credentials_parse_time(expiration, &expires) != 0) {
        snprintf(err, err_len, "the answer's Expiration is not an ISO 8601 time");
    } else {
        creds = pgw_credentials_new(akid, secret, token, expires, source);
        if (!creds)
            snprintf(err, err_len, "out of memory");
    }
    wipe_json_strings(root);
    json_decref(root);
    return creds;
}

void pgw_credentials_wipe_body(const char *body, size_t len)
{
    /* The HTTP client owns the buffer and frees it unwiped after our callback: it is ours to
     * scrub while the callback runs. */
    if (body && len)
        OPENSSL_cleanse((void *)body, len);
}

int pgw_credentials_url_parts(const char *url, char *scheme, size_t scheme_len, char *host,
                              size_t host_len, char *path, size_t path_len, char *bare_host,
                              size_t bare_host_len)
{
    CURLU *u = curl_url();
    char *sc = NULL, *h = NULL, *port = NULL, *p = NULL;
    int rc = -1;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &sc, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h[0]) {
        int explicit_port = curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK;
        int fits = 1;
        if (scheme)
            fits &= snprintf(scheme, scheme_len, "%s", sc) < (int)scheme_len;
        if (host)
            fits &= (explicit_port ? snprintf(host, host_len, "%s:%s", h, port)
                                   : snprintf(host, host_len, "%s", h)) < (int)host_len;
        if (path) {
            if (curl_url_get(u, CURLUPART_PATH, &p, 0) == CURLUE_OK && p[0])
                fits &= snprintf(path, path_len, "%s", p) < (int)path_len;
            else
                fits &= snprintf(path, path_len, "/") < (int)path_len;
        }
        if (bare_host) {
            /* curl gives IPv6 hosts in brackets; compare them without. */
            size_t n = strlen(h);
            if (n >= 2 && h[0] == '[' && h[n - 1] == ']')
                fits &= snprintf(bare_host, bare_host_len, "%.*s", (int)(n - 2), h + 1) <
                        (int)bare_host_len;
            else
                fits &= snprintf(bare_host, bare_host_len, "%s", h) < (int)bare_host_len;
        }
        if (scheme)
            for (char *c = scheme; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        rc = fits ? 0 : -1;
    }
    curl_free(sc);
    curl_free(h);
    curl_free(port);
    curl_free(p);
    curl_url_cleanup(u);
    return rc;
}

int pgw_credentials_env_true(const char *value)
{
    return value && strcasecmp(value, "true") == 0;
}

const char *pgw_credentials_getenv(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

void pgw_credentials_pending_finish(pgw_credentials_pending *p, pgw_credentials *creds,
                                    const char *error)
{
    pgw_credentials_cb cb = p->cb;
    void *ud = p->user_data;
    p->cb = NULL;
    p->user_data = NULL;
    p->busy = 0;
    if (cb)
        cb(creds, creds ? NULL : (error ? error : "unknown error"), ud);
}
