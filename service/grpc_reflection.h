/* grpc_reflection: the answers of gRPC server reflection (grpc.reflection.v1alpha and v1, the
 * same messages on the wire), from the descriptor set compiled into the binary. It knows
 * nothing of calls or streams: one request's bytes in, one response's bytes out, so the gRPC
 * frontend streams it and the fuzzer feeds it directly.
 *
 * Immutable after creation: safe from any thread. */
#ifndef PGW_GRPC_REFLECTION_H
#define PGW_GRPC_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

typedef struct pgw_reflection pgw_reflection;

/* Parses a serialized google.protobuf.FileDescriptorSet (borrowed: it must outlive the
 * result). Services listed are those of every file; NULL when the set does not decode. */
pgw_reflection *pgw_reflection_new(const uint8_t *descriptor_set, size_t len);

/* The descriptor set built into the binary (personalize_gateway, health, reflection). */
pgw_reflection *pgw_reflection_new_builtin(void);

void pgw_reflection_free(pgw_reflection *reflection);

/* Answers one serialized ServerReflectionRequest with a serialized ServerReflectionResponse
 * (malloc'd, the caller frees; its length in *out_len): the file asked for with its
 * dependencies, the services, or an error_response (NOT_FOUND for an unknown file or symbol,
 * UNIMPLEMENTED for extension queries, INVALID_ARGUMENT for an empty request). Returns NULL
 * when the request does not decode (the caller ends the stream INVALID_ARGUMENT) or memory
 * runs out. */
uint8_t *pgw_reflection_answer(const pgw_reflection *reflection, const uint8_t *request, size_t len,
                               size_t *out_len);

#endif
