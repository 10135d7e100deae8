/*
 * HTTP endpoint for the metrics registry on libmicrohttpd: GET /metrics (Prometheus text
 * format 0.0.4), GET /healthz (JSON), GET / (the console page, embedded in the binary at
 * build time from console/console.html) and GET /api/status (the JSON the page polls,
 * rendered by the runtime's callback, cf_metrics_set_status).
 *
 * The page loads nothing from elsewhere: its Content-Security-Policy allows only itself
 * (inline script and style) and fetches to this origin, so it works offline and a page
 * injected into it could not send data anywhere else.
 *
 * Threads: libmicrohttpd runs one internal polling thread (MHD_USE_INTERNAL_POLLING_THREAD
 * with poll/epoll chosen by MHD_USE_AUTO); every request is answered on it. A scrape renders
 * the registry under the registry lock, which only registration contends for, so the
 * pipeline's hot path is never blocked by a scrape.
 *
 * Bounds: at most 64 concurrent connections, a 10 s connection timeout, request bodies are
 * ignored, only GET and HEAD are served. The library never prints: MHD's error log is off.
 *
 * Ownership: the server borrows the registry; the caller stops the server before destroying
 * the registry.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "confide/core.h"
#include "confide/metrics.h"
#include "metrics_int.h"

struct cf_metrics_server {
    struct MHD_Daemon *daemon;
    cf_metrics *m;
    uint16_t port;
};

#define CONSOLE_CSP                                                                                \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "                  \
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "                     \
    "frame-ancestors 'none'"

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *ctype,
                             char *body, size_t len, bool owned)
{
    struct MHD_Response *resp;
    if (owned) {
        resp = MHD_create_response_from_buffer_with_free_callback(len, body, cf_free);
    } else {
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_COPY);
    }
    if (resp == NULL) {
        if (owned) {
            cf_free(body);
        }
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    (void)version;
    (void)upload_data;
    cf_metrics_server *s = cls;
    /* The first call only announces the request; answer on the second (MHD convention). */
    if (*req_cls == NULL) {
        *req_cls = s;
        return MHD_YES;
    }
    *upload_data_size = 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "method not allowed\n";
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", (char *)msg,
                     sizeof(msg) - 1, false);
    }
    if (strcmp(url, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        if (cf_metrics_expose(s->m, &text, &len) != CF_OK) {
            static const char msg[] = "out of memory\n";
            return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8",
                         (char *)msg, sizeof(msg) - 1, false);
        }
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text, len,
                     true);
    }
    if (strcmp(url, "/healthz") == 0) {
        char detail[256] = "";
        bool ok = cf__metrics_health(s->m, detail, sizeof(detail));
        cf__mbuf b = {0};
        cf__mbuf_printf(&b, "{\"status\":\"%s\",\"uptime_s\":%.3f", ok ? "ok" : "unhealthy",
                        cf_metrics_uptime_s(s->m));
        if (detail[0] != '\0') {
            cf__mbuf_puts(&b, ",\"detail\":");
            cf__mbuf_json_str(&b, detail);
        }
        cf__mbuf_puts(&b, "}\n");
        if (b.oom) {
            cf_free(b.p);
            return MHD_NO;
        }
        return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", b.p,
                     b.len, true);
    }
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
        /* static, so no copy: MHD only reads it */
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            cf__console_html_len, (void *)cf__console_html, MHD_RESPMEM_PERSISTENT);
        if (resp == NULL) {
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, "Content-Security-Policy", CONSOLE_CSP);
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
        enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return r;
    }
    if (strcmp(url, "/api/status") == 0) {
        char *body = NULL;
        size_t len = 0;
        cf_err err = cf__metrics_status(s->m, &body, &len);
        if (err == CF_E_NOTFOUND) {
            static const char msg[] = "{\"error\":\"no status in this process\"}\n";
            return reply(conn, MHD_HTTP_NOT_FOUND, "application/json", (char *)msg, sizeof(msg) - 1,
                         false);
        }
        if (err != CF_OK || body == NULL) {
            cf_free(body);
            static const char msg[] = "{\"error\":\"status unavailable\"}\n";
            return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json", (char *)msg,
                         sizeof(msg) - 1, false);
        }
        return reply(conn, MHD_HTTP_OK, "application/json", body, len, true);
    }
    static const char msg[] = "not found: try /, /api/status, /metrics or /healthz\n";
    return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", (char *)msg,
                 sizeof(msg) - 1, false);
}

