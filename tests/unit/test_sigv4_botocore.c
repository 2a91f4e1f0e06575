/* Cross-checks the SigV4 signer against Debian's botocore, and tests its key cache and errors.
 *
 * 1. Key cache: repeated calls give identical signatures with one derivation; a new UTC day,
 *    another region or another secret derives a new key; the cache stays bounded (LRU).
 * 2. Errors: bad input returns -1 with a message that never holds the secret or the token.
 * 3. botocore: a few dozen seeded random requests plus our real upstream call are signed here
 *    and by botocore.auth.SigV4Auth (tests/unit/sigv4_botocore_check.py, run once with all
 *    requests as a JSON file), and the Authorization, X-Amz-Date and X-Amz-Security-Token
 *    headers must match exactly.
 *
 * The domain where both must agree is that of a real AWS call from an SDK to a non-S3 service
 * (JSON, query or REST protocols): a path as sent on the wire (raw or already %-encoded, UTF-8,
 * with dot segments and duplicate slashes; never '?' or '#'), a query of name[=value] pairs
 * with valid %-escapes of UTF-8 (botocore receives them decoded as `params`, as its serializers
 * produce them), header names that are HTTP tokens, header values of printable UTF-8 with
 * spaces and tabs (no CR/LF, no Unicode whitespace, which Python's str.split() would also
 * collapse), no Date/X-Amz-Date/Authorization header from the caller, any body bytes.
 *
 * Env: PGW_PYTHON (interpreter, default /usr/bin/python3), PGW_TEST_DIR (tests/ source dir),
 * PGW_SIGV4_SEED (optional, to replay another seed). */
#include "service/aws/sigv4.h"
#include "test_util.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_RANDOM     48
#define N_FIXED      2
#define N_REQ        (N_RANDOM + N_FIXED)
#define MAX_GEN_HDRS 8
#define MAX_OUTPUT   (8 * 1024 * 1024)

/* ---- deterministic generator ------------------------------------------------------------------
 */

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* splitmix64: tiny, seedable and good enough to pick test inputs */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t pick(size_t n)
{
    return (size_t)(rng() % n);
}

#define PICK(arr) (arr[pick(sizeof(arr) / sizeof(arr[0]))])

struct gen_req {
    char method[16];
    char host[128];
    char path[512];
    char query[512];
    char hname[MAX_GEN_HDRS][64];
    char hvalue[MAX_GEN_HDRS][128];
    pgw_sigv4_header h[MAX_GEN_HDRS];
    size_t nh;
    unsigned char body[256];
    size_t body_len;
    char akid[32], secret[64], token[512];
    char region[32], service[32];
    time_t now;
};

static void append(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(dst);
    snprintf(dst + n, cap - n, "%s", s);
}

static void random_chars(char *dst, size_t len, const char *alphabet)
{
    size_t n = strlen(alphabet);
    for (size_t i = 0; i < len; i++)
        dst[i] = alphabet[pick(n)];
    dst[len] = '\0';
}

