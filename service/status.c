#include "service/status.h"

int pgw_code_http_status(pgw_code code)
{
    switch (code) {
    case PGW_OK:
        return 200;
    case PGW_CANCELLED:
        return 499;
    case PGW_INVALID_ARGUMENT:
        return 400;
    case PGW_DEADLINE_EXCEEDED:
        return 504;
    case PGW_NOT_FOUND:
        return 404;
    case PGW_PERMISSION_DENIED:
        return 403;
    case PGW_RESOURCE_EXHAUSTED:
        return 429;
    case PGW_UNIMPLEMENTED:
        return 501;
    case PGW_UNAVAILABLE:
        return 503;
    case PGW_UNAUTHENTICATED:
        return 401;
    case PGW_UNKNOWN:
    case PGW_INTERNAL:
        break;
    }
    return 500;
}

const char *pgw_code_name(pgw_code code)
{
    switch (code) {
    case PGW_OK:
        return "OK";
    case PGW_CANCELLED:
        return "CANCELLED";
    case PGW_UNKNOWN:
        return "UNKNOWN";
    case PGW_INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
    case PGW_DEADLINE_EXCEEDED:
        return "DEADLINE_EXCEEDED";
    case PGW_NOT_FOUND:
        return "NOT_FOUND";
    case PGW_PERMISSION_DENIED:
        return "PERMISSION_DENIED";
    case PGW_RESOURCE_EXHAUSTED:
        return "RESOURCE_EXHAUSTED";
    case PGW_UNIMPLEMENTED:
        return "UNIMPLEMENTED";
    case PGW_INTERNAL:
        return "INTERNAL";
    case PGW_UNAVAILABLE:
        return "UNAVAILABLE";
    case PGW_UNAUTHENTICATED:
        return "UNAUTHENTICATED";
    }
    return "UNKNOWN";
}
