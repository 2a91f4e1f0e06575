#include "service/policy.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "service/text.h"

/* What identifies one version of the file: a ConfigMap update swaps a symlink (new inode), an
 * editor may rewrite in place (new mtime or size). */
typedef struct file_stamp {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_stamp;

struct pgw_policy {
    json_t *rules; /* the validated "rules" array; replaced whole on reload */
    char *path;    /* NULL for a policy parsed from text */
    file_stamp stamp;
    int missing; /* the last poll found no file: reported once, not every second */
    struct event *timer;
    pgw_policy_reload_cb cb;
    void *cb_user_data;
};

int pgw_policy_glob_match(const char *p, const char *s)
{
    /* Greedy match with one backtrack point: enough for `*` as the only wildcard, and linear
     * in practice (quadratic at worst, on bounded lengths). */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

static int caller_matches(const char *pattern, const char *identity)
{
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*')
        return strncmp(pattern, identity, n - 1) == 0;
    return strcmp(pattern, identity) == 0;
}

/* --- validation ------------------------------------------------------------------------------ */

static int is_account(const char *s)
{
    size_t n = strlen(s);
    if (n != 12)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int is_region(const char *s)
{
    if (!*s || strlen(s) >= sizeof(((pgw_arn *)0)->region))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
            return 0;
    return 1;
}

static int is_caller_pattern(const char *s)
{
    size_t n = strlen(s);
    const char *star = strchr(s, '*');
    return n > 0 && (!star || star == s + n - 1);
}

/* Checks that rule[key], if present (or if required), is a non-empty array of strings that
 * pass `ok`. Returns 1 if present and valid, 0 if absent, -1 on error (err filled). */
static int check_list(json_t *rule, size_t index, const char *key, int (*ok)(const char *),
                      const char *what, char *err, size_t err_len)
{
    json_t *list = json_object_get(rule, key);
    if (!list)
        return 0;
    if (!json_is_array(list) || json_array_size(list) == 0) {
        snprintf(err, err_len, "rule %zu: \"%s\" must be a non-empty list of strings", index, key);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *s = json_string_value(v);
        if (!s || strlen(s) > PGW_POLICY_MAX_PATTERN || (ok && !ok(s))) {
            snprintf(err, err_len, "rule %zu: \"%s\" entry %zu is not %s", index, key, i, what);
            return -1;
        }
    }
    return 1;
}

static int non_empty(const char *s)
{
    return *s != '\0';
}

static int validate(json_t *root, char *err, size_t err_len)
{
    if (!json_is_object(root)) {
        snprintf(err, err_len, "the policy must be a JSON object with a \"rules\" list");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "rules") != 0 && strcmp(key, "version") != 0) {
            char q[PGW_TEXT_QUOTE_SIZE(32)];
            snprintf(err, err_len, "unknown top-level key \"%s\"",
                     pgw_text_quote_str(key, 32, q, sizeof(q)));
            return -1;
        }
    }
    json_t *version = json_object_get(root, "version");
    if (version && !(json_is_integer(version) && json_integer_value(version) == 1)) {
        snprintf(err, err_len, "\"version\" must be 1");
        return -1;
    }
    json_t *rules = json_object_get(root, "rules");
    if (!json_is_array(rules)) {
        snprintf(err, err_len, "\"rules\" must be a list");
        return -1;
    }
    if (json_array_size(rules) > PGW_POLICY_MAX_RULES) {
        snprintf(err, err_len, "more than %d rules", PGW_POLICY_MAX_RULES);
        return -1;
    }
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule)
    {
        if (!json_is_object(rule)) {
            snprintf(err, err_len, "rule %zu is not an object", i);
            return -1;
        }
        json_object_foreach(rule, key, v)
        {
            if (strcmp(key, "callers") && strcmp(key, "arns") && strcmp(key, "accounts") &&
                strcmp(key, "regions") && strcmp(key, "comment")) {
                char q[PGW_TEXT_QUOTE_SIZE(32)];
                snprintf(err, err_len, "rule %zu: unknown key \"%s\"", i,
                         pgw_text_quote_str(key, 32, q, sizeof(q)));
                return -1;
            }
        }
        int callers = check_list(rule, i, "callers", is_caller_pattern,
                                 "an identity or a prefix ending in *", err, err_len);
        if (callers < 0)
            return -1;
        if (callers == 0) {
            snprintf(err, err_len, "rule %zu: \"callers\" is required", i);
            return -1;
        }
        int arns = check_list(rule, i, "arns", non_empty, "an ARN pattern", err, err_len);
        int accounts = arns < 0 ? -1
                                : check_list(rule, i, "accounts", is_account,
                                             "a 12-digit account id", err, err_len);
        int regions =
            accounts < 0 ? -1
                         : check_list(rule, i, "regions", is_region, "a region name", err, err_len);
        if (arns < 0 || accounts < 0 || regions < 0)
            return -1;
        if (!arns && !accounts && !regions) {
            snprintf(err, err_len,
                     "rule %zu: needs at least one of \"arns\", \"accounts\", \"regions\" "
                     "(use \"arns\": [\"*\"] to allow every job)",
                     i);
            return -1;
        }
    }
    return 0;
}

