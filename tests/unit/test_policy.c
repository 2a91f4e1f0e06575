/* The authorization policy: parsing and validation, matching, and reloading from a file. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "service/aws/arn.h"
#include "service/policy.h"
#include "test_util.h"

static pgw_arn arn_of(const char *s)
{
    pgw_arn a;
    char err[200];
    if (pgw_arn_parse(s, strlen(s), &a, err, sizeof(err)) != 0) {
        fprintf(stderr, "bad test ARN %s: %s\n", s, err);
        exit(1);
    }
    return a;
}

static pgw_policy *parse(const char *text)
{
    char err[300];
    pgw_policy *p = pgw_policy_parse(text, strlen(text), err, sizeof(err));
    if (!p)
        fprintf(stderr, "parse failed: %s\n", err);
    return p;
}

/* Parses text expecting a failure whose message contains `want`. */
static void parse_fails(const char *text, const char *want)
{
    char err[300] = "";
    pgw_policy *p = pgw_policy_parse(text, strlen(text), err, sizeof(err));
    CHECK(p == NULL);
    pgw_policy_free(p);
    if (!strstr(err, want))
        fprintf(stderr, "error \"%s\" lacks \"%s\"\n", err, want);
    CHECK(strstr(err, want) != NULL);
}

static void test_glob(void)
{
    CHECK(pgw_policy_glob_match("*", ""));
    CHECK(pgw_policy_glob_match("*", "anything"));
    CHECK(pgw_policy_glob_match("abc", "abc"));
    CHECK(!pgw_policy_glob_match("abc", "abcd"));
    CHECK(!pgw_policy_glob_match("abcd", "abc"));
    CHECK(pgw_policy_glob_match("a*c", "abbbc"));
    CHECK(pgw_policy_glob_match("a*c", "ac"));
    CHECK(!pgw_policy_glob_match("a*c", "acb"));
    CHECK(pgw_policy_glob_match("a*b*c", "aXbYbZc"));
    CHECK(
        pgw_policy_glob_match("*job/recs-*", "arn:aws:personalize:x:1:batch-inference-job/recs-1"));
    CHECK(!pgw_policy_glob_match("*job/recs-*", "arn:aws:personalize:x:1:batch-inference-job/rec"));
    CHECK(pgw_policy_glob_match("**", "x"));
    /* Backtracking: the first candidate for the star is not the right one. */
    CHECK(pgw_policy_glob_match("*aab", "aaaab"));
    CHECK(!pgw_policy_glob_match("*aab", "aaaa"));
}

static void test_validation(void)
{
    parse_fails("[]", "JSON object");
    parse_fails("{\"rules\": 1}", "\"rules\" must be a list");
    parse_fails("{\"rule\": []}", "unknown top-level key");
    parse_fails("{\"version\": 2, \"rules\": []}", "\"version\" must be 1");
    parse_fails("{\"rules\": [", "invalid JSON at line 1");
    parse_fails("{\"rules\": [], \"rules\": []}", "invalid JSON");
    parse_fails("{\"rules\": [1]}", "rule 0 is not an object");
    parse_fails("{\"rules\": [{\"arns\": [\"*\"]}]}", "rule 0: \"callers\" is required");
    parse_fails("{\"rules\": [{\"callers\": []}]}", "non-empty list");
    parse_fails("{\"rules\": [{\"callers\": [\"a\"]}]}", "needs at least one of");
    parse_fails("{\"rules\": [{\"callers\": [\"a*b\"], \"arns\": [\"*\"]}]}", "prefix ending in *");
    parse_fails("{\"rules\": [{\"callers\": [\"a\"], \"accounts\": [\"12345\"]}]}",
                "12-digit account");
    parse_fails("{\"rules\": [{\"callers\": [\"a\"], \"regions\": [\"US_EAST\"]}]}",
                "a region name");
    /* A misspelt constraint must not silently drop it (which would widen the rule). */
    parse_fails("{\"rules\": [{\"callers\": [\"a\"], \"arns\": [\"*\"], \"region\": [\"x\"]}]}",
                "unknown key \"region\"");
    parse_fails("{\"rules\": [{\"callers\": [\"a\"], \"arns\": [7]}]}", "ARN pattern");

    pgw_policy *p = parse("{\"version\": 1, \"rules\": []}");
    CHECK(p != NULL);
    CHECK(pgw_policy_rule_count(p) == 0);
    pgw_policy_free(p);
}

