/* Fuzz target: configuration (service/config.c) from argv and the environment. Input: NUL-
 * separated pieces; a piece "NAME=value" whose NAME starts with PGW_ or AWS_ENDPOINT_URL is
 * set in the environment for this run, every other piece is an argument. Invariants: a load
 * that succeeds leaves a usable configuration (addresses that pass the address check, a
 * known log level, TLS settings that go together); one that fails says why in one line of
 * printable text (main prints it as is); nothing leaks either way. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/config.h"

#define MAX_PIECES 48

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* --help prints the usage to stdout: keep the fuzzer's output readable. */
    if (!freopen("/dev/null", "w", stdout))
        return 0;
    return 0;
}

static int env_piece(const char *p)
{
    return (strncmp(p, "PGW_", 4) == 0 || strncmp(p, "AWS_ENDPOINT_URL", 16) == 0) &&
           strchr(p, '=') != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *pieces[MAX_PIECES], *buf;
    size_t n = fuzz_split(data, size, pieces, MAX_PIECES, &buf);
    if (!buf)
        return 0;
    char *argv[MAX_PIECES + 2];
    int argc = 0;
    argv[argc++] = "personalize-gateway";
    /* putenv with our own copies, not setenv: glibc keeps every string setenv made for the
     * life of the process, which grew the fuzzer's memory without end. */
    char *set[MAX_PIECES], *names[MAX_PIECES];
    size_t nset = 0;
    for (size_t i = 0; i < n; i++) {
        if (env_piece(pieces[i])) {
            char *entry = strdup(pieces[i]);
            char *name = strndup(pieces[i], (size_t)(strchr(pieces[i], '=') - pieces[i]));
            if (entry && name && putenv(entry) == 0) {
                set[nset] = entry;
                names[nset++] = name;
            } else {
                free(entry);
                free(name);
            }
        } else {
            argv[argc++] = pieces[i];
        }
    }
    argv[argc] = NULL;

    pgw_config cfg;
    char err[512] = "";
    pgw_config_result rc = pgw_config_load(&cfg, argc, argv, err, sizeof(err));
    if (rc == PGW_CONFIG_OK) {
        FUZZ_ASSERT(cfg.grpc_addr && cfg.grpc_addr[0] &&
                    pgw_config_check_hostport(cfg.grpc_addr) == 0);
        FUZZ_ASSERT(cfg.http_addr &&
                    (cfg.http_addr[0] == '\0' || pgw_config_check_hostport(cfg.http_addr) == 0));
        FUZZ_ASSERT(strcmp(cfg.log_level, "debug") == 0 || strcmp(cfg.log_level, "info") == 0 ||
                    strcmp(cfg.log_level, "warn") == 0 || strcmp(cfg.log_level, "error") == 0);
        FUZZ_ASSERT(!cfg.tls_cert == !cfg.tls_key);
        FUZZ_ASSERT(!cfg.tls_client_ca || (cfg.tls_cert && cfg.require_identity));
        FUZZ_ASSERT(!(cfg.tls_client_ca && cfg.identity_header));
        FUZZ_ASSERT(!cfg.redis_url || cfg.redis_url[0]);
        FUZZ_ASSERT(cfg.grpc_threads >= 1 && cfg.upstream_max_attempts >= 1);
        pgw_config_cleanup(&cfg);
    } else if (rc == PGW_CONFIG_ERROR) {
        FUZZ_ASSERT(err[0] != '\0' && fuzz_printable(err));
    } else {
        FUZZ_ASSERT(rc == PGW_CONFIG_HELP);
    }
    for (size_t i = nset; i-- > 0;) {
        unsetenv(names[i]); /* every copy of the name: a later piece may have replaced it */
        free(names[i]);
        free(set[i]);
    }
    free(buf);
    return 0;
}