static json_t *parse_rules(const char *text, size_t len, char *err, size_t err_len)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        /* Position only: the parser's text would quote the file's content. */
        snprintf(err, err_len, "invalid JSON at line %d, column %d", jerr.line, jerr.column);
        return NULL;
    }
    if (validate(root, err, err_len) != 0) {
        json_decref(root);
        return NULL;
    }
    json_t *rules = json_incref(json_object_get(root, "rules"));
    json_decref(root);
    return rules;
}

/* --- loading --------------------------------------------------------------------------------- */

/* Reads the whole file (bounded) and its stamp. Returns a malloc'ed buffer or NULL. */
static char *read_file(const char *path, size_t *len, file_stamp *stamp, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot open %.200s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "%.200s is not a regular file", path);
        goto out;
    }
    if (st.st_size > PGW_POLICY_MAX_FILE_BYTES) {
        snprintf(err, err_len, "%.200s is larger than %d bytes", path, PGW_POLICY_MAX_FILE_BYTES);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }
    *len = fread(buf, 1, (size_t)st.st_size + 1, f);
    if (ferror(f) || *len > (size_t)st.st_size) {
        /* An error, or the file grew while we read it: the next poll reads it again. */
        snprintf(err, err_len, "cannot read %.200s (changed while reading?)", path);
        free(buf);
        buf = NULL;
        goto out;
    }
    stamp->dev = st.st_dev;
    stamp->ino = st.st_ino;
    stamp->size = st.st_size;
    stamp->mtime = st.st_mtim;
out:
    fclose(f);
    return buf;
}

pgw_policy *pgw_policy_parse(const char *text, size_t len, char *err, size_t err_len)
{
    json_t *rules = parse_rules(text, len, err, err_len);
    if (!rules)
        return NULL;
    pgw_policy *p = calloc(1, sizeof(*p));
    if (!p) {
        json_decref(rules);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    p->rules = rules;
    return p;
}

pgw_policy *pgw_policy_load_file(const char *path, char *err, size_t err_len)
{
    size_t len = 0;
    file_stamp stamp;
    char *text = read_file(path, &len, &stamp, err, err_len);
    if (!text)
        return NULL;
    char why[200];
    pgw_policy *p = pgw_policy_parse(text, len, why, sizeof(why));
    free(text);
    if (!p) {
        snprintf(err, err_len, "%.200s: %s", path, why);
        return NULL;
    }
    p->path = strdup(path);
    p->stamp = stamp;
    if (!p->path) {
        pgw_policy_free(p);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    return p;
}

static int same_stamp(const file_stamp *a, const struct stat *st)
{
    return a->dev == st->st_dev && a->ino == st->st_ino && a->size == st->st_size &&
           a->mtime.tv_sec == st->st_mtim.tv_sec && a->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

int pgw_policy_reload(pgw_policy *p, int only_if_changed, char *err, size_t err_len)
{
    if (!p->path) {
        snprintf(err, err_len, "the policy was not loaded from a file");
        return -1;
    }
    struct stat st;
    int have_st = 0;
    if (only_if_changed) {
        if (stat(p->path, &st) != 0) {
            if (p->missing)
                return 0;
            p->missing = 1;
        } else {
            p->missing = 0;
            have_st = 1;
            if (same_stamp(&p->stamp, &st))
                return 0;
        }
    }
    size_t len = 0;
    file_stamp stamp;
    char *text = read_file(p->path, &len, &stamp, err, err_len);
    if (!text) {
        /* A version that cannot be read (too large, not a regular file, unreadable) is
         * remembered too, so it is reported once rather than at every poll. */
        if (have_st) {
            p->stamp.dev = st.st_dev;
            p->stamp.ino = st.st_ino;
            p->stamp.size = st.st_size;
            p->stamp.mtime = st.st_mtim;
        }
        return -1;
    }
    char why[200];
    json_t *rules = parse_rules(text, len, why, sizeof(why));
    free(text);
    /* Remember this version even when it is bad, so a broken file is reported once, not at
     * every poll; a fixed file has a new stamp again. */
    p->stamp = stamp;
    if (!rules) {
        snprintf(err, err_len, "%.200s: %s", p->path, why);
        return -1;
    }
    json_decref(p->rules);
    p->rules = rules;
    return 1;
}

size_t pgw_policy_rule_count(const pgw_policy *p)
{
    return p ? json_array_size(p->rules) : 0;
}

/* --- checking -------------------------------------------------------------------------------- */

static int list_matches(json_t *rule, const char *key, const char *value, int glob)
{
    json_t *list = json_object_get(rule, key);
    if (!list)
        return 1; /* no constraint of this kind */
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *pattern = json_string_value(v);
        if (glob ? pgw_policy_glob_match(pattern, value) : strcmp(pattern, value) == 0)
            return 1;
    }
    return 0;
}

static int rule_names_caller(json_t *rule, const char *identity)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(rule, "callers"), i, v)
    {
        if (caller_matches(json_string_value(v), identity))
            return 1;
    }
    return 0;
}

