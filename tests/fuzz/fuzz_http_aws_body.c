/* Fuzz target: the body of POST / (service/http_request.c, JSON through jansson) and the ARN
 * check it leads to. Invariants: a refusal carries a static problem and an AWS error type; an
 * ARN taken from the body is the JSON string's exact bytes (length included), and the ARN
 * check accepts it only if it has no NUL and is ASCII. */
#include <stdint.h>
#include <string.h>

#include "fuzz_util.h"
#include "service/aws/arn.h"
#include "service/http_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgw_http_aws_request r;
    int rc = pgw_http_aws_request_parse(&r, (const char *)data, size);
    if (rc != 0) {
        FUZZ_ASSERT(r.arn == NULL && r.problem && r.aws_type);
        FUZZ_ASSERT(strcmp(r.aws_type, "SerializationException") == 0 ||
                    strcmp(r.aws_type, "InvalidInputException") == 0);
    } else {
        FUZZ_ASSERT(r.arn && !r.problem && json_is_object(r.root));
        json_t *v = json_object_get(r.root, "batchInferenceJobArn");
        FUZZ_ASSERT(json_is_string(v) && json_string_length(v) == r.arn_len);
        /* No JSON_ALLOW_NUL: jansson never hands over a string with a NUL. */
        FUZZ_ASSERT(memchr(r.arn, '\0', r.arn_len) == NULL);
        pgw_arn a;
        if (pgw_arn_parse(r.arn, r.arn_len, &a, NULL, 0) == 0)
            for (size_t i = 0; i < r.arn_len; i++)
                FUZZ_ASSERT((unsigned char)r.arn[i] < 0x80);
    }
    pgw_http_aws_request_cleanup(&r);
    return 0;
}
