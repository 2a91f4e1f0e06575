/* Server reflection answers; see grpc_reflection.h. */
#include "service/grpc_reflection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

extern const unsigned char pgw_descriptor_set[];
extern const size_t pgw_descriptor_set_len;

/* The set's files, re-serialized once each so answers copy bytes instead of packing. */
struct pgw_reflection {
    Google__Protobuf__FileDescriptorSet *set;
    ProtobufCBinaryData *packed; /* per file */
};

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest Request;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse Response;

#define GRPC_NOT_FOUND        5
#define GRPC_INVALID_ARGUMENT 3
#define GRPC_UNIMPLEMENTED    12

pgw_reflection *pgw_reflection_new(const uint8_t *descriptor_set, size_t len)
{
    pgw_reflection *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->set = google__protobuf__file_descriptor_set__unpack(NULL, len, descriptor_set);
    if (!r->set || !(r->packed = calloc(r->set->n_file ? r->set->n_file : 1, sizeof(*r->packed)))) {
        pgw_reflection_free(r);
        return NULL;
    }
    for (size_t i = 0; i < r->set->n_file; i++) {
        ProtobufCBinaryData *p = &r->packed[i];
        p->len = google__protobuf__file_descriptor_proto__get_packed_size(r->set->file[i]);
        p->data = malloc(p->len ? p->len : 1);
        if (!p->data) {
            pgw_reflection_free(r);
            return NULL;
        }
        google__protobuf__file_descriptor_proto__pack(r->set->file[i], p->data);
    }
    return r;
}

pgw_reflection *pgw_reflection_new_builtin(void)
{
    return pgw_reflection_new(pgw_descriptor_set, pgw_descriptor_set_len);
}

void pgw_reflection_free(pgw_reflection *r)
{
    if (!r)
        return;
    if (r->packed)
        for (size_t i = 0; i < r->set->n_file; i++)
            free(r->packed[i].data);
    free(r->packed);
    if (r->set)
        google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
    free(r);
}

/* --- finding files --- */

static int file_by_name(const pgw_reflection *r, const char *name)
{
    for (size_t i = 0; i < r->set->n_file; i++)
        if (r->set->file[i]->name && strcmp(r->set->file[i]->name, name) == 0)
            return (int)i;
    return -1;
}

/* Nonzero when `symbol` is `scope` "." `name` (scope may be ""). */
static int is_qualified(const char *symbol, const char *scope, const char *name)
{
    if (!name)
        return 0;
    size_t sl = strlen(scope);
    if (sl == 0)
        return strcmp(symbol, name) == 0;
    return strncmp(symbol, scope, sl) == 0 && symbol[sl] == '.' &&
           strcmp(symbol + sl + 1, name) == 0;
}

/* Does the message (at `scope`) or anything nested in it define `symbol`? */
static int message_defines(const Google__Protobuf__DescriptorProto *m, const char *scope,
                           const char *symbol)
{
    if (!m->name)
        return 0;
    if (is_qualified(symbol, scope, m->name))
        return 1;
    size_t len = strlen(scope) + strlen(m->name) + 2;
    char *inner = malloc(len);
    if (!inner)
        return 0;
    snprintf(inner, len, "%s%s%s", scope, scope[0] ? "." : "", m->name);
    int found = 0;
    for (size_t i = 0; i < m->n_field && !found; i++)
        found = is_qualified(symbol, inner, m->field[i]->name);
    for (size_t i = 0; i < m->n_enum_type && !found; i++)
        found = is_qualified(symbol, inner, m->enum_type[i]->name);
    for (size_t i = 0; i < m->n_nested_type && !found; i++)
        found = message_defines(m->nested_type[i], inner, symbol);
    free(inner);
    return found;
}

static int file_defines(const Google__Protobuf__FileDescriptorProto *f, const char *symbol)
{
    const char *pkg = f->package ? f->package : "";
    for (size_t i = 0; i < f->n_message_type; i++)
        if (message_defines(f->message_type[i], pkg, symbol))
            return 1;
    for (size_t i = 0; i < f->n_enum_type; i++)
        if (is_qualified(symbol, pkg, f->enum_type[i]->name))
            return 1;
    for (size_t i = 0; i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        if (is_qualified(symbol, pkg, s->name))
            return 1;
        /* Methods: "<package>.<Service>.<Method>" */
        size_t pl = strlen(pkg), nl = s->name ? strlen(s->name) : 0;
        if (!s->name || strncmp(symbol, pkg, pl) != 0 || (pl && symbol[pl] != '.'))
            continue;
        const char *rest = symbol + (pl ? pl + 1 : 0);
        if (strncmp(rest, s->name, nl) != 0 || rest[nl] != '.')
            continue;
        for (size_t j = 0; j < s->n_method; j++)
            if (s->method[j]->name && strcmp(rest + nl + 1, s->method[j]->name) == 0)
                return 1;
    }
    return 0;
}

static int file_by_symbol(const pgw_reflection *r, const char *symbol)
{
    for (size_t i = 0; i < r->set->n_file; i++)
        if (file_defines(r->set->file[i], symbol))
            return (int)i;
    return -1;
}