static const char *POLICY =
    "{\"rules\": ["
    " {\"callers\": [\"spiffe://test/ns/a/sa/allowed\"],"
    "  \"arns\": [\"arn:aws:personalize:*:111122223333:batch-inference-job/recs-*\"]},"
    " {\"callers\": [\"spiffe://test/ns/ml/*\"], \"accounts\": [\"444455556666\"],"
    "  \"regions\": [\"eu-west-1\"], \"comment\": \"ml team, Ireland only\"},"
    " {\"callers\": [\"*\"], \"arns\": [\"*:batch-inference-job/public-*\"]}"
    "]}";

static pgw_policy_decision check(const pgw_policy *p, const char *identity, const char *arn)
{
    pgw_arn a = arn_of(arn);
    char why[400];
    pgw_policy_decision d = pgw_policy_check(p, identity, &a, why, sizeof(why));
    if (d != PGW_POLICY_ALLOW)
        CHECK(why[0] != '\0');
    return d;
}

static void test_check(void)
{
    pgw_policy *p = parse(POLICY);
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK(pgw_policy_rule_count(p) == 3);
    const char *allowed = "spiffe://test/ns/a/sa/allowed";
    const char *recs = "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/recs-7";

    /* exact caller + ARN pattern */
    CHECK(check(p, allowed, recs) == PGW_POLICY_ALLOW);
    CHECK(check(p, allowed,
                "arn:aws:personalize:eu-west-1:111122223333:batch-inference-job/recs-1") ==
          PGW_POLICY_ALLOW);
    CHECK(check(p, allowed, "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/ads") ==
          PGW_POLICY_DENY);
    CHECK(check(p, allowed,
                "arn:aws:personalize:us-east-1:999922223333:batch-inference-job/recs-1") ==
          PGW_POLICY_DENY);
    /* exact means exact: a longer or shorter identity does not match */
    CHECK(check(p, "spiffe://test/ns/a/sa/allowed2", recs) == PGW_POLICY_DENY);
    CHECK(check(p, "spiffe://test/ns/a/sa/allowe", recs) == PGW_POLICY_DENY);
    CHECK(check(p, "spiffe://test/ns/a/sa/other", recs) == PGW_POLICY_DENY);

    /* prefix caller; account AND region */
    const char *ml = "spiffe://test/ns/ml/sa/trainer";
    CHECK(check(p, ml, "arn:aws:personalize:eu-west-1:444455556666:batch-inference-job/x") ==
          PGW_POLICY_ALLOW);
    CHECK(check(p, ml, "arn:aws:personalize:us-east-1:444455556666:batch-inference-job/x") ==
          PGW_POLICY_DENY);
    CHECK(check(p, ml, "arn:aws:personalize:eu-west-1:111122223333:batch-inference-job/x") ==
          PGW_POLICY_DENY);
    CHECK(check(p, "spiffe://test/ns/mlx/sa/t",
                "arn:aws:personalize:eu-west-1:444455556666:batch-inference-job/x") ==
          PGW_POLICY_DENY);

    /* any identified caller */
    CHECK(check(p, "dns-name.example",
                "arn:aws:personalize:us-west-2:123456789012:"
                "batch-inference-job/public-1") == PGW_POLICY_ALLOW);
    CHECK(check(p, NULL,
                "arn:aws:personalize:us-west-2:123456789012:"
                "batch-inference-job/public-1") == PGW_POLICY_NO_IDENTITY);
    CHECK(check(p, "", recs) == PGW_POLICY_NO_IDENTITY);

    /* the refusal names the caller but nothing of the policy */
    pgw_arn a = arn_of(recs);
    char why[400];
    CHECK(pgw_policy_check(p, "spiffe://test/ns/a/sa/other", &a, why, sizeof(why)) ==
          PGW_POLICY_DENY);
    CHECK(strstr(why, "spiffe://test/ns/a/sa/other") != NULL);
    CHECK(strstr(why, "111122223333") == NULL);

    /* no policy: everything allowed, identity or not */
    CHECK(pgw_policy_check(NULL, NULL, &a, why, sizeof(why)) == PGW_POLICY_ALLOW);
    pgw_policy_free(p);

    /* default deny: an empty policy refuses everyone */
    p = parse("{\"rules\": []}");
    CHECK(check(p, allowed, recs) == PGW_POLICY_DENY);
    pgw_policy_free(p);
}

