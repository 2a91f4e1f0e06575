/* text: quoting untrusted bytes into messages. Error messages and log fields often name a bad
 * value (a flag, a profile name, an STS error code); such a value may hold control characters,
 * invalid UTF-8 or be arbitrarily long, and a message quoting it raw could forge a log line,
 * break a terminal, or be dropped by the JSON encoder of the log line (jansson refuses invalid
 * UTF-8). A leaf module: no I/O, no allocation. */
#ifndef PGW_TEXT_H
#define PGW_TEXT_H

#include <stddef.h>

/* Room for quoting max_in input bytes: each may take 4 ("\xNN"), plus "..." and the NUL. */
#define PGW_TEXT_QUOTE_SIZE(max_in) ((max_in)*4 + 4)

/* Writes at most max_in of the n bytes at s into dst (dst_len bytes, always NUL-terminated)
 * as the inside of a double-quoted string: '"' and '\\' are escaped with a backslash, every
 * byte outside printable ASCII becomes \xNN, and "..." marks input that was cut (at max_in
 * or when dst is full). The result is printable ASCII. s may be NULL when n is 0. Returns
 * dst, so it can be a printf argument. */
const char *pgw_text_quote(const char *s, size_t n, size_t max_in, char *dst, size_t dst_len);

/* pgw_text_quote of a NUL-terminated string (NULL quotes as ""). */
const char *pgw_text_quote_str(const char *s, size_t max_in, char *dst, size_t dst_len);

#endif
