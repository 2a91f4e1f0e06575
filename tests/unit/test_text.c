/* text: quoting untrusted bytes into messages. */
#include <string.h>

#include "service/text.h"
#include "test_util.h"

static const char *q(const char *s, size_t n, size_t max_in, size_t dst_len)
{
    static char buf[256];
    return pgw_text_quote(s, n, max_in, buf, dst_len);
}

int main(void)
{
    CHECK_STR(q("plain text", 10, 64, 256), "plain text");
    CHECK_STR(q("say \"hi\" \\", 10, 64, 256), "say \\\"hi\\\" \\\\");
    CHECK_STR(q("a\nb\r\x1b[0m\x7f", 9, 64, 256), "a\\x0ab\\x0d\\x1b[0m\\x7f");
    CHECK_STR(q("caf\xc3\xa9", 5, 64, 256), "caf\\xc3\\xa9");
    CHECK_STR(q("a\0b", 3, 64, 256), "a\\x00b");
    /* Cut at max_in, marked. */
    CHECK_STR(q("abcdefgh", 8, 4, 256), "abcd...");
    /* Cut where dst is full: still NUL-terminated, still marked when there is room. */
    CHECK_STR(q("abcdefgh", 8, 64, 8), "abcd...");
    CHECK_STR(q("\x01\x02\x03", 3, 64, 10), "\\x01...");
    CHECK_STR(q("abc", 3, 64, 3), "");
    CHECK_STR(q(NULL, 0, 64, 256), "");
    char small[1] = {'x'};
    CHECK_STR(pgw_text_quote("abc", 3, 64, small, 1), "");
    CHECK_STR(pgw_text_quote_str(NULL, 8, small, 1), "");
    char buf[PGW_TEXT_QUOTE_SIZE(4)];
    CHECK_STR(pgw_text_quote_str("\xff\xff\xff\xff\xff", 4, buf, sizeof(buf)),
              "\\xff\\xff\\xff\\xff...");
    return pgw_test_finish("test_text");
}
