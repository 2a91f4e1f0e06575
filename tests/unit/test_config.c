/* config: error messages quote what the operator gave as printable text (main prints them as
 * they are, on one line; found by fuzz_config: "--h\x99lp" was echoed raw). */
#include <stdlib.h>
#include <string.h>

#include "service/config.h"
#include "test_util.h"

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

static void expect_error(int argc, char **argv, const char *want)
{
    pgw_config cfg;
    char err[512] = "";
    CHECK(pgw_config_load(&cfg, argc, argv, err, sizeof(err)) == PGW_CONFIG_ERROR);
    CHECK(printable(err));
    CHECK_STR(err, want);
}

int main(void)
{
    char *a1[] = {"gw", "--h\x99lp"};
    expect_error(2, a1, "unknown flag \"--h\\x99lp\" (see --help)");
    char *a2[] = {"gw", "--grpc-threads", "4\nFAKE LOG LINE"};
    expect_error(3, a2, "--grpc-threads: \"4\\x0aFAKE LOG LINE\" is not an integer in [1, 64]");
    char *a3[] = {"gw", "--grpc-addr=\x1b[31mhost:1"};
    expect_error(2, a3, "--grpc-addr: \"\\x1b[31mhost:1\" is not a host:port address");
    char *a4[] = {"gw", "--log-level", "loud\r"};
    expect_error(3, a4, "--log-level: \"loud\\x0d\" is not one of debug, info, warn, error");
    char *a5[] = {"gw", "--grpc-addr\x01"};
    expect_error(2, a5, "unknown flag \"--grpc-addr\\x01\" (see --help)");
    char *a6[] = {"gw", "--audit-log", "on\"x"};
    expect_error(3, a6, "--audit-log: \"on\\\"x\" is not one of on, off, auto");
    char *a7[] = {"gw", "--http-addr"};
    expect_error(2, a7, "--http-addr: missing value");

    /* A good configuration still loads. */
    pgw_config cfg;
    char err[512] = "";
    char *ok[] = {"gw", "--grpc-addr", "127.0.0.1:0", "--log-level=debug"};
    CHECK(pgw_config_load(&cfg, 4, ok, err, sizeof(err)) == PGW_CONFIG_OK);
    CHECK_STR(cfg.grpc_addr, "127.0.0.1:0");
    pgw_config_cleanup(&cfg);
    return pgw_test_finish("test_config");
}
