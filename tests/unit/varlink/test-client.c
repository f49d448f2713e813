/* Unit tests of the blocking client (lib/varlink/client.c) against a small
 * scripted Varlink server run in a child process on a temporary socket.
 *
 * The server answers by method name:
 *   a.b.Echo    reply with the call's parameters
 *   a.b.Fail    error a.b.Failed {"why": "because"}
 *   a.b.Stream  (more) three replies with continues, then a final one
 *   a.b.Silent  no reply at all (client timeouts)
 *   a.b.Close   closes the connection
 *   a.b.Garbage a reply that is not JSON
 *   a.b.Split   the reply written one byte at a time
 *   a.b.Unasked a reply with continues to a call without more
 *   a.b.Note    (oneway) remembered; a.b.Notes then answers their count
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sessiond/client.h"

static char dir[64];
static char path[128];
static pid_t server_pid;

/* The server runs in a forked child: it must never use ck_assert (without
 * CK_FORK a failing assertion would longjmp into the test runner inside the
 * child). It exits on anything unexpected; the client side then fails. */
static void server_check(bool ok) {
        if (!ok)
                _exit(3);
}

static void server_send(int fd, json_t *params, const char *error, bool continues) {
        char *buf;
        size_t len;

        if (error)
                server_check(varlink_encode_error(error, params, &buf, &len) == 0);
        else
                server_check(varlink_encode_reply(params, continues, &buf, &len) == 0);
        /* the client may be gone already (timeouts): ignore write errors */
        (void) !write(fd, buf, len);
        free(buf);
}

static void server_connection(int fd) {
        struct varlink_reader r;
        int notes = 0;

        server_check(varlink_reader_init(&r, 65536) == 0);
        for (;;) {
                const char *msg;
                size_t len, room;
                char *p;
                ssize_t n;
                int k;

                while ((k = varlink_reader_next(&r, &msg, &len)) > 0) {
                        struct varlink_call c;
                        const char *m;

                        server_check(varlink_call_parse(msg, len, &c) == 0);
                        m = c.method;
                        if (c.oneway) {
                                notes++;
                        } else if (strcmp(m, "a.b.Echo") == 0) {
                                server_send(fd, varlink_call_parameters(&c), NULL, false);
                        } else if (strcmp(m, "a.b.Fail") == 0) {
                                json_t *e = json_pack("{s:s}", "why", "because");
                                server_send(fd, e, "a.b.Failed", false);
                                json_decref(e);
                        } else if (strcmp(m, "a.b.Stream") == 0) {
                                for (int i = 0; i < 4; i++) {
                                        json_t *e = json_pack("{s:i}", "i", i);
                                        server_send(fd, e, NULL, c.more && i < 3);
                                        json_decref(e);
                                }
                        } else if (strcmp(m, "a.b.Notes") == 0) {
                                json_t *e = json_pack("{s:i}", "notes", notes);
                                server_send(fd, e, NULL, false);
                                json_decref(e);
                        } else if (strcmp(m, "a.b.Close") == 0) {
                                close(fd);
                                varlink_call_clear(&c);
                                varlink_reader_free(&r);
                                return;
                        } else if (strcmp(m, "a.b.Garbage") == 0) {
                                (void) !write(fd, "nope", 5);
                        } else if (strcmp(m, "a.b.Split") == 0) {
                                static const char reply[] = "{\"parameters\":{\"split\":true}}";
                                for (size_t i = 0; i < sizeof(reply); i++) {
                                        (void) !write(fd, reply + i, 1);
                                        usleep(100);
                                }
                        } else if (strcmp(m, "a.b.Unasked") == 0) {
                                server_send(fd, NULL, NULL, true);
                        }
                        /* a.b.Silent: nothing */
                        varlink_call_clear(&c);
                }
                server_check(k == 0);
                server_check(varlink_reader_space(&r, 4096, &p, &room) == 0);
                n = read(fd, p, room);
                if (n <= 0)
                        break;
                varlink_reader_commit(&r, (size_t) n);
        }
        close(fd);
        varlink_reader_free(&r);
}

