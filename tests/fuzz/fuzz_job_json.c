/* Fuzz target: AWS DescribeBatchInferenceJob JSON -> protobuf (service/aws/job_json.c), the
 * upstream's answer, and the two renderings the frontends send.
 * Invariants: a refusal has a printable, JSON-safe reason; an accepted job packs and unpacks
 * to itself, both renderings are valid JSON objects, and the AWS rendering parses back into a
 * job that packs to the same bytes (what the gateway serves is what AWS said). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/aws/job_json.h"

static uint8_t *pack(const PersonalizeGateway__V1__BatchInferenceJob *job, size_t *len)
{
    *len = personalize_gateway__v1__batch_inference_job__get_packed_size(job);
    uint8_t *buf = malloc(*len ? *len : 1);
    FUZZ_ASSERT(buf != NULL);
    FUZZ_ASSERT(personalize_gateway__v1__batch_inference_job__pack(job, buf) == *len);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PersonalizeGateway__V1__BatchInferenceJob *job = NULL;
    char err[300] = "";
    if (pgw_job_from_aws_json((const char *)data, size, &job, err, sizeof(err)) != 0) {
        FUZZ_ASSERT(job == NULL);
        FUZZ_ASSERT(err[0] != '\0' && fuzz_printable(err));
        return 0;
    }
    FUZZ_ASSERT(job != NULL);
    size_t len;
    uint8_t *bytes = pack(job, &len);
    PersonalizeGateway__V1__BatchInferenceJob *unpacked =
        personalize_gateway__v1__batch_inference_job__unpack(NULL, len, bytes);
    FUZZ_ASSERT(unpacked != NULL);
    pgw_job_free(unpacked);

    char *aws = pgw_job_to_aws_json(job);
    char *p3 = pgw_job_to_proto3_json(job);
    FUZZ_ASSERT(aws != NULL && p3 != NULL);
    json_error_t jerr;
    json_t *j = json_loads(p3, 0, &jerr);
    FUZZ_ASSERT(json_is_object(j));
    json_decref(j);

    PersonalizeGateway__V1__BatchInferenceJob *again = NULL;
    FUZZ_ASSERT(pgw_job_from_aws_json(aws, strlen(aws), &again, err, sizeof(err)) == 0);
    size_t len2;
    uint8_t *bytes2 = pack(again, &len2);
    FUZZ_ASSERT(len2 == len && memcmp(bytes, bytes2, len) == 0);

    free(bytes2);
    pgw_job_free(again);
    free(aws);
    free(p3);
    free(bytes);
    pgw_job_free(job);
    return 0;
}
