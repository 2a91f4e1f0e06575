/* Unit tests for service/aws/arn: accepted ARNs, rejected ARNs (with the crafted regions that
 * would otherwise redirect the signed call), and the error messages' safety. */
#include "service/aws/arn.h"

#include <string.h>

#include "test_util.h"

/* True if the message has no byte outside printable ASCII. */
static int printable(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    }
    return 1;
}

static void expect_ok(const char *s, const char *partition, const char *region, const char *account,
                      const char *name, const char *endpoint)
{
    pgw_arn a;
    char err[256] = "untouched";
    char ep[128];
    int rc = pgw_arn_parse(s, strlen(s), &a, err, sizeof(err));
    CHECK(rc == 0);
    if (rc != 0) {
        fprintf(stderr, "  rejected %s: %s\n", s, err);
        return;
    }
    CHECK_STR(err, "");
    CHECK_STR(a.partition, partition);
    CHECK_STR(a.region, region);
    CHECK_STR(a.account, account);
    CHECK_STR(a.job_name, name);
    CHECK(pgw_arn_default_endpoint(&a, ep, sizeof(ep)) == 0);
    CHECK_STR(ep, endpoint);
}

/* Expects rejection with a message containing `want` that is safe to print. */
static void expect_bad_n(const char *s, size_t len, const char *want)
{
    pgw_arn a;
    char err[256] = "";
    memset(&a, 0x5a, sizeof(a));
    int rc = pgw_arn_parse(s, len, &a, err, sizeof(err));
    CHECK(rc == -1);
    CHECK(strstr(err, want) != NULL);
    CHECK(printable(err));
    CHECK(a.region[0] == '\0' && a.job_name[0] == '\0'); /* zeroed on failure */
    if (rc != -1 || strstr(err, want) == NULL)
        fprintf(stderr, "  input \"%.*s\": got \"%s\", want \"%s\"\n", (int)len, s ? s : "", err,
                want);
}

static void expect_bad(const char *s, const char *want)
{
    expect_bad_n(s, strlen(s), want);
}

static void test_good(void)
{
    expect_ok("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/my-job", "aws",
              "us-east-1", "123456789012", "my-job", "https://personalize.us-east-1.amazonaws.com");
    expect_ok("arn:aws:personalize:ap-southeast-2:000000000000:batch-inference-job/J", "aws",
              "ap-southeast-2", "000000000000", "J",
              "https://personalize.ap-southeast-2.amazonaws.com");
    expect_ok("arn:aws-cn:personalize:cn-northwest-1:123456789012:batch-inference-job/a_b-c9",
              "aws-cn", "cn-northwest-1", "123456789012", "a_b-c9",
              "https://personalize.cn-northwest-1.amazonaws.com.cn");
    expect_ok("arn:aws-us-gov:personalize:us-gov-west-1:123456789012:batch-inference-job/9x",
              "aws-us-gov", "us-gov-west-1", "123456789012", "9x",
              "https://personalize.us-gov-west-1.amazonaws.com");
    expect_ok("arn:aws:personalize:eu-central-12:123456789012:batch-inference-job/x", "aws",
              "eu-central-12", "123456789012", "x",
              "https://personalize.eu-central-12.amazonaws.com");

    /* The longest job name (63). */
    char name63[64], arn[200];
    memset(name63, 'n', 63);
    name63[63] = '\0';
    snprintf(arn, sizeof(arn), "arn:aws:personalize:us-west-2:123456789012:batch-inference-job/%s",
             name63);
    expect_ok(arn, "aws", "us-west-2", "123456789012", name63,
              "https://personalize.us-west-2.amazonaws.com");

    /* The input need not be NUL-terminated: only len bytes are read. */
    const char *buf = "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/abcTRAILING";
    pgw_arn a;
    size_t n = strlen(buf) - strlen("TRAILING");
    CHECK(pgw_arn_parse(buf, n, &a, NULL, 0) == 0);
    CHECK_STR(a.job_name, "abc");

    /* A NULL err buffer is fine on failure too. */
    CHECK(pgw_arn_parse("nope", 4, &a, NULL, 0) == -1);
}

static void test_structure(void)
{
    expect_bad("", "batch inference job ARN is empty");
    expect_bad_n(NULL, 0, "is empty");
    expect_bad("arn",
               "must be arn:<partition>:personalize:<region>:<account>:batch-inference-job/");
    expect_bad("arn:aws:personalize:us-east-1:123456789012", "must be arn:<partition>");
    expect_bad("ARN:aws:personalize:us-east-1:123456789012:batch-inference-job/x",
               "must be arn:<partition>");
    expect_bad(" arn:aws:personalize:us-east-1:123456789012:batch-inference-job/x",
               "must be arn:<partition>");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/x:1",
               "must be arn:<partition>");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job:x",
               "must be arn:<partition>");

    /* Length: 257 characters. */
    char big[300];
    int n = snprintf(big, sizeof(big),
                     "arn:aws:personalize:us-east-1:123456789012:"
                     "batch-inference-job/");
    memset(big + n, 'a', 257 - (size_t)n);
    big[257] = '\0';
    expect_bad(big, "is longer than 256 characters");

    /* Control characters and NUL anywhere, reported without echoing them. */
    expect_bad_n("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a\0b", 66,
                 "control character 0x00");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a\nb",
               "control character 0x0a");
    expect_bad("arn:aws:personalize:us-east-1\r:123456789012:batch-inference-job/a",
               "control character 0x0d");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a\x7f",
               "control character 0x7f");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/\xc3\xa9",
               "non-ASCII");
}

