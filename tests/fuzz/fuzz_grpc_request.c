/* Fuzz target: the gRPC request decode (service/request_decode.c) and the ARN check behind it.
 * Invariants: the wire twin accepts exactly the bytes the public descriptor accepts (same wire
 * shape); the ARN it returns holds every byte the public one has and more (the public one is
 * cut at a NUL); an ARN the check accepts has no NUL, only ASCII, and is exactly what the
 * public descriptor reads, so no two different requests can map to one accepted ARN. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/aws/arn.h"
#include "service/request_decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char arn[PGW_ARN_MAX_LEN + 2];
    size_t len = 12345;
    char err[128];
    int rc = pgw_request_decode_arn(data, size, arn, sizeof(arn), &len, err, sizeof(err));
    PersonalizeGateway__V1__DescribeBatchInferenceJobRequest *pub =
        personalize_gateway__v1__describe_batch_inference_job_request__unpack(NULL, size, data);
    FUZZ_ASSERT((rc == 0) == (pub != NULL));
    if (rc != 0) {
        FUZZ_ASSERT(len == 0 && arn[0] == '\0' && err[0] != '\0' && fuzz_printable(err));
        return 0;
    }
    FUZZ_ASSERT(len < sizeof(arn) && arn[len] == '\0' && err[0] == '\0');
    const char *p = pub->batch_inference_job_arn;
    size_t plen = strlen(p);
    /* The public string is the twin's bytes up to the first NUL (or the twin's is a prefix
     * when the ARN was longer than the buffer). */
    size_t upto = strnlen(arn, len);
    if (len < sizeof(arn) - 1)
        FUZZ_ASSERT(plen == upto && memcmp(p, arn, plen) == 0);
    else
        FUZZ_ASSERT(plen >= upto && memcmp(p, arn, upto) == 0);

    pgw_arn a;
    if (pgw_arn_parse(arn, len, &a, NULL, 0) == 0) {
        FUZZ_ASSERT(memchr(arn, '\0', len) == NULL);
        for (size_t i = 0; i < len; i++)
            FUZZ_ASSERT((unsigned char)arn[i] < 0x80);
        FUZZ_ASSERT(len <= PGW_ARN_MAX_LEN && plen == len && strcmp(p, arn) == 0);
    }
    personalize_gateway__v1__describe_batch_inference_job_request__free_unpacked(pub, NULL);
    return 0;
}
