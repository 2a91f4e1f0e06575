#include "service/aws/credentials_ini.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct ini_entry {
    char *section;
    char *key; /* NULL: a section marker */
    char *value;
} ini_entry;

struct pgw_ini {
    ini_entry *entries;
    size_t n, cap;
};

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void pgw_ini_free(pgw_ini *ini)
{
    if (!ini)
        return;
    for (size_t i = 0; i < ini->n; i++) {
        free(ini->entries[i].section);
        free(ini->entries[i].key);
        wipe_free(ini->entries[i].value);
    }
    free(ini->entries);
    free(ini);
}

/* Trims [*s, *e) in place. */
static void trim(const char **s, const char **e)
{
    while (*s < *e && isspace((unsigned char)**s))
        (*s)++;
    while (*e > *s && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

static char *dup_range(const char *s, const char *e)
{
    size_t n = (size_t)(e - s);
    char *out = malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
    return out;
}

static int add(pgw_ini *ini, const char *section, const char *ks, const char *ke, const char *vs,
               const char *ve)
{
    if (ini->n == ini->cap) {
        if (ini->cap >= PGW_INI_MAX_ENTRIES)
            return -1;
        size_t cap = ini->cap ? ini->cap * 2 : 16;
        ini_entry *grown = realloc(ini->entries, cap * sizeof(*grown));
        if (!grown)
            return -1;
        ini->entries = grown;
        ini->cap = cap;
    }
    ini_entry *en = &ini->entries[ini->n];
    en->section = strdup(section);
    en->key = ks ? dup_range(ks, ke) : NULL;
    en->value = vs ? dup_range(vs, ve) : NULL;
    if (!en->section || (ks && !en->key) || (vs && !en->value)) {
        free(en->section);
        free(en->key);
        wipe_free(en->value);
        return -1;
    }
    if (en->key)
        for (char *c = en->key; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    ini->n++;
    return 0;
}

pgw_ini *pgw_ini_parse(const char *text, size_t len, char *err, size_t err_len)
{
    if (len > PGW_INI_MAX_BYTES) {
        snprintf(err, err_len, "file larger than %d bytes", PGW_INI_MAX_BYTES);
        return NULL;
    }
    /* A NUL would cut a name short: "[default\0x]" would read as "[default]" (found by
     * fuzz_credentials_ini). Text files have none. */
    const char *nul = text ? memchr(text, '\0', len) : NULL;
    if (nul) {
        int line_no = 1;
        for (const char *c = text; c < nul; c++)
            line_no += *c == '\n';
        snprintf(err, err_len, "line %d holds a NUL byte", line_no);
        return NULL;
    }
    pgw_ini *ini = calloc(1, sizeof(*ini));
    if (!ini) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    char section[256] = "";
    int in_section = 0, after_empty_key = 0;
    const char *p = text, *end = text + len;
    for (int line_no = 1; p < end; line_no++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *ls = p, *le = nl ? nl : end;
        p = nl ? nl + 1 : end;
        if (le - ls > PGW_INI_MAX_LINE) {
            snprintf(err, err_len, "line %d is longer than %d bytes", line_no, PGW_INI_MAX_LINE);
            goto fail;
        }
        int indented = ls < le && (*ls == ' ' || *ls == '\t');
        trim(&ls, &le);
        if (ls == le || *ls == '#' || *ls == ';')
            continue;
        if (indented && after_empty_key)
            continue; /* a sub-setting of a nested key: not used by credentials */
        if (*ls == '[') {
            const char *close = memchr(ls, ']', (size_t)(le - ls));
            if (!close) {
                snprintf(err, err_len, "line %d: section header without ']'", line_no);
                goto fail;
            }
            const char *ns = ls + 1, *ne = close;
            trim(&ns, &ne);
            if (ns == ne || (size_t)(ne - ns) >= sizeof(section)) {
                snprintf(err, err_len, "line %d: bad section name", line_no);
                goto fail;
            }
            /* Collapse "profile   name" to "profile name" so lookups are exact. */
            size_t o = 0;
            for (const char *c = ns; c < ne; c++) {
                if (isspace((unsigned char)*c)) {
                    if (o && section[o - 1] != ' ')
                        section[o++] = ' ';
                } else {
                    section[o++] = *c;
                }
            }
            section[o] = '\0';
            in_section = 1;
            after_empty_key = 0;
            if (add(ini, section, NULL, NULL, NULL, NULL) != 0)
                goto oom;
            continue;
        }
        const char *eq = memchr(ls, '=', (size_t)(le - ls));
        if (!eq) {
            snprintf(err, err_len, "line %d: expected \"key = value\"", line_no);
            goto fail;
        }
        if (!in_section) {
            snprintf(err, err_len, "line %d: setting outside any [section]", line_no);
            goto fail;
        }
        const char *ks = ls, *ke = eq, *vs = eq + 1, *ve = le;
        trim(&ks, &ke);
        trim(&vs, &ve);
        if (ks == ke) {
            snprintf(err, err_len, "line %d: empty key", line_no);
            goto fail;
        }
        after_empty_key = vs == ve;
        if (add(ini, section, ks, ke, vs, ve) != 0)
            goto oom;
    }
    return ini;
oom:
    snprintf(err, err_len, "out of memory or too many settings");
fail:
    pgw_ini_free(ini);
    return NULL;
}

const char *pgw_ini_get(const pgw_ini *ini, const char *section, const char *key)
{
    if (!ini)
        return NULL;
    /* Last one wins: search backwards. */
    for (size_t i = ini->n; i-- > 0;) {
        const ini_entry *en = &ini->entries[i];
        if (en->key && strcmp(en->section, section) == 0 && strcasecmp(en->key, key) == 0)
            return en->value;
    }
    return NULL;
}

int pgw_ini_has_section(const pgw_ini *ini, const char *section)
{
    if (!ini)
        return 0;
    for (size_t i = 0; i < ini->n; i++)
        if (strcmp(ini->entries[i].section, section) == 0)
            return 1;
    return 0;
}
