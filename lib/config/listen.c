/* Listening addresses of the daemon's TCP endpoints (daemon.metrics_listen).
 *
 * One parser for the validation (so that `sessionctl config --validate` and
 * a reload refuse a bad address before the daemon tries it) and for the
 * daemon, which binds what it returns. Only numeric addresses are taken:
 * resolving a name would be a blocking lookup on the daemon's loop, and a
 * name that resolves to several addresses would make "where does it
 * listen" a question with more than one answer. The forms are those of
 * Prometheus exporters: 127.0.0.1:9567, 0.0.0.0:9567, [::1]:9567, [::]:9567.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

/* "1".."65535", digits only. */
static int port_parse(const char *text, uint16_t *ret) {
        unsigned long v = 0;

        if (!*text || strlen(text) > 5)
                return -EINVAL;
        for (const char *p = text; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned long) (*p - '0');
        }
        if (v < 1 || v > 65535)
                return -EINVAL;
        *ret = (uint16_t) v;
        return 0;
}

SESSIOND_EXPORT int sessiond_listen_address_parse(const char *text, struct sockaddr *ret, size_t ret_size,
                                                  size_t *ret_len) {
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon, *h = text;
        size_t hlen;
        uint16_t port;
        bool v6;

        if (!text)
                return -EINVAL;
        colon = strrchr(text, ':');
        if (!colon || port_parse(colon + 1, &port) < 0)
                return -EINVAL;
        hlen = (size_t) (colon - text);
        v6 = hlen >= 2 && text[0] == '[' && text[hlen - 1] == ']';
        if (v6) {
                h = text + 1;
                hlen -= 2;
        }
        if (hlen == 0 || hlen >= sizeof host)
                return -EINVAL;
        memcpy(host, h, hlen);
        host[hlen] = '\0';

        if (v6) {
                struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port)};

                if (inet_pton(AF_INET6, host, &sa.sin6_addr) != 1)
                        return -EINVAL;
                if (ret) {
                        if (ret_size < sizeof sa)
                                return -ENOBUFS;
                        memcpy(ret, &sa, sizeof sa);
                        *ret_len = sizeof sa;
                }
        } else {
                struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};

                /* inet_pton takes only the dotted quad: no "127.1", no hex. */
                if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
                        return -EINVAL;
                if (ret) {
                        if (ret_size < sizeof sa)
                                return -ENOBUFS;
                        memcpy(ret, &sa, sizeof sa);
                        *ret_len = sizeof sa;
                }
        }
        return 0;
}