static void server_start(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        strcpy(dir, "/tmp/test-client-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/sock", dir);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fd, 16), 0);

        server_pid = fork();
        if (server_pid == 0) {
                signal(SIGPIPE, SIG_IGN);
                /* never outlive the test, whatever happens to it */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                for (;;) {
                        int cfd = accept(fd, NULL, NULL);
                        server_check(cfd >= 0);
                        /* one connection at a time is enough for these tests */
                        server_connection(cfd);
                }
        }
        ck_assert_int_gt(server_pid, 0);
        close(fd);
}

static void server_stop(void) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        unlink(path);
        rmdir(dir);
}

START_TEST(test_call_reply_and_error) {
        struct sessiond_client *c = NULL;
        json_t *params = json_pack("{s:s}", "hello", "world"), *ret = NULL;
        const char *error = "unset";
        bool continues = true;

        ck_assert_int_eq(sessiond_client_connect(path, 2000, &c), 0);
        ck_assert_int_ge(sessiond_client_fd(c), 0);

        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", params, 0, &ret, &error, &continues), 0);
        ck_assert_ptr_null(error);
        ck_assert(!continues);
        ck_assert(json_equal(ret, params));
        json_decref(ret);

        ck_assert_int_eq(sessiond_client_call(c, "a.b.Fail", NULL, 0, &ret, &error, NULL), 0);
        ck_assert_str_eq(error, "a.b.Failed");
        ck_assert_str_eq(json_string_value(json_object_get(ret, "why")), "because");
        json_decref(ret);

        /* replies split into single bytes */
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Split", NULL, 0, &ret, &error, NULL), 0);
        ck_assert_ptr_null(error);
        ck_assert(json_is_true(json_object_get(ret, "split")));
        json_decref(ret);

        /* oneway: nothing read, but the server got them in order */
        for (int i = 0; i < 3; i++) {
                json_t *sentinel = json_object();

                ret = sentinel;
                ck_assert_int_eq(sessiond_client_call(c, "a.b.Note", NULL, SESSIOND_CALL_ONEWAY, &ret, &error, NULL),
                                 0);
                ck_assert_ptr_null(ret);
                json_decref(sentinel);
        }
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Notes", NULL, 0, &ret, &error, NULL), 0);
        ck_assert_int_eq(json_integer_value(json_object_get(ret, "notes")), 3);
        json_decref(ret);

        /* bad input from the caller */
        ck_assert_int_eq(sessiond_client_call(c, "nodots", NULL, 0, &ret, &error, NULL), -EINVAL);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", NULL, 1u << 7, &ret, &error, NULL), -EINVAL);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", NULL, SESSIOND_CALL_ONEWAY | SESSIOND_CALL_MORE, &ret,
                                              &error, NULL),
                         -EINVAL);

        sessiond_client_free(c);
        json_decref(params);
}
END_TEST

START_TEST(test_stream) {
        __attribute__((cleanup(sessiond_client_freep))) struct sessiond_client *c = NULL;
        json_t *ret;
        const char *error;
        bool continues;
        int i = 0;

        ck_assert_int_eq(sessiond_client_connect(path, 2000, &c), 0);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Stream", NULL, SESSIOND_CALL_MORE, &ret, &error, &continues), 0);
        ck_assert(continues);
        ck_assert_int_eq(json_integer_value(json_object_get(ret, "i")), 0);
        json_decref(ret);

        /* a new call while the stream is open is refused */
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", NULL, 0, &ret, &error, NULL), -EBUSY);

        while (continues) {
                ck_assert_int_eq(sessiond_client_next(c, 2000, &ret, &error, &continues), 0);
                ck_assert_ptr_null(error);
                ck_assert_int_eq(json_integer_value(json_object_get(ret, "i")), ++i);
                json_decref(ret);
        }
        ck_assert_int_eq(i, 3);
        ck_assert_int_eq(sessiond_client_next(c, 2000, &ret, &error, &continues), -ENOMSG);

        /* and the connection goes on */
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", NULL, 0, &ret, &error, NULL), 0);
        json_decref(ret);
}
END_TEST

