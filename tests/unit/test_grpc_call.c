/* The call core's pure helpers: the response wrapper around a cached job (field 1, no
 * re-pack) and the request decoder shared by Describe and Watch. */
#include <grpc/grpc.h>
#include <stdlib.h>
#include <string.h>

#include "personalize_gateway/v1/personalize_gateway.pb-c.h"
#include "service/grpc_call.h"
#include "test_util.h"

#define ARN "arn:aws:personalize:us-east-1:123456789012:batch-inference-job/core"

static grpc_byte_buffer *packed_request(const char *arn)
{
    PersonalizeGateway__V1__WatchBatchInferenceJobRequest req =
        PERSONALIZE_GATEWAY__V1__WATCH_BATCH_INFERENCE_JOB_REQUEST__INIT;
    req.batch_inference_job_arn = (char *)arn;
    size_t len = personalize_gateway__v1__watch_batch_inference_job_request__get_packed_size(&req);
    uint8_t *buf = malloc(len + 1);
    personalize_gateway__v1__watch_batch_inference_job_request__pack(&req, buf);
    grpc_byte_buffer *bb = pgw_grpc_byte_buffer(buf, len);
    free(buf);
    return bb;
}

static void test_wrap_field1(size_t job_len)
{
    /* A job with a long failure reason: the length prefix takes one, two or three bytes. */
    char *reason = malloc(job_len + 1);
    memset(reason, 'r', job_len);
    reason[job_len] = '\0';
    PersonalizeGateway__V1__BatchInferenceJob job =
        PERSONALIZE_GATEWAY__V1__BATCH_INFERENCE_JOB__INIT;
    job.batch_inference_job_arn = (char *)ARN;
    job.status = (char *)"IN PROGRESS";
    job.failure_reason = reason;
    size_t len = personalize_gateway__v1__batch_inference_job__get_packed_size(&job);
    uint8_t *pb = malloc(len);
    personalize_gateway__v1__batch_inference_job__pack(&job, pb);
    grpc_byte_buffer *bb = pgw_grpc_wrap_field1(pb, len);
    grpc_slice all;
    CHECK(pgw_grpc_read_all(bb, &all) == 0);
    PersonalizeGateway__V1__WatchBatchInferenceJobResponse *resp =
        personalize_gateway__v1__watch_batch_inference_job_response__unpack(
            NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    CHECK(resp && resp->batch_inference_job);
    if (resp && resp->batch_inference_job) {
        CHECK_STR(resp->batch_inference_job->status, "IN PROGRESS");
        CHECK(strlen(resp->batch_inference_job->failure_reason) == job_len);
    }
    personalize_gateway__v1__watch_batch_inference_job_response__free_unpacked(resp, NULL);
    grpc_slice_unref(all);
    grpc_byte_buffer_destroy(bb);
    free(pb);
    free(reason);
}

static void test_read_arn(void)
{
    char arn[300];
    size_t len = 0;
    grpc_byte_buffer *bb = packed_request(ARN);
    CHECK(pgw_grpc_read_arn_request(bb, arn, sizeof(arn), &len) == 0);
    CHECK_STR(arn, ARN);
    CHECK(len == strlen(ARN));
    grpc_byte_buffer_destroy(bb);

    /* Longer than the room: a prefix, which the ARN check then refuses by its length. */
    char long_arn[400];
    memset(long_arn, 'a', sizeof(long_arn) - 1);
    long_arn[sizeof(long_arn) - 1] = '\0';
    bb = packed_request(long_arn);
    CHECK(pgw_grpc_read_arn_request(bb, arn, sizeof(arn), &len) == 0);
    CHECK(len == sizeof(arn) - 1 && strlen(arn) == len);
    grpc_byte_buffer_destroy(bb);

    /* An empty message is a request with an empty ARN; an unknown field is skipped. */
    bb = pgw_grpc_byte_buffer((const uint8_t *)"", 0);
    CHECK(pgw_grpc_read_arn_request(bb, arn, sizeof(arn), &len) == 0 && len == 0);
    grpc_byte_buffer_destroy(bb);
    const uint8_t unknown[] = {0x10, 0x01, 0x0a, 0x01, 'x'};
    bb = pgw_grpc_byte_buffer(unknown, sizeof(unknown));
    CHECK(pgw_grpc_read_arn_request(bb, arn, sizeof(arn), &len) == 0);
    CHECK_STR(arn, "x");
    grpc_byte_buffer_destroy(bb);

    /* Truncated or not a message at all. */
    const uint8_t truncated[] = {0x0a, 0x10, 'a', 'r', 'n'};
    bb = pgw_grpc_byte_buffer(truncated, sizeof(truncated));
    CHECK(pgw_grpc_read_arn_request(bb, arn, sizeof(arn), &len) != 0);
    grpc_byte_buffer_destroy(bb);
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    bb = pgw_grpc_byte_buffer(junk, sizeof(junk));
    CHECK(pgw_grpc_read_arn_request(bb, arn, sizeof(arn), &len) != 0);
    grpc_byte_buffer_destroy(bb);
}

int main(void)
{
    grpc_init();
    test_wrap_field1(10);
    test_wrap_field1(200);
    test_wrap_field1(20000);
    test_read_arn();
    grpc_shutdown();
    return pgw_test_finish("test_grpc_call");
}