static void test_partition_service(void)
{
    expect_bad("arn:aws-iso:personalize:us-iso-east-1:123456789012:batch-inference-job/x",
               "partition \"aws-iso\", which is not supported");
    expect_bad("arn:AWS:personalize:us-east-1:123456789012:batch-inference-job/x",
               "partition \"AWS\"");
    expect_bad("arn::personalize:us-east-1:123456789012:batch-inference-job/x", "partition \"\"");
    expect_bad("arn:aws:s3:us-east-1:123456789012:batch-inference-job/x",
               "service \"s3\", expected \"personalize\"");
    expect_bad("arn:aws:Personalize:us-east-1:123456789012:batch-inference-job/x", "service");
    expect_bad("arn:aws-cn:personalize:us-east-1:123456789012:batch-inference-job/x",
               "not in partition \"aws-cn\"");
    expect_bad("arn:aws:personalize:cn-north-1:123456789012:batch-inference-job/x",
               "not in partition \"aws\"");
    expect_bad("arn:aws:personalize:us-gov-east-1:123456789012:batch-inference-job/x",
               "not in partition \"aws\"");
    expect_bad("arn:aws-us-gov:personalize:us-east-1:123456789012:batch-inference-job/x",
               "not in partition \"aws-us-gov\"");
}

static void test_regions(void)
{
    static const struct {
        const char *region;
        const char *quoted; /* how the message quotes it */
    } bad[] = {
        {"", ""},
        {"us-east-1.evil.example", "us-east-1.evil.example"},
        {"us-east-1/x", "us-east-1/x"},
        {"us-east-1@evil", "us-east-1@evil"},
        {"evil.example/us-east-1", "evil.example/us-east-1"},
        {"US-EAST-1", "US-EAST-1"},
        {"us-East-1", "us-East-1"},
        {"us-east-123", "us-east-123"},
        {"us-east-", "us-east-"},
        {"us-east", "us-east"},
        {"us-1", "us-1"},
        {"u-east-1", "u-east-1"},
        {"use-east-1", "use-east-1"},
        {"us--east-1", "us--east-1"},
        {"us-east-1-", "us-east-1-"},
        {"us-east-1a", "us-east-1a"},
        {"us_east_1", "us_east_1"},
        {"us-east-1 ", "us-east-1 "},
        {"us-east-1\"x", "us-east-1\\\"x"},
        {"us-east-1\\x", "us-east-1\\\\x"},
        {"localhost", "localhost"},
        {"us-east-1?x=1", "us-east-1?x=1"},
        {"us-east-1#", "us-east-1#"},
        {"us-east-1%2f", "us-east-1%2f"},
        {"us-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-1", "us-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arn[256], want[160];
        snprintf(arn, sizeof(arn), "arn:aws:personalize:%s:123456789012:batch-inference-job/x",
                 bad[i].region);
        snprintf(want, sizeof(want), "region \"%s\", which is not a valid AWS region name",
                 bad[i].quoted);
        expect_bad(arn, want);
    }
}

static void test_account_resource(void)
{
    expect_bad("arn:aws:personalize:us-east-1:12345678901:batch-inference-job/x",
               "account \"12345678901\", which is not 12 digits");
    expect_bad("arn:aws:personalize:us-east-1:1234567890123:batch-inference-job/x",
               "account \"1234567890123\"");
    expect_bad("arn:aws:personalize:us-east-1:12345678901a:batch-inference-job/x", "account");
    expect_bad("arn:aws:personalize:us-east-1::batch-inference-job/x", "account \"\"");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:solution/x",
               "resource \"solution/x\", expected batch-inference-job/<name>");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job",
               "resource \"batch-inference-job\"");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/", "job name \"\"");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/-x",
               "job name \"-x\"");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/_x", "job name");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a.b", "job name");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a/b", "job name");
    expect_bad("arn:aws:personalize:us-east-1:123456789012:batch-inference-job/a b", "job name");
    char name64[65], arn[200];
    memset(name64, 'n', 64);
    name64[64] = '\0';
    snprintf(arn, sizeof(arn), "arn:aws:personalize:us-west-2:123456789012:batch-inference-job/%s",
             name64);
    expect_bad(arn, "job name");

    /* A long quoted part is truncated, and the message still fits a small buffer. */
    char longacct[101];
    memset(longacct, '7', 100);
    longacct[100] = '\0';
    snprintf(arn, sizeof(arn), "arn:aws:personalize:us-east-1:%s:batch-inference-job/x", longacct);
    expect_bad(arn, "777...\", which is not 12 digits");
    pgw_arn a;
    char tiny[16];
    CHECK(pgw_arn_parse(arn, strlen(arn), &a, tiny, sizeof(tiny)) == -1);
    CHECK(strlen(tiny) == sizeof(tiny) - 1);
}

static void test_endpoint(void)
{
    pgw_arn a;
    const char *s = "arn:aws-cn:personalize:cn-north-1:123456789012:batch-inference-job/x";
    CHECK(pgw_arn_parse(s, strlen(s), &a, NULL, 0) == 0);
    CHECK_STR(pgw_arn_dns_suffix(&a), "amazonaws.com.cn");
    char small[20];
    CHECK(pgw_arn_default_endpoint(&a, small, sizeof(small)) == -1);
    CHECK_STR(small, "");
    char ep[64];
    CHECK(pgw_arn_default_endpoint(&a, ep, sizeof(ep)) == 0);
    CHECK_STR(ep, "https://personalize.cn-north-1.amazonaws.com.cn");
}

int main(void)
{
    test_good();
    test_structure();
    test_partition_service();
    test_regions();
    test_account_resource();
    test_endpoint();
    return pgw_test_finish("test_arn");
}
