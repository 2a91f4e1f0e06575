/* The shared config/credentials file parser and profile resolution rules. */
#include <stdlib.h>
#include <string.h>

#include "service/aws/credentials_ini.h"
#include "service/aws/credentials_profile.h"
#include "test_util.h"

static pgw_ini *parse(const char *text)
{
    char err[200];
    pgw_ini *ini = pgw_ini_parse(text, strlen(text), err, sizeof(err));
    if (!ini)
        fprintf(stderr, "parse error: %s\n", err);
    return ini;
}

static void test_basic_rules(void)
{
    pgw_ini *ini = parse("# comment\n"
                         "; another\n"
                         "[default]\n"
                         "aws_access_key_id = AKIADEFAULT\n"
                         "AWS_Secret_Access_Key=  s3cr=et  \n"
                         "\n"
                         "[profile   dev ]\r\n"
                         "region = eu-west-1\r\n"
                         "s3 =\n"
                         "  max_concurrent_requests = 20\n"
                         "  region = nested-must-be-skipped\n"
                         "role_arn = arn:aws:iam::1:role/x\n"
                         "[default]\n"
                         "aws_session_token = tok\n"
                         "aws_access_key_id = AKIALATER\n");
    CHECK(ini != NULL);
    CHECK_STR(pgw_ini_get(ini, "default", "aws_access_key_id"), "AKIALATER");
    CHECK_STR(pgw_ini_get(ini, "default", "aws_secret_access_key"), "s3cr=et");
    CHECK_STR(pgw_ini_get(ini, "default", "AWS_SESSION_TOKEN"), "tok");
    CHECK_STR(pgw_ini_get(ini, "profile dev", "region"), "eu-west-1");
    CHECK_STR(pgw_ini_get(ini, "profile dev", "s3"), "");
    CHECK_STR(pgw_ini_get(ini, "profile dev", "role_arn"), "arn:aws:iam::1:role/x");
    CHECK(pgw_ini_get(ini, "profile dev", "max_concurrent_requests") == NULL);
    CHECK(pgw_ini_get(ini, "dev", "region") == NULL);
    CHECK(pgw_ini_has_section(ini, "profile dev"));
    CHECK(!pgw_ini_has_section(ini, "profile other"));
    pgw_ini_free(ini);
}

static void test_errors(void)
{
    char err[200] = "";
    const char *outside = "key = value\n[default]\n";
    CHECK(pgw_ini_parse(outside, strlen(outside), err, sizeof(err)) == NULL);
    CHECK(strstr(err, "line 1") != NULL);
    const char *unclosed = "[default\nkey = v\n";
    CHECK(pgw_ini_parse(unclosed, strlen(unclosed), err, sizeof(err)) == NULL);
    const char *secret_line = "[default]\nthis-is-s3cret-no-equals\n";
    CHECK(pgw_ini_parse(secret_line, strlen(secret_line), err, sizeof(err)) == NULL);
    CHECK(strstr(err, "line 2") != NULL);
    CHECK(strstr(err, "s3cret") == NULL); /* errors never quote content */
    const char *empty = "";
    pgw_ini *ini = pgw_ini_parse(empty, 0, err, sizeof(err));
    CHECK(ini != NULL);
    CHECK(pgw_ini_get(ini, "default", "x") == NULL);
    pgw_ini_free(ini);
    CHECK(pgw_ini_get(NULL, "default", "x") == NULL);
    /* A NUL byte is refused: "[default\0x]" would otherwise read as "[default]" (found by
     * fuzz_credentials_ini). */
    const char nul[] = "[dev]\nk = v\n[default\0x]\naws_access_key_id = A\n";
    CHECK(pgw_ini_parse(nul, sizeof(nul) - 1, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "line 3") != NULL && strstr(err, "NUL") != NULL);
}

static void test_profile_lookup(void)
{
    pgw_ini *config = parse("[default]\nregion = us-east-1\n"
                            "[profile app]\nrole_arn = arn:aws:iam::1:role/app\n"
                            "source_profile = base\nregion = us-west-2\n"
                            "[app]\nrole_arn = not-a-profile-section-in-config\n");
    pgw_ini *creds = parse("[base]\naws_access_key_id = AKIABASE\naws_secret_access_key = s\n"
                           "[app]\nregion = from-credentials-file\n");
    CHECK(pgw_credentials_profile_exists(config, creds, "app"));
    CHECK(pgw_credentials_profile_exists(config, creds, "base"));
    CHECK(pgw_credentials_profile_exists(config, NULL, "default"));
    CHECK(!pgw_credentials_profile_exists(config, creds, "nope"));
    /* The credentials file wins over the config file. */
    CHECK_STR(pgw_credentials_profile_get(config, creds, "app", "region"), "from-credentials-file");
    CHECK_STR(pgw_credentials_profile_get(config, creds, "app", "role_arn"),
              "arn:aws:iam::1:role/app");
    CHECK_STR(pgw_credentials_profile_get(config, creds, "default", "region"), "us-east-1");

    char err[300];
    /* Static keys resolve without I/O; a role without a source is an error naming the rule. */
    pgw_credentials_provider *p =
        pgw_credentials_provider_profile_new(NULL, config, creds, "base", err, sizeof(err));
    CHECK(p != NULL);
    pgw_credentials_provider_free(p);
    pgw_ini *bad = parse("[profile loop1]\nrole_arn = r\nsource_profile = loop2\n"
                         "[profile loop2]\nrole_arn = r\nsource_profile = loop1\n"
                         "[profile nosrc]\nrole_arn = r\n"
                         "[profile proc]\ncredential_process = /bin/secret-helper\n");
    CHECK(pgw_credentials_provider_profile_new(NULL, bad, NULL, "loop1", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "loop") != NULL);
    CHECK(pgw_credentials_provider_profile_new(NULL, bad, NULL, "nosrc", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "source_profile") != NULL);
    CHECK(pgw_credentials_provider_profile_new(NULL, bad, NULL, "proc", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "not supported") != NULL);
    CHECK(strstr(err, "secret-helper") == NULL);
    CHECK(pgw_credentials_provider_profile_new(NULL, bad, NULL, "absent", err, sizeof(err)) ==
          NULL);
    pgw_ini_free(bad);
    pgw_ini_free(config);
    pgw_ini_free(creds);
}

/* Names from the files are quoted in messages, so a message (logged as JSON) stays printable
 * whatever the file holds (fuzz_credentials_ini checks it on every resolution). */
static void test_profile_errors_quoted(void)
{
    const char text[] = "[a\x1b[31m\xff]\nrole_arn = r\nsource_profile = gone\xc3\n";
    char err[400] = "";
    pgw_ini *ini = pgw_ini_parse(text, sizeof(text) - 1, err, sizeof(err));
    CHECK(ini != NULL);
    pgw_credentials_provider *p =
        pgw_credentials_provider_profile_new(NULL, NULL, ini, "a\x1b[31m\xff", err, sizeof(err));
    CHECK(p == NULL);
    CHECK_STR(err, "profile \"a\\x1b[31m\\xff\": source_profile \"gone\\xc3\" not found");
    pgw_ini_free(ini);
}

int main(void)
{
    test_basic_rules();
    test_errors();
    test_profile_lookup();
    test_profile_errors_quoted();
    return pgw_test_finish("test_credentials_ini");
}