/* Splits "host:port" or "[v6]:port" into host and port strings. */
static cf_err split_addr(const char *addr, char *host, size_t host_size, char *port,
                         size_t port_size, char *errstr, size_t errstr_size)
{
    const char *colon;
    const char *hs = addr;
    size_t hlen;
    if (addr == NULL || addr[0] == '\0') {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "metrics address is empty");
    }
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':') {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "metrics address '%s': expected [IPV6]:PORT", addr);
        }
        hs = addr + 1;
        hlen = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL) {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size,
                              "metrics address '%s': expected HOST:PORT", addr);
        }
        hlen = (size_t)(colon - addr);
    }
    const char *ps = colon + 1;
    size_t plen = strlen(ps);
    long pv = 0;
    if (plen == 0 || plen > 5) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "metrics address '%s': bad port", addr);
    }
    for (size_t i = 0; i < plen; i++) {
        if (ps[i] < '0' || ps[i] > '9') {
            return cf_err_set(CF_E_INVAL, errstr, errstr_size, "metrics address '%s': bad port",
                              addr);
        }
        pv = pv * 10 + (ps[i] - '0');
    }
    if (pv > 65535 || hlen == 0 || hlen >= host_size || plen >= port_size) {
        return cf_err_set(CF_E_INVAL, errstr, errstr_size, "metrics address '%s': bad host or port",
                          addr);
    }
    memcpy(host, hs, hlen);
    host[hlen] = '\0';
    memcpy(port, ps, plen);
    port[plen] = '\0';
    return CF_OK;
}

cf_err cf_metrics_serve(cf_metrics *m, const char *addr, cf_metrics_server **out,
                        uint16_t *port_out, char *errstr, size_t errstr_size)
{
    CF_ASSERT(m != NULL && out != NULL);
    *out = NULL;
    char host[256];
    char port[8];
    struct addrinfo *ai = NULL;
    cf_metrics_server *s = NULL;
    cf_err err = split_addr(addr, host, sizeof(host), port, sizeof(port), errstr, errstr_size);
    if (err != CF_OK) {
        return err;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        err = cf_err_set(CF_E_INVAL, errstr, errstr_size, "metrics address '%s': %s", addr,
                         gai_strerror(gai));
        goto fail;
    }
    s = cf_calloc(1, sizeof(*s));
    if (s == NULL) {
        err = CF_E_NOMEM;
        goto fail;
    }
    s->m = m;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                                 ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    if (s->daemon == NULL) {
        err = cf_err_set(CF_E_IO, errstr, errstr_size,
                         "metrics: cannot listen on %s (address in use or not local?)", addr);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info == NULL || info->port == 0) {
        err = cf_err_set(CF_E_IO, errstr, errstr_size, "metrics: cannot read bound port");
        goto fail;
    }
    s->port = info->port;
    freeaddrinfo(ai);
    if (port_out != NULL) {
        *port_out = s->port;
    }
    *out = s;
    return CF_OK;
fail:
    if (ai != NULL) {
        freeaddrinfo(ai);
    }
    if (s != NULL && s->daemon != NULL) {
        MHD_stop_daemon(s->daemon);
    }
    cf_free(s);
    return err;
}

void cf_metrics_server_stop(cf_metrics_server *s)
{
    if (s == NULL) {
        return;
    }
    MHD_stop_daemon(s->daemon);
    cf_free(s);
}
