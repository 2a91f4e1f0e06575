/* Fuzz target: the authorization policy file (service/policy.c). Input: the policy text, then
 * after the first NUL (if any) an identity (used when pgw_identity_valid accepts it, as the
 * frontends do) and an ARN to check, NUL-separated. Invariants: a
 * refusal names the problem in a printable line that never quotes the file beyond a key name;
 * an accepted policy answers every check with a decision and a printable reason for a
 * refusal; a policy with no rule for a caller denies it (default deny); the glob matcher
 * agrees with itself on '*' alone. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/identity.h"
#include "service/aws/arn.h"
#include "service/policy.h"

static void check(const pgw_policy *p, const char *identity, const pgw_arn *arn)
{
    char why[400] = "";
    pgw_policy_decision d = pgw_policy_check(p, identity, arn, why, sizeof(why));
    FUZZ_ASSERT(d == PGW_POLICY_ALLOW || d == PGW_POLICY_DENY || d == PGW_POLICY_NO_IDENTITY);
    if (d != PGW_POLICY_ALLOW)
        FUZZ_ASSERT(why[0] != '\0' && fuzz_json_safe_str(why));
    if (!identity || !identity[0])
        FUZZ_ASSERT(d != PGW_POLICY_ALLOW);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nul = memchr(text, '\0', size);
    size_t text_len = nul ? (size_t)(nul - text) : size;
    char err[300] = "";
    pgw_policy *p = pgw_policy_parse(text, text_len, err, sizeof(err));
    if (!p) {
        FUZZ_ASSERT(err[0] != '\0' && fuzz_json_safe_str(err));
        return 0;
    }
    FUZZ_ASSERT(pgw_policy_rule_count(p) <= PGW_POLICY_MAX_RULES);
    char *pieces[2] = {"", ""}, *buf = NULL;
    if (nul)
        fuzz_split((const uint8_t *)nul + 1, size - text_len - 1, pieces, 2, &buf);
    /* Identities reach the policy only once pgw_identity_valid accepted them. */
    const char *identity =
        pieces[0] && pgw_identity_valid(pieces[0], strlen(pieces[0])) ? pieces[0] : NULL;
    static const char *const arns[] = {
        "arn:aws:personalize:us-east-1:111122223333:batch-inference-job/recs-1",
        "arn:aws-cn:personalize:cn-north-1:444455556666:batch-inference-job/x",
    };
    pgw_arn a;
    for (size_t i = 0; i < 2; i++) {
        if (pgw_arn_parse(arns[i], strlen(arns[i]), &a, NULL, 0) == 0) {
            check(p, identity, &a);
            check(p, NULL, &a);
            check(p, "spiffe://example.org/ns/recs/sa/poller", &a);
        }
    }
    if (pieces[1] && pgw_arn_parse(pieces[1], strlen(pieces[1]), &a, NULL, 0) == 0)
        check(p, identity, &a);
    if (pieces[0] && pieces[1]) {
        FUZZ_ASSERT(pgw_policy_glob_match("*", pieces[1]));
        FUZZ_ASSERT(pgw_policy_glob_match(pieces[1], pieces[1]) || strchr(pieces[1], '*'));
        (void)pgw_policy_glob_match(pieces[0], pieces[1]);
    }
    free(buf);
    pgw_policy_free(p);
    return 0;
}