START_TEST(test_timeout) {
        struct sessiond_client *c = NULL;
        json_t *ret;
        const char *error;

        ck_assert_int_eq(sessiond_client_connect(path, 100, &c), 0);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Silent", NULL, 0, &ret, &error, NULL), -ETIMEDOUT);
        /* the connection is out of step now: refused, not misread */
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", NULL, 0, &ret, &error, NULL), -ENOTCONN);
        sessiond_client_free(c);
}
END_TEST

START_TEST(test_transport_errors) {
        struct sessiond_client *c = NULL;
        json_t *ret;
        const char *error;

        ck_assert_int_eq(sessiond_client_connect(path, 2000, &c), 0);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Garbage", NULL, 0, &ret, &error, NULL), -EBADMSG);
        sessiond_client_free(c);

        ck_assert_int_eq(sessiond_client_connect(path, 2000, &c), 0);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Unasked", NULL, 0, &ret, &error, NULL), -EBADMSG);
        sessiond_client_free(c);

        ck_assert_int_eq(sessiond_client_connect(path, 2000, &c), 0);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Close", NULL, 0, &ret, &error, NULL), -ECONNRESET);
        sessiond_client_free(c);
}
END_TEST

START_TEST(test_socket_from_environment) {
        struct sessiond_client *c = NULL;
        json_t *ret;
        const char *error;

        ck_assert_int_eq(setenv("SESSIOND_SOCKET", path, 1), 0);
        ck_assert_int_eq(sessiond_client_connect(NULL, 0, &c), 0);
        ck_assert_int_eq(sessiond_client_call(c, "a.b.Echo", NULL, 0, &ret, &error, NULL), 0);
        json_decref(ret);
        sessiond_client_free(c);
        unsetenv("SESSIOND_SOCKET");
}
END_TEST

START_TEST(test_no_daemon) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct sessiond_client *c = NULL;
        char d[] = "/tmp/test-client-XXXXXX", p[128], longp[200];
        int fd;

        ck_assert_ptr_nonnull(mkdtemp(d));
        snprintf(p, sizeof(p), "%s/missing", d);
        ck_assert_int_eq(sessiond_client_connect(p, 500, &c), -ENOENT);

        /* a socket file that nobody listens on */
        snprintf(p, sizeof(p), "%s/stale", d);
        strcpy(sa.sun_path, p);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        ck_assert_int_eq(sessiond_client_connect(p, 500, &c), -ECONNREFUSED);
        unlink(p);
        rmdir(d);

        memset(longp, 'x', sizeof(longp) - 1);
        longp[sizeof(longp) - 1] = '\0';
        ck_assert_int_eq(sessiond_client_connect(longp, 500, &c), -ENAMETOOLONG);
        ck_assert_int_eq(sessiond_client_connect(p, -1, &c), -EINVAL);
        ck_assert_ptr_null(c);
}
END_TEST

static Suite *client_suite(void) {
        Suite *s = suite_create("varlink-client");
        TCase *tc = tcase_create("client");

        tcase_add_checked_fixture(tc, server_start, server_stop);
        tcase_add_test(tc, test_call_reply_and_error);
        tcase_add_test(tc, test_stream);
        tcase_add_test(tc, test_timeout);
        tcase_add_test(tc, test_transport_errors);
        tcase_add_test(tc, test_socket_from_environment);
        tcase_add_test(tc, test_no_daemon);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(client_suite());
        int failed;

        signal(SIGPIPE, SIG_IGN);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
