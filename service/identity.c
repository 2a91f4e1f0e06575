#include "service/identity.h"

#include <grpc/grpc_security.h>
#include <grpc/grpc_security_constants.h>
#include <string.h>

int pgw_identity_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > PGW_IDENTITY_MAX_LEN)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* Printable ASCII without space: no control characters to forge log lines, no NUL to
         * cut a name short. */
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

static int copy_if_valid(const char *s, size_t len, char *out, size_t out_len)
{
    if (!pgw_identity_valid(s, len) || len + 1 > out_len)
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

int pgw_identity_choose(const pgw_identity_candidates *c, char *out, size_t out_len)
{
    if (out_len == 0)
        return -1;
    out[0] = '\0';
    const char *order[] = {c->spiffe_id, c->uri, c->dns, c->cn};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (order[i] && copy_if_valid(order[i], strlen(order[i]), out, out_len) == 0)
            return 0;
    }
    return -1;
}

/* The first value of an auth-context property, as a NUL-terminated copy in buf, or NULL. The
 * property values are not guaranteed NUL-terminated: they carry a length. */
static const char *first_property(const grpc_auth_context *ctx, const char *name, char *buf,
                                  size_t len)
{
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);
    const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
    if (!p || !p->value || p->value_length == 0 || p->value_length >= len)
        return NULL;
    memcpy(buf, p->value, p->value_length);
    buf[p->value_length] = '\0';
    return buf;
}

int pgw_identity_from_call(grpc_call *call, char *out, size_t out_len)
{
    if (out_len)
        out[0] = '\0';
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx)
        return -1;
    int rc = -1;
    if (grpc_auth_context_peer_is_authenticated(ctx)) {
        char spiffe[PGW_IDENTITY_MAX_LEN + 1], uri[PGW_IDENTITY_MAX_LEN + 1];
        char dns[PGW_IDENTITY_MAX_LEN + 1], cn[PGW_IDENTITY_MAX_LEN + 1];
        pgw_identity_candidates c = {
            .spiffe_id =
                first_property(ctx, GRPC_PEER_SPIFFE_ID_PROPERTY_NAME, spiffe, sizeof(spiffe)),
            .uri = first_property(ctx, GRPC_PEER_URI_PROPERTY_NAME, uri, sizeof(uri)),
            .dns = first_property(ctx, GRPC_PEER_DNS_PROPERTY_NAME, dns, sizeof(dns)),
            .cn = first_property(ctx, GRPC_X509_CN_PROPERTY_NAME, cn, sizeof(cn)),
        };
        rc = pgw_identity_choose(&c, out, out_len);
    }
    grpc_auth_context_release(ctx);
    return rc;
}

int pgw_identity_from_metadata(const grpc_metadata_array *md, const char *header, char *out,
                               size_t out_len)
{
    if (out_len)
        out[0] = '\0';
    const grpc_slice *found = NULL;
    for (size_t i = 0; i < md->count; i++) {
        if (grpc_slice_str_cmp(md->metadata[i].key, header) != 0)
            continue;
        if (found)
            return -1; /* repeated: ambiguous */
        found = &md->metadata[i].value;
    }
    if (!found)
        return -1;
    return copy_if_valid((const char *)GRPC_SLICE_START_PTR(*found), GRPC_SLICE_LENGTH(*found), out,
                         out_len);
}
