/* A call of the Varlink server (server-internal.h: the other files): the
 * accessors and replies of server.h, our own org.varlink.service, and the
 * dispatch of every call that arrives.
 *
 * A reply is encoded where it is made (or handed over already encoded by
 * the reply writer) and queued on its connection (server_conn.c), held
 * back when the call wrote. A call belongs to the server until its final
 * reply; a handler that answers later keeps it (with a cancel callback, it
 * hears when its connection goes first). The dispatch checks the method's
 * interface and the peer's admin rights (decided at accept, see server.c)
 * before the method handlers see the call; a reply the server cannot build
 * (out of memory) ends the call with its connection, since a peer cannot
 * make sense of a missing reply.
 */
#include "server-internal.h"

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "daemon.h"
#include "interface.h"
#include "log.h"
#include "methods.h"

/* ---- calls ------------------------------------------------------------------------------- */

void call_free(struct call *c) {
        if (!c)
                return;
        varlink_call_clear(&c->vc);
        free(c);
}

const char *call_method(const struct call *c) {
        assert(c);
        return c->vc.method;
}

json_t *call_parameters(struct call *c) {
        assert(c);
        return varlink_call_parameters(&c->vc);
}

int call_param(struct call *c, const char *object, const char *key, struct varlink_value *ret) {
        assert(c);
        return varlink_call_param(&c->vc, object, key, ret);
}

bool call_wants_more(const struct call *c) {
        assert(c);
        return c->vc.more;
}

bool call_is_oneway(const struct call *c) {
        assert(c);
        return c->vc.oneway;
}

bool call_peer_is_admin(const struct call *c) {
        assert(c);
        return c->admin;
}

uid_t call_peer_uid(const struct call *c) {
        assert(c);
        return c->cred.uid;
}

pid_t call_peer_pid(const struct call *c) {
        assert(c);
        return c->cred.pid;
}

struct daemon *call_daemon(const struct call *c) {
        assert(c);
        return c->server->d;
}

void call_mark_write(struct call *c) {
        assert(c);
        c->write = true;
}

void call_set_cancel(struct call *c, call_cancel_fn cb, void *userdata) {
        assert(c);
        c->cancel = cb;
        c->userdata = userdata;
        c->answers_soon = false;
}

void call_set_detach(struct call *c, call_cancel_fn cb, void *userdata) {
        call_set_cancel(c, cb, userdata);
        c->answers_soon = cb != NULL;
}

/* One message for a call's peer: JSON parameters still to be encoded (a
 * reply, or an error when `error` is set), or a message a handler already
 * encoded (data, e.g. by the reply writer). Owns params and data. */
struct outgoing {
        const char *error;
        json_t *params;
        char *data; /* with its NUL; NULL: encode params */
        size_t len;
        bool continues;
};

static void outgoing_clear(struct outgoing *m) {
        json_decref(m->params);
        free(m->data);
        *m = (struct outgoing){};
}

/* Encodes (unless it already is) and queues one message of `call` on its
 * connection; the message's buffer moves to the connection. On failure the
 * caller detaches the call and closes the connection: a peer cannot make
 * sense of a missing reply. */
static int conn_send(struct conn *c, struct call *call, struct outgoing *m) {
        int r = 0;

        if (!m->data) {
                if (m->error)
                        r = varlink_encode_error(m->error, m->params, &m->data, &m->len);
                else
                        r = varlink_encode_reply(m->params, m->continues, &m->data, &m->len);
        }
        if (r >= 0) {
                r = conn_queue(c, m->data, m->len, call->write); /* takes data, even on failure */
                m->data = NULL;
        }
        if (r < 0)
                log_error_errno(r, "Failed to send the reply to %s: %m", call->vc.method);
        return r;
}

/* Final reply or error: the call ends here. Takes the message. */
static int call_finish(struct call *c, struct outgoing *m) {
        struct conn *conn;

        assert(c);
        assert(!m->continues);
        if (c->cancelled) {
                /* A handler answering from its cancel callback: the server
                 * frees the call when the callback returns. */
                outgoing_clear(m);
                return -ENOTCONN;
        }
        if (c->started_ns && c->server->timing && !c->vc.more)
                c->server->timing(c->vc.method, uv_hrtime() - c->started_ns, c->server->timing_userdata);
        conn = c->conn;
        if (conn) {
                assert(conn->current == c);
                conn->current = NULL;
                c->conn = NULL;
                if (!c->vc.oneway && !conn->closed && conn_send(conn, c, m) < 0)
                        conn_close(conn, "reply could not be sent");
                if (!conn->closed) {
                        /* Handled inside conn_process(): its loop goes on.
                         * Answered later (a stream ending, a timer): the
                         * next message waits for the flush. */
                        if (!conn->processing)
                                conn_mark_ready(conn);
                }
        }
        outgoing_clear(m);
        call_free(c);
        return 0;
}

int call_reply(struct call *c, json_t *params) {
        return call_finish(c, &(struct outgoing){.params = params});
}

int call_reply_encoded(struct call *c, char *data, size_t len) {
        assert(data);
        assert(len > 0 && data[len - 1] == '\0');
        return call_finish(c, &(struct outgoing){.data = data, .len = len});
}

int call_error(struct call *c, const char *error, json_t *params) {
        assert(error);
        return call_finish(c, &(struct outgoing){.error = error, .params = params});
}

int call_error_invalid_parameter(struct call *c, const char *name) {
        assert(name);
        return call_error(c, VARLINK_ERROR_INVALID_PARAMETER, json_pack("{s:s}", "parameter", name));
}