static void random_case(char *dst, size_t cap, const char *name)
{
    snprintf(dst, cap, "%s", name);
    for (char *p = dst; *p; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
            *p = (char)(rng() & 1 ? (*p | 0x20) : (*p & ~0x20));
}

static const char *const METHODS[] = {"GET",  "POST",  "PUT",  "DELETE",
                                      "HEAD", "PATCH", "post", "Get"};
static const char *const SEGMENTS[] = {
    "a",       "b c",     "%20x",      "caf\xc3\xa9", "\xe1\x88\xb4", ".",
    "..",      "",        "x~y_z-1.2", "semi;col",    "plus+sign",    "eq=al",
    "at@",     "$dollar", "comma,",    "(paren)",     "star*",        "!bang",
    "'quote'", ":colon",  "%2F",       "job%3Aname",  "100%25",       "..."};
static const char *const QKEYS[] = {
    "a",  "B",   "a b",       "k%20e",  "x+y",   "caf%C3%A9",     "\xc3\xa9t\xc3\xa9",
    "~t", "-._", "%E1%88%B4", "Action", "empty", "list.member.1", "%2F"};
static const char *const QVALUES[] = {"",    "1", "v w",         "%2F", "/",   "a=b",        "*",
                                      "%7E", "0", "caf\xc3\xa9", "x+y", "%25", "DescribeJob"};
static const char *const HNAMES[] = {
    "X-Custom-Header", "Content-Type",    "X-Amz-Target", "Accept",        "X-Amz-Meta-Note",
    "User-Agent",      "X-Amzn-Trace-Id", "X-Empty",      "Cache-Control", "Expect"};
static const char *const HVALUES[] = {"application/x-amz-json-1.1",
                                      "  leading",
                                      "trailing   ",
                                      "  a   b\t\tc  ",
                                      "",
                                      "caf\xc3\xa9 au lait",
                                      "q=\"x  y\"",
                                      "AmazonPersonalize.DescribeBatchInferenceJob",
                                      "*/*",
                                      "a,b",
                                      "tab\there"};
static const char *const REGIONS[] = {"us-east-1",  "eu-west-1",     "ap-southeast-2",
                                      "cn-north-1", "us-gov-west-1", "me-central-1"};
static const char *const SERVICES[] = {"personalize", "dynamodb", "sts", "execute-api", "service"};

#define B64 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

static void gen_random(struct gen_req *g)
{
    memset(g, 0, sizeof *g);
    snprintf(g->method, sizeof g->method, "%s", PICK(METHODS));
    snprintf(g->region, sizeof g->region, "%s", PICK(REGIONS));
    snprintf(g->service, sizeof g->service, "%s", PICK(SERVICES));
    snprintf(g->host, sizeof g->host, "%s.%s.amazonaws.com", g->service, g->region);

    /* path: "/" or "//" then 0..5 segments, sometimes a trailing slash */
    snprintf(g->path, sizeof g->path, "%s", pick(6) == 0 ? "//" : "/");
    size_t nseg = pick(6);
    for (size_t i = 0; i < nseg; i++) {
        if (i > 0)
            append(g->path, sizeof g->path, "/");
        append(g->path, sizeof g->path, PICK(SEGMENTS));
    }
    if (nseg > 0 && pick(3) == 0)
        append(g->path, sizeof g->path, "/");

    /* query: 0..5 pairs, repeated names likely, some without '=' */
    size_t nq = pick(6);
    for (size_t i = 0; i < nq; i++) {
        if (i > 0)
            append(g->query, sizeof g->query, "&");
        append(g->query, sizeof g->query, PICK(QKEYS));
        if (pick(4) != 0) {
            append(g->query, sizeof g->query, "=");
            append(g->query, sizeof g->query, PICK(QVALUES));
        }
    }

    random_case(g->hname[0], sizeof g->hname[0], "host");
    snprintf(g->hvalue[0], sizeof g->hvalue[0], "%s", g->host);
    g->nh = 1;
    size_t nextra = pick(6);
    for (size_t i = 0; i < nextra && g->nh < MAX_GEN_HDRS; i++) {
        random_case(g->hname[g->nh], sizeof g->hname[0], PICK(HNAMES));
        snprintf(g->hvalue[g->nh], sizeof g->hvalue[0], "%s", PICK(HVALUES));
        g->nh++;
    }
    /* shuffle so host is not always first */
    for (size_t i = g->nh; i > 1; i--) {
        size_t j = pick(i);
        char tn[64], tv[128];
        memcpy(tn, g->hname[i - 1], sizeof tn);
        memcpy(tv, g->hvalue[i - 1], sizeof tv);
        memcpy(g->hname[i - 1], g->hname[j], sizeof tn);
        memcpy(g->hvalue[i - 1], g->hvalue[j], sizeof tv);
        memcpy(g->hname[j], tn, sizeof tn);
        memcpy(g->hvalue[j], tv, sizeof tv);
    }

    switch (pick(3)) {
    case 0:
        g->body_len = 0;
        break;
    case 1:
        g->body_len = (size_t)snprintf((char *)g->body, sizeof g->body,
                                       "{\"batchInferenceJobArn\":\"arn:aws:personalize:%s:"
                                       "123456789012:batch-inference-job/job-%u\"}",
                                       g->region, (unsigned)pick(1000));
        break;
    default:
        g->body_len = 1 + pick(64);
        for (size_t i = 0; i < g->body_len; i++)
            g->body[i] = (unsigned char)rng();
    }

    random_chars(g->akid, 20, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
    memcpy(g->akid, pick(2) ? "AKIA" : "ASIA", 4);
    random_chars(g->secret, 40, B64);
    if (pick(2))
        random_chars(g->token, 100 + pick(300), B64 "=");

    /* 2015..2035, and a third of the time within two seconds of a UTC midnight */
    time_t base = 1420070400 + (time_t)pick(20u * 365 * 86400);
    if (pick(3) == 0)
        base = base - base % 86400 + 86400 - 1 + (time_t)pick(3);
    g->now = base;
}

/* Our real upstream call (service/aws Personalize client), with and without a session token. */
static void gen_personalize(struct gen_req *g, int with_token)
{
    memset(g, 0, sizeof *g);
    snprintf(g->method, sizeof g->method, "POST");
    snprintf(g->region, sizeof g->region, "us-east-1");
    snprintf(g->service, sizeof g->service, "personalize");
    snprintf(g->host, sizeof g->host, "personalize.us-east-1.amazonaws.com");
    snprintf(g->path, sizeof g->path, "/");
    const char *names[] = {"host", "content-type", "x-amz-target"};
    const char *values[] = {g->host, "application/x-amz-json-1.1",
                            "AmazonPersonalize.DescribeBatchInferenceJob"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(g->hname[i], sizeof g->hname[i], "%s", names[i]);
        snprintf(g->hvalue[i], sizeof g->hvalue[i], "%s", values[i]);
    }
    g->nh = 3;
    g->body_len =
        (size_t)snprintf((char *)g->body, sizeof g->body,
                         "{\"batchInferenceJobArn\":\"arn:aws:personalize:us-east-1:123456789012:"
                         "batch-inference-job/nightly-recs\"}");
    random_chars(g->akid, 20, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
    memcpy(g->akid, with_token ? "ASIA" : "AKIA", 4);
    random_chars(g->secret, 40, B64);
    if (with_token)
        random_chars(g->token, 360, B64 "=");
    g->now = 1718900000 + (time_t)pick(86400);
}

static pgw_sigv4_request as_request(struct gen_req *g)
{
    for (size_t i = 0; i < g->nh; i++)
        g->h[i] = (pgw_sigv4_header){g->hname[i], g->hvalue[i]};
    return (pgw_sigv4_request){g->method, g->path, g->query, g->h, g->nh, g->body, g->body_len};
}

/* ---- key cache ---------------------------------------------------------------------------------
 */

static void test_cache(void)
{
    const char *secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    pgw_sigv4_header h[] = {{"Host", "personalize.us-east-1.amazonaws.com"},
                            {"Content-Type", "application/x-amz-json-1.1"}};
    pgw_sigv4_request req = {"POST", "/", NULL, h, 2, "{}", 2};
    pgw_sigv4_credentials cr = {"AKIDEXAMPLE", secret, NULL};
    time_t t = 1718927999; /* 2024-06-20T23:59:59Z */
    pgw_sigv4_context ctx = {&cr, "us-east-1", "personalize", t, 0};
    pgw_sigv4_signer *s = pgw_sigv4_signer_new();
    pgw_sigv4_signer *fresh = pgw_sigv4_signer_new();
    pgw_sigv4_output a, b, c, d;
    CHECK(s != NULL && fresh != NULL);

    CHECK(pgw_sigv4_sign(s, &req, &ctx, &a) == 0);
    CHECK(pgw_sigv4_sign(s, &req, &ctx, &b) == 0);
    CHECK(pgw_sigv4_signer_derivations(s) == 1);
    CHECK_STR(a.authorization, b.authorization);
    /* the cached key must be the key: a signer with an empty cache agrees */
    CHECK(pgw_sigv4_sign(fresh, &req, &ctx, &c) == 0);
    CHECK_STR(a.authorization, c.authorization);
    pgw_sigv4_output_cleanup(&b);
    pgw_sigv4_output_cleanup(&c);

    /* same day, later time: cached key, different signature (the timestamp is signed) */
    ctx.now = t - 3600;
    CHECK(pgw_sigv4_sign(s, &req, &ctx, &b) == 0);
    CHECK(pgw_sigv4_signer_derivations(s) == 1);
    CHECK(strcmp(a.signature, b.signature) != 0);
    pgw_sigv4_output_cleanup(&b);

    /* one second later it is a new UTC day: a new key */
    ctx.now = t + 1;
    CHECK(pgw_sigv4_sign(s, &req, &ctx, &d) == 0);
    CHECK(pgw_sigv4_signer_derivations(s) == 2);
    CHECK(strncmp(d.amz_date, "20240621T000000Z", 16) == 0);
    unsigned char k1[PGW_SIGV4_KEY_LEN], k2[PGW_SIGV4_KEY_LEN];
    CHECK(pgw_sigv4_derive_key(secret, a.amz_date, "us-east-1", "personalize", k1, NULL, 0) == 0);
    CHECK(pgw_sigv4_derive_key(secret, d.amz_date, "us-east-1", "personalize", k2, NULL, 0) == 0);
    CHECK(memcmp(k1, k2, sizeof k1) != 0);
    pgw_sigv4_output_cleanup(&d);

    /* same access key id, rotated secret: never served the old key */
    pgw_sigv4_credentials rotated = {"AKIDEXAMPLE", "another/secret+value", NULL};
    ctx.credentials = &rotated;
    ctx.now = t;
    CHECK(pgw_sigv4_sign(s, &req, &ctx, &b) == 0);
    CHECK(pgw_sigv4_signer_derivations(s) == 3);
    CHECK(strcmp(a.signature, b.signature) != 0);
    pgw_sigv4_output_cleanup(&b);
    ctx.credentials = &cr;

    /* bounded: after more distinct scopes than slots, the oldest entry was evicted */
    char regions[PGW_SIGV4_CACHE_SLOTS + 2][16];
    unsigned long before = pgw_sigv4_signer_derivations(s);
    for (int i = 0; i < PGW_SIGV4_CACHE_SLOTS + 2; i++) {
        snprintf(regions[i], sizeof regions[i], "xx-test-%d", i);
        ctx.region = regions[i];
        CHECK(pgw_sigv4_sign(s, &req, &ctx, &b) == 0);
        pgw_sigv4_output_cleanup(&b);
    }
    CHECK(pgw_sigv4_signer_derivations(s) == before + PGW_SIGV4_CACHE_SLOTS + 2);
    ctx.region = regions[PGW_SIGV4_CACHE_SLOTS + 1]; /* most recent: still cached */
    CHECK(pgw_sigv4_sign(s, &req, &ctx, &b) == 0);
    pgw_sigv4_output_cleanup(&b);
    CHECK(pgw_sigv4_signer_derivations(s) == before + PGW_SIGV4_CACHE_SLOTS + 2);
    ctx.region = "us-east-1"; /* long evicted: derived again, same signature as at first */
    CHECK(pgw_sigv4_sign(s, &req, &ctx, &b) == 0);
    CHECK(pgw_sigv4_signer_derivations(s) == before + PGW_SIGV4_CACHE_SLOTS + 3);
    CHECK_STR(b.authorization, a.authorization);
    pgw_sigv4_output_cleanup(&b);

    pgw_sigv4_output_cleanup(&a);
    pgw_sigv4_output_cleanup(&a); /* twice is safe */
    pgw_sigv4_signer_free(s);
    pgw_sigv4_signer_free(fresh);
}

/* ---- errors ------------------------------------------------------------------------------------
 */

static void expect_error(pgw_sigv4_signer *s, const pgw_sigv4_request *req,
                         const pgw_sigv4_context *ctx, const char *want_in_msg)
{
    pgw_sigv4_output out;
    int rc = pgw_sigv4_sign(s, req, ctx, &out);
    const char *msg = pgw_sigv4_signer_errstr(s);
    CHECK(rc == -1);
    CHECK(out.authorization == NULL && out.n_headers == 0);
    CHECK(msg[0] != '\0');
    if (want_in_msg != NULL && strstr(msg, want_in_msg) == NULL) {
        fprintf(stderr, "error message lacks '%s': %s\n", want_in_msg, msg);
        CHECK(0);
    }
    /* neither the secret nor the token may leak into the message */
    CHECK(strstr(msg, "SECRETSECRET") == NULL);
    CHECK(strstr(msg, "TOKENTOKEN") == NULL);
    pgw_sigv4_output_cleanup(&out);
}

static void test_errors(void)
{
    pgw_sigv4_signer *s = pgw_sigv4_signer_new();
    pgw_sigv4_credentials cr = {"AKIDEXAMPLE", "SECRETSECRETSECRET", "TOKENTOKENTOKEN"};
    pgw_sigv4_context ctx = {&cr, "us-east-1", "personalize", 1718900000, 0};
    pgw_sigv4_header ok_h[] = {{"Host", "example.amazonaws.com"}};
    pgw_sigv4_request req = {"POST", "/", NULL, ok_h, 1, NULL, 0};
    pgw_sigv4_output out;

    CHECK(pgw_sigv4_sign(s, &req, &ctx, &out) == 0);
    CHECK(strcmp(pgw_sigv4_signer_errstr(s), "") == 0);
    CHECK(out.n_headers == 3);
    CHECK_STR(out.headers[1].name, "X-Amz-Security-Token");
    CHECK(strstr(out.authorization, "SignedHeaders=host;x-amz-date;x-amz-security-token,") != NULL);
    pgw_sigv4_output_cleanup(&out);

    pgw_sigv4_header no_host[] = {{"Content-Type", "x"}};
    pgw_sigv4_request r = req;
    r.headers = no_host;
    expect_error(s, &r, &ctx, "host");

    pgw_sigv4_header injected[] = {{"Host", "h"}, {"X-Evil", "a\r\nX-Injected: 1"}};
    r.headers = injected;
    r.n_headers = 2;
    expect_error(s, &r, &ctx, "x-evil");

    pgw_sigv4_header preset[] = {{"Host", "h"}, {"authorization", "x"}};
    r.headers = preset;
    expect_error(s, &r, &ctx, "authorization");

    pgw_sigv4_header bad_name[] = {{"Host", "h"}, {"Bad Name", "x"}};
    r.headers = bad_name;
    expect_error(s, &r, &ctx, "name");

    pgw_sigv4_header many[PGW_SIGV4_MAX_HEADERS + 1];
    for (size_t i = 0; i < PGW_SIGV4_MAX_HEADERS + 1; i++)
        many[i] = (pgw_sigv4_header){"Host", "h"};
    r.headers = many;
    r.n_headers = PGW_SIGV4_MAX_HEADERS + 1;
    expect_error(s, &r, &ctx, "headers");

    static char long_path[PGW_SIGV4_MAX_PATH + 2];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[0] = '/';
    r = req;
    r.path = long_path;
    expect_error(s, &r, &ctx, "path");
    r.path = "relative";
    expect_error(s, &r, &ctx, "path");
    r = req;
    r.method = "GE T";
    expect_error(s, &r, &ctx, "method");

    pgw_sigv4_context c2 = ctx;
    c2.region = "us east 1";
    expect_error(s, &req, &c2, "region");
    c2 = ctx;
    c2.service = "";
    expect_error(s, &req, &c2, "service");

    pgw_sigv4_credentials bad_token = {"AKIDEXAMPLE", "SECRETSECRETSECRET", "TOKENTOKEN\nX: y"};
    c2 = ctx;
    c2.credentials = &bad_token;
    expect_error(s, &req, &c2, "session token");
    pgw_sigv4_credentials no_secret = {"AKIDEXAMPLE", "", NULL};
    c2.credentials = &no_secret;
    expect_error(s, &req, &c2, "secret");
    pgw_sigv4_credentials bad_id = {"AKID/EXAMPLE", "SECRETSECRETSECRET", NULL};
    c2.credentials = &bad_id;
    expect_error(s, &req, &c2, "access key id");

    /* the stage API reports through its err buffer, and tolerates err == NULL */
    char *creq = NULL;
    char err[PGW_SIGV4_ERR_LEN] = "";
    r = req;
    r.query = "a=1";
    r.path = "no-slash";
    CHECK(pgw_sigv4_canonical_request(&r, 0, &creq, NULL, err, sizeof err) == -1);
    CHECK(creq == NULL && strstr(err, "path") != NULL);
    CHECK(pgw_sigv4_canonical_request(&r, 0, &creq, NULL, NULL, 0) == -1);
    char sts[PGW_SIGV4_MAX_STS];
    CHECK(pgw_sigv4_string_to_sign("2024-06-20", "us-east-1", "s", "x", sts, sizeof sts, err,
                                   sizeof err) == -1);
    CHECK(pgw_sigv4_string_to_sign("20240620T000000Z", "us-east-1", "s", "x", sts, 10, err,
                                   sizeof err) == -1);
    pgw_sigv4_signer_free(s);
}

/* ---- botocore ----------------------------------------------------------------------------------
 */

static char *hex_of(const unsigned char *p, size_t n)
{
    char *out = malloc(2 * n + 1);
    for (size_t i = 0; out && i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", p[i]);
    if (out)
        out[2 * n] = '\0';
    return out;
}

static json_t *spec_json(const struct gen_req *g)
{
    char amz_date[PGW_SIGV4_AMZ_DATE_LEN + 1];
    if (pgw_sigv4_format_date(g->now, amz_date) != 0)
        return NULL;
    json_t *headers = json_array();
    for (size_t i = 0; i < g->nh; i++)
        json_array_append_new(headers, json_pack("[ss]", g->hname[i], g->hvalue[i]));
    char *body_hex = hex_of(g->body, g->body_len);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s, s:s?, s:s, s:s, s:s}", "method",
                  g->method, "host", g->host, "path", g->path, "query", g->query, "headers",
                  headers, "body_hex", body_hex ? body_hex : "", "access_key_id", g->akid,
                  "secret_access_key", g->secret, "session_token", g->token[0] ? g->token : NULL,
                  "region", g->region, "service", g->service, "amz_date", amz_date);
    free(body_hex);
    return o;
}

/* Runs the botocore helper on the specs; returns its parsed JSON list, or NULL. */
static json_t *run_botocore(json_t *specs)
{
    const char *py = getenv("PGW_PYTHON");
    const char *tdir = getenv("PGW_TEST_DIR");
    if (py == NULL || py[0] == '\0')
        py = "/usr/bin/python3";
    if (tdir == NULL || tdir[0] == '\0') {
        fprintf(stderr, "PGW_TEST_DIR is not set (ctest sets it to the tests/ source dir)\n");
        return NULL;
    }
    if (strchr(py, '\'') || strchr(tdir, '\'')) {
        fprintf(stderr, "PGW_PYTHON or PGW_TEST_DIR contains a quote\n");
        return NULL;
    }
    char in_path[] = "/tmp/pgw-sigv4-botocore-XXXXXX";
    int fd = mkstemp(in_path);
    if (fd < 0) {
        perror("mkstemp");
        return NULL;
    }
    close(fd);
    json_t *result = NULL;
    char *buf = NULL;
    FILE *p = NULL;
    if (json_dump_file(specs, in_path, JSON_COMPACT) != 0) {
        fprintf(stderr, "cannot write %s\n", in_path);
        goto done;
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' '%s/unit/sigv4_botocore_check.py' '%s'", py, tdir, in_path);
    p = popen(cmd, "r");
    if (p == NULL) {
        perror("popen");
        goto done;
    }
    buf = malloc(MAX_OUTPUT + 1);
    size_t n = buf ? fread(buf, 1, MAX_OUTPUT + 1, p) : 0;
    int status = pclose(p);
    if (buf == NULL || n > MAX_OUTPUT || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "botocore helper failed (status %d): %s\n", status, cmd);
        goto done;
    }
    buf[n] = '\0';
    json_error_t jerr;
    result = json_loads(buf, 0, &jerr);
    if (result == NULL || !json_is_array(result))
        fprintf(stderr, "botocore helper output is not a JSON list: %s\n", jerr.text);
done:
    free(buf);
    unlink(in_path);
    return result;
}

static void describe(const struct gen_req *g, size_t i)
{
    fprintf(stderr, "request %zu: %s %s ? %s, %s/%s, t=%lld, token=%s, headers:", i, g->method,
            g->path, g->query, g->region, g->service, (long long)g->now,
            g->token[0] ? "yes" : "no");
    for (size_t k = 0; k < g->nh; k++)
        fprintf(stderr, " [%s: %s]", g->hname[k], g->hvalue[k]);
    fprintf(stderr, "\n");
}

/* Our canonical request with the token replaced by "<token>", to set beside botocore's. */
static void print_our_canonical(struct gen_req *g)
{
    pgw_sigv4_request req = as_request(g);
    pgw_sigv4_header h[MAX_GEN_HDRS + 2];
    char amz_date[PGW_SIGV4_AMZ_DATE_LEN + 1];
    pgw_sigv4_format_date(g->now, amz_date);
    memcpy(h, req.headers, g->nh * sizeof h[0]);
    size_t n = g->nh;
    h[n++] = (pgw_sigv4_header){"x-amz-date", amz_date};
    if (g->token[0])
        h[n++] = (pgw_sigv4_header){"x-amz-security-token", "<token>"};
    req.headers = h;
    req.n_headers = n;
    char *creq = NULL;
    char err[PGW_SIGV4_ERR_LEN];
    if (pgw_sigv4_canonical_request(&req, 0, &creq, NULL, err, sizeof err) == 0)
        fprintf(stderr, "  ours:\n%s\n", creq);
    pgw_sigv4_string_free(creq);
}

static void test_botocore(void)
{
    static struct gen_req reqs[N_REQ];
    for (size_t i = 0; i < N_RANDOM; i++)
        gen_random(&reqs[i]);
    gen_personalize(&reqs[N_RANDOM], 0);
    gen_personalize(&reqs[N_RANDOM + 1], 1);

    json_t *specs = json_array();
    for (size_t i = 0; i < N_REQ; i++) {
        json_t *o = spec_json(&reqs[i]);
        CHECK(o != NULL);
        json_array_append_new(specs, o);
    }
    json_t *theirs = run_botocore(specs);
    json_decref(specs);
    CHECK(theirs != NULL && json_array_size(theirs) == N_REQ);
    if (theirs == NULL || json_array_size(theirs) != N_REQ) {
        json_decref(theirs);
        return;
    }

    pgw_sigv4_signer *s = pgw_sigv4_signer_new();
    size_t agreed = 0, with_token = 0;
    for (size_t i = 0; i < N_REQ; i++) {
        struct gen_req *g = &reqs[i];
        pgw_sigv4_request req = as_request(g);
        pgw_sigv4_credentials cr = {g->akid, g->secret, g->token[0] ? g->token : NULL};
        pgw_sigv4_context ctx = {&cr, g->region, g->service, g->now, 0};
        pgw_sigv4_output out;
        json_t *t = json_array_get(theirs, i);
        const char *their_auth = json_string_value(json_object_get(t, "authorization"));
        const char *their_date = json_string_value(json_object_get(t, "x_amz_date"));
        const char *their_tok = json_string_value(json_object_get(t, "x_amz_security_token"));

        if (pgw_sigv4_sign(s, &req, &ctx, &out) != 0) {
            describe(g, i);
            fprintf(stderr, "  we failed to sign: %s\n", pgw_sigv4_signer_errstr(s));
            CHECK(0);
            continue;
        }
        int ok = their_auth && strcmp(out.authorization, their_auth) == 0;
        CHECK_STR(out.authorization, their_auth);
        CHECK_STR(out.amz_date, their_date);
        /* compared without printing: the token is a credential */
        CHECK((out.security_token == NULL && their_tok == NULL) ||
              (out.security_token && their_tok && strcmp(out.security_token, their_tok) == 0));
        if (!ok) {
            describe(g, i);
            fprintf(stderr, "  botocore:\n%s\n",
                    json_string_value(json_object_get(t, "canonical_request")));
            print_our_canonical(g);
        }
        agreed += ok;
        with_token += out.security_token != NULL;
        pgw_sigv4_output_cleanup(&out);
    }
    printf("botocore agreement: %zu of %d requests (%zu with a session token)\n", agreed, N_REQ,
           with_token);
    CHECK(with_token > 0 && with_token < N_REQ);
    pgw_sigv4_signer_free(s);
    json_decref(theirs);
}

int main(void)
{
    uint64_t seed = 0x5167763420242024ull;
    const char *env_seed = getenv("PGW_SIGV4_SEED");
    if (env_seed != NULL && env_seed[0] != '\0')
        seed = strtoull(env_seed, NULL, 0);
    rng_state = seed;
    printf("seed 0x%016" PRIx64 " (set PGW_SIGV4_SEED to replay another)\n", seed);

    test_cache();
    test_errors();
    test_botocore();
    return pgw_test_finish("test_sigv4_botocore");
}
