/* request_decode: the job ARN out of a gRPC request message's wire bytes. See
 * request_decode.h. */
#include "service/request_decode.h"

#include <stdio.h>
#include <string.h>

#include "personalize_gateway/internal/v1/wire.pb-c.h"

int pgw_request_decode_arn(const uint8_t *msg, size_t len, char *arn, size_t arn_cap,
                           size_t *arn_len, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    if (arn_len)
        *arn_len = 0;
    if (!arn || arn_cap == 0 || !arn_len) {
        if (err && err_len)
            snprintf(err, err_len, "internal error: no room for the ARN");
        return -1;
    }
    arn[0] = '\0';
    if (!msg && len) {
        if (err && err_len)
            snprintf(err, err_len, "internal error: no request bytes");
        return -1;
    }
    /* protobuf-c reads nothing from msg when len is 0, but wants a pointer all the same. */
    static const uint8_t empty[1];
    PersonalizeGateway__Internal__V1__ArnRequestWire *req =
        personalize_gateway__internal__v1__arn_request_wire__unpack(NULL, len, msg ? msg : empty);
    if (!req) {
        if (err && err_len)
            snprintf(err, err_len, "the request is not a valid protobuf message");
        return -1;
    }
    size_t n = req->batch_inference_job_arn.len;
    if (n > arn_cap - 1)
        n = arn_cap - 1;
    if (n)
        memcpy(arn, req->batch_inference_job_arn.data, n);
    arn[n] = '\0';
    *arn_len = n;
    personalize_gateway__internal__v1__arn_request_wire__free_unpacked(req, NULL);
    return 0;
}