int call_reply_continues(struct call *c, json_t *params) {
        struct outgoing m = {.params = params, .continues = true};
        struct conn *conn;
        int r;

        assert(c);
        assert(c->vc.more);
        if (c->cancelled) {
                outgoing_clear(&m);
                return -ENOTCONN;
        }
        conn = c->conn;
        if (!conn || conn->closed) {
                /* Detached: the peer is gone and nobody else holds the call. */
                outgoing_clear(&m);
                if (conn)
                        conn->current = NULL;
                call_free(c);
                return -ENOTCONN;
        }
        if (conn_output_bytes(conn) > conn->server->output_cap ||
            (conn->server->output_total >= conn->server->output_budget &&
             conn_output_bytes(conn) >= SERVER_OUTPUT_KEEP)) {
                log_warning("Peer pid %d uid %u does not read the replies of %s (%zu bytes waiting); "
                            "closing the connection",
                            (int) conn->peer.ucred.pid, (unsigned) conn->peer.ucred.uid, c->vc.method,
                            conn_output_bytes(conn));
                r = -ENOBUFS;
        } else
                r = conn_send(conn, c, &m);
        outgoing_clear(&m);
        if (r < 0) {
                /* The stream ends here: the call is freed without its cancel
                 * callback, the return value tells the handler. */
                conn->current = NULL;
                c->conn = NULL;
                call_free(c);
                conn_close(conn, r == -ENOBUFS ? "peer does not read its stream" : "reply could not be sent");
                return r;
        }
        return 0;
}

/* ---- org.varlink.service ----------------------------------------------------------------- */

/* Out of memory building a reply of our own: a reply cannot be skipped, so
 * the call ends with its connection. */
static void call_fail_oom(struct call *c) {
        struct conn *conn = c->conn;

        log_error("Out of memory answering %s", c->vc.method);
        assert(conn && conn->current == c);
        conn->current = NULL;
        call_free(c);
        conn_close(conn, "out of memory");
}

/* Replies with params, where NULL means that building them failed. */
static void service_reply(struct call *c, const char *error, json_t *params) {
        if (!params)
                call_fail_oom(c);
        else
                (void) call_finish(c, &(struct outgoing){.error = error, .params = params});
}

static void service_get_info(struct call *c) {
        json_t *interfaces = json_array();

        for (const struct interface_text *t = interface_texts; t->name && interfaces; t++)
                if (json_array_append_new(interfaces, json_stringn(t->name, t->name_len)) < 0) {
                        json_decref(interfaces);
                        interfaces = NULL;
                }
        service_reply(c, NULL,
                      interfaces ? json_pack("{s:s, s:s, s:s, s:s, s:o}", "vendor", "sessiond", "product", "sessiond",
                                             "version", SESSIOND_VERSION, "url", SERVER_GETINFO_URL, "interfaces",
                                             interfaces)
                                 : NULL);
}

static void service_get_interface_description(struct call *c) {
        const struct interface_text *t;
        struct varlink_value v;
        const char *name;

        if (call_param(c, NULL, "interface", &v) < 0 || v.type != VARLINK_VALUE_STRING) {
                service_reply(c, VARLINK_ERROR_INVALID_PARAMETER, json_pack("{s:s}", "parameter", "interface"));
                return;
        }
        name = v.string;
        t = interface_find(name, strlen(name));
        if (!t)
                service_reply(c, VARLINK_ERROR_INTERFACE_NOT_FOUND, json_pack("{s:s}", "interface", name));
        else
                service_reply(c, NULL, json_pack("{s:s%}", "description", t->text, t->text_len));
}

static void service_dispatch(struct call *c, const char *member) {
        if (strcmp(member, "GetInfo") == 0)
                service_get_info(c);
        else if (strcmp(member, "GetInterfaceDescription") == 0)
                service_get_interface_description(c);
        else
                service_reply(c, VARLINK_ERROR_METHOD_NOT_FOUND, json_pack("{s:s}", "method", c->vc.method));
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* Routes one parsed call: our own interface, the access check, then the
 * method handlers. */
void call_dispatch(struct call *c) {
        const char *method = c->vc.method;
        const char *dot = strrchr(method, '.');
        const struct interface_text *iface;
        size_t iface_len;

        assert(dot); /* varlink_call_parse() checked "iface.Method" */
        iface_len = (size_t) (dot - method);

        log_debug("Connection %llu (pid %d uid %u): %s%s%s", c->conn->id, (int) c->cred.pid, (unsigned) c->cred.uid,
                  method, c->vc.more ? " (more)" : "", c->vc.oneway ? " (oneway)" : "");

        if (c->vc.upgrade) {
                /* No method of ours hands the connection over to another protocol. */
                service_reply(c, VARLINK_ERROR_METHOD_NOT_IMPLEMENTED, json_pack("{s:s}", "method", method));
                return;
        }
        iface = interface_find(method, iface_len);
        if (!iface) {
                service_reply(c, VARLINK_ERROR_INTERFACE_NOT_FOUND,
                              json_pack("{s:s%}", "interface", method, iface_len));
                return;
        }
        if (strcmp(iface->name, INTERFACE_SERVICE) == 0) {
                service_dispatch(c, dot + 1);
                return;
        }
        if (interface_is_admin(method, iface_len) && !c->admin) {
                log_debug("Connection %llu (pid %d uid %u): %s refused, not an administrator", c->conn->id,
                          (int) c->cred.pid, (unsigned) c->cred.uid, method);
                service_reply(c, VARLINK_ERROR_PERMISSION_DENIED, json_object());
                return;
        }
        methods_dispatch(c->server->d, c);
}

bool call_method_is_admin(const struct call *c) {
        const char *dot = strrchr(c->vc.method, '.');

        return dot && interface_is_admin(c->vc.method, (size_t) (dot - c->vc.method));
}
