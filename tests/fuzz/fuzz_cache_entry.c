/* Fuzz target: the cache value codec (cache/entry.c) on untrusted Redis bytes, and what the
 * gateway does with a value it decoded: a positive entry's job is unpacked and rendered as
 * both JSON answers, a negative entry's strings go into the HTTP error body.
 * Invariants: a value that decodes re-encodes to the very same bytes (nothing is misread or
 * dropped); its strings are NUL-terminated within bounds and JSON-safe; the renderings of a
 * job are valid JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/entry.h"
#include "fuzz_util.h"
#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/aws/job_json.h"

static void check_json_text(char *text)
{
    FUZZ_ASSERT(text != NULL);
    json_error_t jerr;
    json_t *back = json_loads(text, 0, &jerr);
    FUZZ_ASSERT(json_is_object(back));
    json_decref(back);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pgw_cache_entry e;
    if (pgw_cache_entry_decode(data, size, &e) != 0)
        return 0;
    FUZZ_ASSERT(e.fetched_at_ms <= e.fresh_until_ms && e.fresh_until_ms <= e.stale_until_ms);
    FUZZ_ASSERT(!(pgw_cache_entry_is_fresh(&e, e.fetched_at_ms) &&
                  pgw_cache_entry_is_stale_usable(&e, e.fetched_at_ms)));
    size_t len = 0;
    uint8_t *again = pgw_cache_entry_encode(&e, &len);
    FUZZ_ASSERT(again != NULL && len == size && memcmp(again, data, size) == 0);
    free(again);

    if (e.kind == PGW_CACHE_ENTRY_POSITIVE) {
        FUZZ_ASSERT(e.job_pb == data + PGW_CACHE_ENTRY_HEADER_LEN);
        PersonalizeGateway__V1__BatchInferenceJob *job =
            personalize_gateway__v1__batch_inference_job__unpack(NULL, e.job_pb_len, e.job_pb);
        if (job) {
            check_json_text(pgw_job_to_aws_json(job));
            check_json_text(pgw_job_to_proto3_json(job));
            pgw_job_free(job);
        }
    } else {
        FUZZ_ASSERT(e.kind == PGW_CACHE_ENTRY_NEGATIVE);
        FUZZ_ASSERT(strlen(e.error_code) <= PGW_CACHE_ENTRY_MAX_CODE);
        FUZZ_ASSERT(strlen(e.message) <= PGW_CACHE_ENTRY_MAX_MESSAGE);
        FUZZ_ASSERT(strlen(e.request_id) <= PGW_CACHE_ENTRY_MAX_REQID);
        /* The HTTP frontend answers a cached NOT_FOUND with these in a JSON body. */
        FUZZ_ASSERT(fuzz_json_safe_str(e.error_code));
        FUZZ_ASSERT(fuzz_json_safe_str(e.message));
        FUZZ_ASSERT(fuzz_json_safe_str(e.request_id));
    }
    return 0;
}