/* Marks file i and, transitively, its dependencies. */
static void mark_with_deps(const pgw_reflection *r, int i, unsigned char *marked)
{
    if (i < 0 || marked[i])
        return;
    marked[i] = 1;
    const Google__Protobuf__FileDescriptorProto *f = r->set->file[i];
    for (size_t d = 0; d < f->n_dependency; d++)
        mark_with_deps(r, file_by_name(r, f->dependency[d]), marked);
}

/* --- answering --- */

static uint8_t *pack_response(Response *resp, size_t *out_len)
{
    *out_len = grpc__reflection__v1alpha__server_reflection_response__get_packed_size(resp);
    uint8_t *buf = malloc(*out_len ? *out_len : 1);
    if (buf)
        grpc__reflection__v1alpha__server_reflection_response__pack(resp, buf);
    return buf;
}

static uint8_t *answer_error(Response *resp, int code, const char *message, size_t *out_len)
{
    Grpc__Reflection__V1alpha__ErrorResponse err = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    err.error_code = code;
    err.error_message = (char *)message;
    resp->message_response_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = &err;
    return pack_response(resp, out_len);
}

static uint8_t *answer_files(const pgw_reflection *r, Response *resp, int first, size_t *out_len)
{
    size_t n = r->set->n_file;
    unsigned char *marked = calloc(n ? n : 1, 1);
    ProtobufCBinaryData *files = calloc(n ? n : 1, sizeof(*files));
    uint8_t *out = NULL;
    if (marked && files) {
        /* The file asked for first, then what it imports. */
        mark_with_deps(r, first, marked);
        size_t k = 0;
        files[k++] = r->packed[first];
        for (size_t i = 0; i < n; i++)
            if (marked[i] && (int)i != first)
                files[k++] = r->packed[i];
        Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
            GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
        fdr.n_file_descriptor_proto = k;
        fdr.file_descriptor_proto = files;
        resp->message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp->file_descriptor_response = &fdr;
        out = pack_response(resp, out_len);
    }
    free(marked);
    free(files);
    return out;
}

static uint8_t *answer_services(const pgw_reflection *r, Response *resp, size_t *out_len)
{
    size_t n = 0;
    for (size_t i = 0; i < r->set->n_file; i++)
        n += r->set->file[i]->n_service;
    Grpc__Reflection__V1alpha__ServiceResponse *items = calloc(n ? n : 1, sizeof(*items));
    Grpc__Reflection__V1alpha__ServiceResponse **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    char **names = calloc(n ? n : 1, sizeof(*names));
    uint8_t *out = NULL;
    size_t k = 0;
    if (items && ptrs && names) {
        for (size_t i = 0; i < r->set->n_file; i++) {
            const Google__Protobuf__FileDescriptorProto *f = r->set->file[i];
            const char *pkg = f->package ? f->package : "";
            for (size_t j = 0; j < f->n_service; j++) {
                const char *svc = f->service[j]->name ? f->service[j]->name : "";
                size_t len = strlen(pkg) + strlen(svc) + 2;
                if (!(names[k] = malloc(len)))
                    goto done;
                snprintf(names[k], len, "%s%s%s", pkg, pkg[0] ? "." : "", svc);
                grpc__reflection__v1alpha__service_response__init(&items[k]);
                items[k].name = names[k];
                ptrs[k] = &items[k];
                k++;
            }
        }
        Grpc__Reflection__V1alpha__ListServiceResponse list =
            GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
        list.n_service = k;
        list.service = ptrs;
        resp->message_response_case =
            GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp->list_services_response = &list;
        out = pack_response(resp, out_len);
    }
done:
    if (names)
        for (size_t i = 0; i < k; i++)
            free(names[i]);
    free(names);
    free(ptrs);
    free(items);
    return out;
}

uint8_t *pgw_reflection_answer(const pgw_reflection *r, const uint8_t *request, size_t len,
                               size_t *out_len)
{
    Request *req = grpc__reflection__v1alpha__server_reflection_request__unpack(NULL, len, request);
    if (!req)
        return NULL;
    Response resp = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host ? req->host : "";
    resp.original_request = req;
    uint8_t *out;
    int i;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        i = file_by_name(r, req->file_by_filename);
        out = i >= 0 ? answer_files(r, &resp, i, out_len)
                     : answer_error(&resp, GRPC_NOT_FOUND, "no such file", out_len);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        i = file_by_symbol(r, req->file_containing_symbol);
        out = i >= 0 ? answer_files(r, &resp, i, out_len)
                     : answer_error(&resp, GRPC_NOT_FOUND, "no such symbol", out_len);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        out = answer_services(r, &resp, out_len);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        out = answer_error(&resp, GRPC_UNIMPLEMENTED, "these services use no extensions", out_len);
        break;
    default:
        out = answer_error(&resp, GRPC_INVALID_ARGUMENT, "empty reflection request", out_len);
        break;
    }
    grpc__reflection__v1alpha__server_reflection_request__free_unpacked(req, NULL);
    return out;
}
