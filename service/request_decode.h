/* request_decode: the job ARN out of a gRPC request message's wire bytes.
 *
 * DescribeBatchInferenceJobRequest and WatchBatchInferenceJobRequest carry one field, the ARN
 * (a proto3 string, field 1). Decoding them with their own protobuf-c descriptors would hand
 * the ARN over as a NUL-terminated C string and lose its length: "...job/x\0anything" would
 * read as "...job/x", pass the ARN check and be looked up as another job. So they are decoded
 * with a wire twin (proto/personalize_gateway/internal/v1/wire.proto) that declares field 1 as
 * bytes: the ARN comes with its length and every byte reaches pgw_arn_parse(), which refuses
 * NUL, other control characters and anything that is not ASCII (hence any invalid UTF-8).
 *
 * A leaf module: no I/O, no gRPC, no service-wide header. */
#ifndef PGW_REQUEST_DECODE_H
#define PGW_REQUEST_DECODE_H

#include <stddef.h>
#include <stdint.h>

/* Decodes the `len` wire bytes at msg (a whole DescribeBatchInferenceJobRequest or
 * WatchBatchInferenceJobRequest; unknown fields are skipped, a repeated field 1 counts as its
 * last occurrence, as protobuf does) and copies the ARN, byte for byte, into arn: at most
 * arn_cap - 1 bytes, then a NUL. *arn_len gets the number of bytes copied; an ARN longer than
 * that is cut, so give arn_cap > PGW_ARN_MAX_LEN + 1 and the ARN check still sees it as too
 * long. An absent field is the empty ARN (proto3's default). The ARN is NOT checked here: the
 * caller hands (arn, *arn_len) to the lookup, whose pgw_arn_parse() is the one check every
 * frontend shares.
 * Returns 0; or -1 when the bytes are not a valid protobuf message of that shape (then arn is
 * "", *arn_len 0, and err, if err_len > 0, holds a one-line reason that quotes no input). */
int pgw_request_decode_arn(const uint8_t *msg, size_t len, char *arn, size_t arn_cap,
                           size_t *arn_len, char *err, size_t err_len);

#endif
