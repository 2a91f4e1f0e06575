/* job_json: the three JSON faces of a batch inference job.
 *
 *   AWS DescribeBatchInferenceJob body  --pgw_job_from_aws_json-->  BatchInferenceJob (protobuf-c)
 *   BatchInferenceJob  --pgw_job_to_aws_json-->     AWS-shaped body (for the AWS-compatible POST /)
 *   BatchInferenceJob  --pgw_job_to_proto3_json-->  proto3 JSON of
 * DescribeBatchInferenceJobResponse
 *
 * Pure: no I/O. JSON parsing and printing is jansson's. */
#ifndef PGW_JOB_JSON_H
#define PGW_JOB_JSON_H

#include <stddef.h>

#include "personalize_gateway/v1/personalize_gateway.pb-c.h"

/* Largest upstream body pgw_job_from_aws_json() accepts (a real one is about 2 KiB). */
#define PGW_JOB_JSON_MAX_BYTES (1024 * 1024)

/* Parses an AWS DescribeBatchInferenceJob response body, {"batchInferenceJob": {...}}, into a
 * newly allocated message stored in *out. Unknown fields are ignored, JSON null counts as
 * absent, an unknown batchInferenceJobMode becomes UNSPECIFIED, and the status string is kept
 * verbatim. Timestamps (epoch seconds, integer or fractional) are kept to the microsecond.
 * Returns 0 on success; the caller owns *out and frees it with pgw_job_free(). Returns -1 on
 * invalid JSON, a body over PGW_JOB_JSON_MAX_BYTES, a missing batchInferenceJob object, a field
 * of the wrong JSON type or an out-of-range number; then *out is NULL and err (if err_len > 0)
 * holds a printable one-line reason naming the field, e.g. "upstream returned
 * batchInferenceJob.jobName of type number, expected string". */
int pgw_job_from_aws_json(const char *body, size_t len,
                          PersonalizeGateway__V1__BatchInferenceJob **out, char *err,
                          size_t err_len);

/* Frees a job from pgw_job_from_aws_json() or from personalize_gateway__v1__batch_inference_job__
 * unpack(..., NULL) with everything it holds. Same as protobuf_c_message_free_unpacked(&job->base,
 * NULL), which is also correct. NULL is a no-op. */
void pgw_job_free(PersonalizeGateway__V1__BatchInferenceJob *job);

/* Renders the job as AWS's DescribeBatchInferenceJob response body, {"batchInferenceJob":{...}},
 * with AWS's field names, timestamps as epoch seconds with a fraction, and empty or unset
 * fields omitted as AWS omits absent ones (so numResults 0 is omitted; a string that is not
 * valid UTF-8 is omitted too). A NULL job renders as {}. Returns a malloc'd NUL-terminated
 * string the caller frees with free(), or NULL if out of memory. */
char *pgw_job_to_aws_json(const PersonalizeGateway__V1__BatchInferenceJob *job);

/* Renders the job as the proto3 canonical JSON of DescribeBatchInferenceJobResponse,
 * {"batchInferenceJob":{...}}: lowerCamelCase names (= the AWS names), RFC 3339 UTC timestamps
 * with 0, 3, 6 or 9 fractional digits, the enum by name, default-valued fields omitted. A
 * timestamp outside 0001..9999 or with invalid nanos is omitted rather than failing the answer.
 * A NULL job renders as {}. Returns a malloc'd string the caller frees with free(), or NULL
 * if out of memory. */
char *pgw_job_to_proto3_json(const PersonalizeGateway__V1__BatchInferenceJob *job);

#endif
