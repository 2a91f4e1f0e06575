/* Fuzz target: the AWS shared config and credentials files (credentials_ini.c) and profile
 * resolution on them (credentials_profile.c). Input: the file text; the same text serves as
 * both files. Invariants: a refusal names the line, never a value, in a printable line; a
 * file holding a NUL byte is refused (a NUL would cut a name short: "[default\0x]" read as
 * "[default]"); a parsed file answers lookups; every "[name]" line made of plain characters is a
 * section; resolving the profiles builds a provider or says why in a JSON-safe line, and nothing
 * leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/aws/credentials.h"
#include "service/aws/credentials_ini.h"
#include "service/aws/credentials_profile.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    /* credential_source = Environment / EcsContainer / Ec2InstanceMetadata read these. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    unsetenv("AWS_ENDPOINT_URL_STS");
    unsetenv("AWS_ENDPOINT_URL");
    return 0;
}

static void resolve(const pgw_ini *ini, const char *name)
{
    char err[400] = "";
    pgw_credentials_provider *p =
        pgw_credentials_provider_profile_new(NULL, ini, ini, name, err, sizeof(err));
    if (p)
        pgw_credentials_provider_free(p);
    else
        FUZZ_ASSERT(err[0] && fuzz_json_safe_str(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err[300] = "";
    pgw_ini *ini = pgw_ini_parse(text, size, err, sizeof(err));
    if (!ini) {
        FUZZ_ASSERT(err[0] && fuzz_printable(err));
        return 0;
    }
    FUZZ_ASSERT(memchr(text, '\0', size) == NULL);
    /* Every "[plain name]" line (no blanks, no NUL, no ']' inside) is a section. The first
     * few are also resolved as profiles: each resolution looks keys up linearly, and doing it
     * for every section made big inputs quadratic (4,000 runs a second). */
    const char *p = text, *end = text + size;
    int resolved = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le - p >= 3 && p[0] == '[' && le[-1] == ']') {
            size_t n = (size_t)(le - p - 2);
            char name[256];
            int plain = n < sizeof(name);
            for (size_t i = 0; plain && i < n; i++)
                plain = p[1 + i] != '\0' && !strchr(" \t\r\n\v\f]", p[1 + i]);
            if (plain) {
                memcpy(name, p + 1, n);
                name[n] = '\0';
                FUZZ_ASSERT(pgw_ini_has_section(ini, name));
                (void)pgw_ini_get(ini, name, "aws_access_key_id");
                if (strncmp(name, "profile ", 8) != 0 && resolved++ < 8)
                    resolve(ini, name);
            }
        }
        p = nl ? nl + 1 : end;
    }
    resolve(ini, "default");
    pgw_ini_free(ini);
    return 0;
}
