/* arn: strict parsing of Amazon Personalize batch inference job ARNs. See arn.h. */
#include "service/aws/arn.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "service/text.h"

#define ARN_WHAT        "batch inference job ARN"
#define ARN_FORM        "arn:<partition>:personalize:<region>:<account>:batch-inference-job/<name>"
#define RESOURCE_PREFIX "batch-inference-job/"
#define JOB_NAME_MAX    63
#define QUOTE_MAX_INPUT 48 /* input bytes quoted in a message before "..." */
#define QUOTE_BUF       PGW_TEXT_QUOTE_SIZE(QUOTE_MAX_INPUT)

/* A field of the ARN: a pointer into the caller's bytes and a length. */
typedef struct span {
    const char *p;
    size_t n;
} span;

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err == NULL || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* The inside of a double-quoted string naming (up to QUOTE_MAX_INPUT bytes of) s, safe in
 * any message: a message built from caller input can never carry control characters or break
 * a log line. */
static const char *quote(span s, char *dst, size_t dst_len)
{
    return pgw_text_quote(s.p, s.n, QUOTE_MAX_INPUT, dst, dst_len);
}

static int span_eq(span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static int is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(char c)
{
    return is_lower(c) || is_digit(c) || (c >= 'A' && c <= 'Z');
}

/* ^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$, written out by hand because it is small and a regex engine
 * would be the only one in the service. Every byte is accounted for, so nothing such as ".",
 * "/" or "@" can slip into the endpoint host name. */
static int region_valid(span r)
{
    size_t i = 0;
    if (r.n < 2 || !is_lower(r.p[0]) || !is_lower(r.p[1]))
        return 0;
    i = 2;
    int letter_groups = 0;
    while (i < r.n) {
        if (r.p[i] != '-')
            return 0;
        i++;
        if (i < r.n && is_digit(r.p[i])) {
            size_t start = i;
            while (i < r.n && is_digit(r.p[i]))
                i++;
            /* The digits must end the name, there must be one or two of them, and at least
             * one letter group must precede them. */
            return i == r.n && i - start <= 2 && letter_groups > 0;
        }
        size_t start = i;
        while (i < r.n && is_lower(r.p[i]))
            i++;
        if (i == start)
            return 0;
        letter_groups++;
    }
    return 0; /* no trailing digit group */
}

int pgw_arn_region_valid(const char *s, size_t n)
{
    span r = {s, n};
    return s != NULL && n < sizeof(((pgw_arn *)0)->region) && region_valid(r);
}

/* AWS's Name pattern ^[a-zA-Z0-9][a-zA-Z0-9\-_]*$, 1..63 characters. */
static int job_name_valid(span s)
{
    if (s.n < 1 || s.n > JOB_NAME_MAX || !is_alnum(s.p[0]))
        return 0;
    for (size_t i = 1; i < s.n; i++) {
        if (!is_alnum(s.p[i]) && s.p[i] != '-' && s.p[i] != '_')
            return 0;
    }
    return 1;
}

/* Regions belong to exactly one partition; a mismatch would sign for one partition and call
 * another's endpoint, which can only fail upstream. */
static int region_in_partition(span partition, span region)
{
    int cn = region.n >= 3 && memcmp(region.p, "cn-", 3) == 0;
    int gov = region.n >= 7 && memcmp(region.p, "us-gov-", 7) == 0;
    if (span_eq(partition, "aws-cn"))
        return cn;
    if (span_eq(partition, "aws-us-gov"))
        return gov;
    return !cn && !gov;
}

static void copy_span(char *dst, span s)
{
    memcpy(dst, s.p, s.n);
    dst[s.n] = '\0';
}

int pgw_arn_parse(const char *s, size_t len, pgw_arn *out, char *err, size_t err_len)
{
    char q[QUOTE_BUF];
    span whole = {s, len};

    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (out == NULL) {
        set_err(err, err_len, "internal error: no output for the " ARN_WHAT);
        return -1;
    }
    if (s == NULL || len == 0) {
        set_err(err, err_len, ARN_WHAT " is empty");
        return -1;
    }
    if (len > PGW_ARN_MAX_LEN) {
        set_err(err, err_len, ARN_WHAT " is longer than %d characters (%zu)", PGW_ARN_MAX_LEN, len);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            set_err(err, err_len, ARN_WHAT " contains control character 0x%02x at offset %zu", c,
                    i);
            return -1;
        }
        if (c >= 0x80) {
            set_err(err, err_len, ARN_WHAT " contains a non-ASCII byte at offset %zu", i);
            return -1;
        }
    }

    /* Six fields: arn, partition, service, region, account, resource. The resource may not
     * contain ':' (our resource type never does), so anything beyond five colons is an
     * error. */
    span f[6];
    size_t nf = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == ':') {
            if (nf == 6) {
                nf++;
                break;
            }
            f[nf].p = s + start;
            f[nf].n = i - start;
            nf++;
            start = i + 1;
        }
    }
    if (nf != 6 || !span_eq(f[0], "arn")) {
        set_err(err, err_len, ARN_WHAT " \"%s\" must be " ARN_FORM, quote(whole, q, sizeof(q)));
        return -1;
    }
    if (!span_eq(f[1], "aws") && !span_eq(f[1], "aws-cn") && !span_eq(f[1], "aws-us-gov")) {
        set_err(err, err_len,
                ARN_WHAT " has partition \"%s\", which is not supported (aws, aws-cn, aws-us-gov)",
                quote(f[1], q, sizeof(q)));
        return -1;
    }
    if (!span_eq(f[2], "personalize")) {
        set_err(err, err_len, ARN_WHAT " has service \"%s\", expected \"personalize\"",
                quote(f[2], q, sizeof(q)));
        return -1;
    }
    if (f[3].n >= sizeof(out->region) || !region_valid(f[3])) {
        set_err(err, err_len, ARN_WHAT " has region \"%s\", which is not a valid AWS region name",
                quote(f[3], q, sizeof(q)));
        return -1;
    }
    if (!region_in_partition(f[1], f[3])) {
        char q2[QUOTE_BUF];
        set_err(err, err_len, ARN_WHAT " has region \"%s\", which is not in partition \"%s\"",
                quote(f[3], q, sizeof(q)), quote(f[1], q2, sizeof(q2)));
        return -1;
    }
    int account_ok = f[4].n == 12;
    for (size_t i = 0; account_ok && i < f[4].n; i++)
        account_ok = is_digit(f[4].p[i]);
    if (!account_ok) {
        set_err(err, err_len, ARN_WHAT " has account \"%s\", which is not 12 digits",
                quote(f[4], q, sizeof(q)));
        return -1;
    }
    size_t plen = sizeof(RESOURCE_PREFIX) - 1;
    if (f[5].n < plen || memcmp(f[5].p, RESOURCE_PREFIX, plen) != 0) {
        set_err(err, err_len, ARN_WHAT " has resource \"%s\", expected batch-inference-job/<name>",
                quote(f[5], q, sizeof(q)));
        return -1;
    }
    span name = {f[5].p + plen, f[5].n - plen};
    if (!job_name_valid(name)) {
        set_err(err, err_len,
                ARN_WHAT " has job name \"%s\", which is not 1 to 63 letters, digits, '-' or '_' "
                         "starting with a letter or digit",
                quote(name, q, sizeof(q)));
        return -1;
    }

    copy_span(out->partition, f[1]);
    copy_span(out->region, f[3]);
    copy_span(out->account, f[4]);
    copy_span(out->job_name, name);
    return 0;
}

const char *pgw_arn_dns_suffix(const pgw_arn *arn)
{
    if (arn != NULL && strcmp(arn->partition, "aws-cn") == 0)
        return "amazonaws.com.cn";
    return "amazonaws.com";
}

int pgw_arn_default_endpoint(const pgw_arn *arn, char *buf, size_t len)
{
    if (arn == NULL || buf == NULL || len == 0 || arn->region[0] == '\0')
        return -1;
    int n = snprintf(buf, len, "https://personalize.%s.%s", arn->region, pgw_arn_dns_suffix(arn));
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return -1;
    }
    return 0;
}
