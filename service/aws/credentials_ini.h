/* The AWS shared config and credentials files (~/.aws/config, ~/.aws/credentials): an INI
 * dialect of "[section]" headers and "key = value" lines.
 *
 * A leaf module: it parses text it is given and does no I/O. Rules, as the AWS SDKs read these
 * files: lines starting with '#' or ';' are comments; keys are case-insensitive (stored
 * lowercase); whitespace around names and values is trimmed; an indented line under a key
 * with an empty value is a sub-setting (e.g. "s3 =" then "  max_concurrent_requests = 20")
 * and is skipped; a later duplicate key in the same section wins; a section seen twice is
 * merged. Values may hold secrets: they are wiped when the parsed file is freed. */
#ifndef PGW_CREDENTIALS_INI_H
#define PGW_CREDENTIALS_INI_H

#include <stddef.h>

#define PGW_INI_MAX_BYTES   (1024 * 1024) /* larger files are rejected */
#define PGW_INI_MAX_ENTRIES 4096
#define PGW_INI_MAX_LINE    4096

typedef struct pgw_ini pgw_ini;

/* Parses `len` bytes of text. Returns the parsed file (free with pgw_ini_free) or NULL with a
 * message naming the line in err (never a value). Text outside any section is an error, as
 * in the SDKs; so is a NUL byte anywhere. */
pgw_ini *pgw_ini_parse(const char *text, size_t len, char *err, size_t err_len);

/* Wipes every value and frees. NULL is a no-op. */
void pgw_ini_free(pgw_ini *ini);

/* The value of key (case-insensitive) in section (exact), or NULL. Borrowed from ini. */
const char *pgw_ini_get(const pgw_ini *ini, const char *section, const char *key);

/* Nonzero when the section appeared in the file (even empty). */
int pgw_ini_has_section(const pgw_ini *ini, const char *section);

#endif
