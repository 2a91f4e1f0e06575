/* policy: the gateway's own authorization policy: which caller identity may read which batch
 * inference jobs. A JSON file (JSON rather than YAML: jansson is already a dependency and the
 * format is unambiguous) of rules:
 *
 *   {"rules": [
 *     {"callers": ["spiffe://example.org/ns/recs/sa/poller", "spiffe://example.org/ns/ml-*"],
 *      "arns": ["arn:aws:personalize:*:111122223333:batch-inference-job/recs-*"],
 *      "accounts": ["111122223333"],
 *      "regions": ["us-east-1", "eu-west-1"]}]}
 *
 * A caller pattern is an exact identity, or a prefix ending in `*` ("*" alone: any identified
 * caller). A rule needs callers and at least one of arns (patterns, `*` matches any run of
 * characters), accounts (12 digits) or regions; every list given must match (lists are ANDed,
 * entries within a list ORed). A call is allowed when some rule allows it: default deny. Unknown
 * keys are errors, so a misspelt constraint never silently widens a rule.
 *
 * Used on one thread (the event loop): checks and reloads must not run concurrently. */
#ifndef PGW_POLICY_H
#define PGW_POLICY_H

#include <stddef.h>

#include "service/aws/arn.h"

struct event_base;
typedef struct pgw_policy pgw_policy;

/* Limits on what a policy may hold; larger files are refused. */
#define PGW_POLICY_MAX_FILE_BYTES (1 << 20)
#define PGW_POLICY_MAX_RULES      10000
#define PGW_POLICY_MAX_PATTERN    512

typedef enum pgw_policy_decision {
    PGW_POLICY_ALLOW = 0,
    PGW_POLICY_DENY,        /* -> PERMISSION_DENIED */
    PGW_POLICY_NO_IDENTITY, /* a policy is configured but the caller has no identity ->
                               UNAUTHENTICATED */
} pgw_policy_decision;

/* Parses a policy from JSON text (for tests and the file loader). Returns the policy (free
 * with pgw_policy_free) or NULL with a one-line reason in err. */
pgw_policy *pgw_policy_parse(const char *text, size_t len, char *err, size_t err_len);

/* Loads the policy file at path (kept for reloads). Returns the policy or NULL with a one-line
 * reason in err that names the file but quotes none of its content. */
pgw_policy *pgw_policy_load_file(const char *path, char *err, size_t err_len);

/* Re-reads the file the policy came from; with only_if_changed, only when its inode, size or
 * modification time changed since the last read. Returns 1 when new rules are in force, 0 when
 * nothing changed, -1 on error with the reason in err: the previous rules stay in force. */
int pgw_policy_reload(pgw_policy *policy, int only_if_changed, char *err, size_t err_len);

/* Rules in force. */
size_t pgw_policy_rule_count(const pgw_policy *policy);

/* Decides whether `identity` (NULL or "" when the caller has none) may read the job `arn`.
 * A NULL policy allows everything (no policy configured). On a refusal writes a message for
 * the caller into why (it names the caller's own identity, never the policy's content). */
pgw_policy_decision pgw_policy_check(const pgw_policy *policy, const char *identity,
                                     const pgw_arn *arn, char *why, size_t why_len);

/* Called after each reload attempt by the watcher: rc as pgw_policy_reload (never 0), err the
 * reason when rc is -1. */
typedef void (*pgw_policy_reload_cb)(int rc, const char *err, void *user_data);

/* Polls the file every interval_ms on `base` (whose thread then is the policy's thread) and
 * reloads it when it changed, reporting through cb. Returns 0 or -1. The timer is removed by
 * pgw_policy_free, which must then run on the same thread (or after the loop stopped). */
int pgw_policy_watch(pgw_policy *policy, struct event_base *base, int interval_ms,
                     pgw_policy_reload_cb cb, void *user_data);

/* Frees the policy (NULL is fine). */
void pgw_policy_free(pgw_policy *policy);

/* `*`-wildcard match of the whole of s against pattern (exposed for tests). Nonzero on match. */
int pgw_policy_glob_match(const char *pattern, const char *s);

#endif
