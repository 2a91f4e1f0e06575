/* text: quoting untrusted bytes into messages. See text.h. */
#include "service/text.h"

#include <string.h>

const char *pgw_text_quote(const char *s, size_t n, size_t max_in, char *dst, size_t dst_len)
{
    static const char hex[] = "0123456789abcdef";
    if (!dst || dst_len == 0)
        return "";
    size_t o = 0, i = 0;
    size_t take = n > max_in ? max_in : n;
    for (; s && i < take; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t need = (c == '"' || c == '\\') ? 2 : (c >= 0x20 && c < 0x7f) ? 1 : 4;
        if (o + need + 4 > dst_len) /* keep room for "..." and the NUL */
            break;
        if (need == 2) {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (need == 1) {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (i < n && o + 4 <= dst_len) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

const char *pgw_text_quote_str(const char *s, size_t max_in, char *dst, size_t dst_len)
{
    return pgw_text_quote(s, s ? strlen(s) : 0, max_in, dst, dst_len);
}