pgw_policy_decision pgw_policy_check(const pgw_policy *p, const char *identity, const pgw_arn *arn,
                                     char *why, size_t why_len)
{
    if (why_len)
        why[0] = '\0';
    if (!p)
        return PGW_POLICY_ALLOW;
    if (!identity || !*identity) {
        snprintf(why, why_len, "the gateway's policy requires an authenticated caller identity");
        return PGW_POLICY_NO_IDENTITY;
    }
    /* The canonical form of the ARN the parser accepted, so a pattern sees what AWS will. */
    char full[PGW_ARN_MAX_LEN + 64];
    snprintf(full, sizeof(full), "arn:%s:personalize:%s:%s:batch-inference-job/%s", arn->partition,
             arn->region, arn->account, arn->job_name);
    size_t i;
    json_t *rule;
    json_array_foreach(p->rules, i, rule)
    {
        if (rule_names_caller(rule, identity) && list_matches(rule, "arns", full, 1) &&
            list_matches(rule, "accounts", arn->account, 0) &&
            list_matches(rule, "regions", arn->region, 0))
            return PGW_POLICY_ALLOW;
    }
    snprintf(why, why_len,
             "caller \"%.256s\" is not allowed to read this batch inference job by the gateway's "
             "policy",
             identity);
    return PGW_POLICY_DENY;
}

/* --- watching -------------------------------------------------------------------------------- */

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    pgw_policy *p = arg;
    char err[512]; /* path (200) + ": " + the parser's reason (200) */
    int rc = pgw_policy_reload(p, 1, err, sizeof(err));
    if (rc != 0 && p->cb)
        p->cb(rc, rc < 0 ? err : NULL, p->cb_user_data);
}

int pgw_policy_watch(pgw_policy *p, struct event_base *base, int interval_ms,
                     pgw_policy_reload_cb cb, void *user_data)
{
    if (!p->path || p->timer || interval_ms <= 0)
        return -1;
    p->timer = event_new(base, -1, EV_PERSIST, on_poll, p);
    if (!p->timer)
        return -1;
    p->cb = cb;
    p->cb_user_data = user_data;
    struct timeval tv = {interval_ms / 1000, (interval_ms % 1000) * 1000};
    if (event_add(p->timer, &tv) != 0) {
        event_free(p->timer);
        p->timer = NULL;
        return -1;
    }
    return 0;
}

void pgw_policy_free(pgw_policy *p)
{
    if (!p)
        return;
    if (p->timer)
        event_free(p->timer);
    json_decref(p->rules);
    free(p->path);
    free(p);
}