static void write_file(const char *path, const char *text)
{
    /* Write a new file and rename it over the old, as a ConfigMap update does. */
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    CHECK(rename(tmp, path) == 0);
}

static const char *V1 = "{\"rules\": [{\"callers\": [\"a\"], \"arns\": [\"*\"]}]}";
static const char *V2 = "{\"rules\": [{\"callers\": [\"b\"], \"arns\": [\"*\"]},"
                        " {\"callers\": [\"c\"], \"arns\": [\"*\"]}]}";

typedef struct watch_state {
    int reloads, errors;
    struct event_base *base;
} watch_state;

static void on_reload(int rc, const char *err, void *ud)
{
    watch_state *w = ud;
    if (rc > 0)
        w->reloads++;
    else
        w->errors++;
    event_base_loopbreak(w->base);
}

static void test_file(void)
{
    char dir[] = "/tmp/pgw_test_policy_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[300];
    snprintf(path, sizeof(path), "%s/policy.json", dir);
    char err[400];
    const char *arn = "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/j";

    CHECK(pgw_policy_load_file(path, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "cannot open") != NULL);

    write_file(path, "{\"rules\": [{\"callers\": [\"a\"], \"arns\": [\"*\"], \"secret\": 1}]}");
    CHECK(pgw_policy_load_file(path, err, sizeof(err)) == NULL);
    CHECK(strstr(err, path) != NULL);

    write_file(path, V1);
    pgw_policy *p = pgw_policy_load_file(path, err, sizeof(err));
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK(check(p, "a", arn) == PGW_POLICY_ALLOW);
    CHECK(pgw_policy_reload(p, 1, err, sizeof(err)) == 0); /* unchanged */
    CHECK(pgw_policy_reload(p, 0, err, sizeof(err)) == 1); /* forced */

    write_file(path, V2);
    CHECK(pgw_policy_reload(p, 1, err, sizeof(err)) == 1);
    CHECK(pgw_policy_rule_count(p) == 2);
    CHECK(check(p, "a", arn) == PGW_POLICY_DENY);
    CHECK(check(p, "c", arn) == PGW_POLICY_ALLOW);

    /* a bad file keeps the rules in force, and is reported once */
    write_file(path, "{\"rules\": [");
    CHECK(pgw_policy_reload(p, 1, err, sizeof(err)) == -1);
    CHECK(strstr(err, "invalid JSON") != NULL);
    CHECK(pgw_policy_reload(p, 1, err, sizeof(err)) == 0);
    CHECK(check(p, "c", arn) == PGW_POLICY_ALLOW);
    /* a vanished file too */
    unlink(path);
    CHECK(pgw_policy_reload(p, 1, err, sizeof(err)) == -1);
    CHECK(pgw_policy_reload(p, 1, err, sizeof(err)) == 0);
    CHECK(check(p, "c", arn) == PGW_POLICY_ALLOW);

    /* the watcher picks up a change by itself */
    struct event_base *base = event_base_new();
    watch_state w = {.base = base};
    CHECK(pgw_policy_watch(p, base, 20, on_reload, &w) == 0);
    write_file(path, V1);
    struct timeval limit = {5, 0};
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    CHECK(w.reloads == 1);
    CHECK(w.errors == 0);
    CHECK(check(p, "a", arn) == PGW_POLICY_ALLOW);
    CHECK(check(p, "c", arn) == PGW_POLICY_DENY);
    pgw_policy_free(p);
    event_base_free(base);

    /* a policy parsed from text cannot be reloaded or watched */
    p = parse(V1);
    CHECK(pgw_policy_reload(p, 0, err, sizeof(err)) == -1);
    pgw_policy_free(p);

    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_glob();
    test_validation();
    test_check();
    test_file();
    return pgw_test_finish("test_policy");
}
