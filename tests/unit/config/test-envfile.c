/* Env files: byte-exact round trip, editing in place, atomic writes that
 * never truncate, read-only and missing files. */
#include <dirent.h>

#include "helpers.h"

static struct sessiond_envfile *parse(const char *text) {
        struct sessiond_envfile *f = NULL;
        struct sessiond_issues is = {};
        ck_assert_int_eq(sessiond_envfile_parse("t.env", text, strlen(text), &f, &is), 0);
        assert_no_issues(&is);
        return f;
}

static char *format(const struct sessiond_envfile *f) {
        size_t len;
        char *s = sessiond_envfile_format(f, &len);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_eq(len, strlen(s));
        return s;
}

/* Files in the scratch folder, to prove no temporary file is left. */
static size_t count_files(void) {
        DIR *d = opendir(scratch());
        struct dirent *e;
        size_t n = 0;
        ck_assert_ptr_nonnull(d);
        while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        n++;
        closedir(d);
        return n;
}

static const char sample[] = "# sessiond settings\n"
                             "\n"
                             "   # indented\n"
                             "FOREIGN_KEY=keep me\n"
                             "export SESSION_ENVIRONMENT=staging # note\n"
                             "SESSION_CLEANUP_BATCH_SIZE=10\n"
                             "SESSION_CLEANUP_BATCH_SIZE = 20\r\n"
                             "SESSION_LOCALSTORAGE_PREFIX='a b'\n"
                             "last_line=no newline";

START_TEST(test_round_trip_exact) {
        struct sessiond_envfile *f = parse(sample);
        char *out = format(f);

        ck_assert_str_eq(out, sample);
        ck_assert_uint_eq(f->n_lines, 9);
        ck_assert(f->missing_final_newline);
        ck_assert_ptr_null(f->lines[0].key);
        ck_assert_ptr_null(f->lines[1].key);
        ck_assert_str_eq(f->lines[4].key, "SESSION_ENVIRONMENT");
        ck_assert_str_eq(f->lines[4].value, "staging");
        ck_assert_int_eq(f->lines[4].lineno, 5);
        /* get: the last occurrence wins, as in loading */
        size_t line;
        ck_assert_str_eq(sessiond_envfile_get(f, "SESSION_CLEANUP_BATCH_SIZE", &line), "20");
        ck_assert_uint_eq(line, 6);
        ck_assert_str_eq(sessiond_envfile_get(f, "SESSION_LOCALSTORAGE_PREFIX", NULL), "a b");
        ck_assert_ptr_null(sessiond_envfile_get(f, "NOPE", NULL));
        free(out);
        sessiond_envfile_free(f);

        /* An empty file and a file of one newline. */
        f = parse("");
        out = format(f);
        ck_assert_str_eq(out, "");
        free(out);
        sessiond_envfile_free(f);
        f = parse("\n");
        out = format(f);
        ck_assert_str_eq(out, "\n");
        free(out);
        sessiond_envfile_free(f);
}
END_TEST

START_TEST(test_set_in_place) {
        struct sessiond_envfile *f = parse(sample);
        char *out;

        /* Replaces the last occurrence, keeps `export`, touches nothing else. */
        ck_assert_int_eq(sessiond_envfile_set(f, "SESSION_ENVIRONMENT", "production"), 1);
        ck_assert_int_eq(sessiond_envfile_set(f, "SESSION_CLEANUP_BATCH_SIZE", "200"), 1);
        ck_assert_int_eq(sessiond_envfile_set(f, "SESSION_LOCALSTORAGE_PREFIX", "a b"), 0); /* already so */
        out = format(f);
        ck_assert_str_eq(out, "# sessiond settings\n"
                              "\n"
                              "   # indented\n"
                              "FOREIGN_KEY=keep me\n"
                              "export SESSION_ENVIRONMENT=production\n"
                              "SESSION_CLEANUP_BATCH_SIZE=10\n"
                              "SESSION_CLEANUP_BATCH_SIZE=200\n"
                              "SESSION_LOCALSTORAGE_PREFIX='a b'\n"
                              "last_line=no newline");
        free(out);

        /* Appending after a last line without newline separates them. */
        ck_assert_int_eq(sessiond_envfile_set(f, "SESSION_DEBUG_MODE", "true"), 1);
        out = format(f);
        ck_assert_ptr_nonnull(strstr(out, "last_line=no newline\nSESSION_DEBUG_MODE=true\n"));
        free(out);

        ck_assert_int_eq(sessiond_envfile_set(f, "1BAD", "x"), -EINVAL);
        ck_assert_int_eq(sessiond_envfile_set(f, "BAD-KEY", "x"), -EINVAL);
        ck_assert_int_eq(sessiond_envfile_set(f, "GOOD", "two\nlines"), -EINVAL);
        sessiond_envfile_free(f);
}
END_TEST

START_TEST(test_quoting_round_trip) {
        static const char *values[] = {
                "plain",       "with space",  "quote\"inside", "it's", "$HOME",
                "back\\slash", "hash # here", "`cmd`",         "",     "/run/sessiond/sessiond.sock",
                "a=b",         "tab\there",
        };
        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
                struct sessiond_envfile *f = parse("# x\n"), *g;
                struct sessiond_issues is = {};
                char *out;
                ck_assert_int_eq(sessiond_envfile_set(f, "KEY", values[i]), 1);
                out = format(f);
                ck_assert_int_eq(sessiond_envfile_parse("t.env", out, strlen(out), &g, &is), 0);
                ck_assert_msg(strcmp(sessiond_envfile_get(g, "KEY", NULL), values[i]) == 0,
                              "'%s' came back as '%s' from %s", values[i], sessiond_envfile_get(g, "KEY", NULL), out);
                free(out);
                sessiond_envfile_free(f);
                sessiond_envfile_free(g);
        }
        char *q = sessiond_envfile_quote("/safe/path-1.2_x:y@z");
        ck_assert_str_eq(q, "/safe/path-1.2_x:y@z");
        free(q);
        q = sessiond_envfile_quote("a \"b\"");
        ck_assert_str_eq(q, "\"a \\\"b\\\"\"");
        free(q);
}
END_TEST

START_TEST(test_malformed) {
        struct sessiond_envfile *f = NULL;
        struct sessiond_issues is = {};
        const char text[] = "OK=1\nno equals sign\nKEY=\"open\n";

        ck_assert_int_eq(sessiond_envfile_parse("/x/t.env", text, strlen(text), &f, &is), -EINVAL);
        ck_assert_ptr_null(f);
        assert_issue(&is, SESSIOND_ERROR, "/x/t.env:2: malformed line (expected KEY=VALUE): no equals sign");
        assert_issue(&is, SESSIOND_ERROR, "/x/t.env:3: malformed line (unterminated quoted value): KEY=\"open");
        ck_assert_uint_eq(is.count, 2);
        sessiond_issues_clear(&is);

        ck_assert_int_eq(sessiond_envfile_parse("/x/t.env", "A=1\0B=2\n", 8, &f, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "/x/t.env: contains a NUL byte");
        sessiond_issues_clear(&is);
}
END_TEST

START_TEST(test_read_errors) {
        struct sessiond_envfile *f = NULL;
        struct sessiond_issues is = {};

        ck_assert_int_eq(sessiond_envfile_read(path_in("missing.env"), &f, &is), -ENOENT);
        ck_assert_uint_eq(is.count, 0);
        ck_assert_int_eq(sessiond_envfile_read(scratch(), &f, &is), -EISDIR);
        write_text(path_in("ok.env"), sample);
        ck_assert_int_eq(sessiond_envfile_read(path_in("ok.env"), &f, &is), 0);
        ck_assert_str_eq(f->path, path_in("ok.env"));
        sessiond_envfile_free(f);
        scratch_remove();
}
END_TEST

START_TEST(test_write_atomic_keeps_mode) {
        const char *p = path_in("m.env");
        struct sessiond_envfile *f = NULL;
        struct sessiond_issues is = {};
        struct stat st;
        char *back;

        write_text(p, sample);
        ck_assert_int_eq(chmod(p, 0640), 0);
        ck_assert_int_eq(sessiond_envfile_read(p, &f, &is), 0);
        ck_assert_int_eq(sessiond_envfile_set(f, "SESSION_ENVIRONMENT", "testing"), 1);
        ck_assert_int_eq(sessiond_envfile_write(f, p), 0);
        ck_assert_int_eq(stat(p, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0640);
        back = read_text(p);
        ck_assert_ptr_nonnull(strstr(back, "export SESSION_ENVIRONMENT=testing\n"));
        ck_assert_ptr_nonnull(strstr(back, "FOREIGN_KEY=keep me\n"));
        free(back);
        ck_assert_uint_eq(count_files(), 1); /* no temporary file left */

        /* A new file gets the mode asked for. */
        ck_assert_int_eq(sessiond_file_write_atomic(path_in("new.env"), "A=1\n", 4, 0600), 0);
        ck_assert_int_eq(stat(path_in("new.env"), &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0600);
        sessiond_envfile_free(f);
        scratch_remove();
}
END_TEST

START_TEST(test_write_follows_symlink) {
        const char *target = path_in("real.env"), *link = path_in("link.env");
        struct stat st;
        char *back;

        write_text(target, "A=1\n");
        ck_assert_int_eq(symlink(target, link), 0);
        ck_assert_int_eq(sessiond_file_write_atomic(link, "A=2\n", 4, 0644), 0);
        ck_assert_int_eq(lstat(link, &st), 0);
        ck_assert(S_ISLNK(st.st_mode));
        back = read_text(target);
        ck_assert_str_eq(back, "A=2\n");
        free(back);
        scratch_remove();
}
END_TEST

START_TEST(test_write_refused_untouched) {
        const char *p = path_in("ro.env");
        struct stat before, after;
        char *back;

        /* Read-only: refused even for root, file byte-identical, same inode. */
        write_text(p, sample);
        ck_assert_int_eq(chmod(p, 0444), 0);
        ck_assert_int_eq(stat(p, &before), 0);
        ck_assert_int_eq(sessiond_file_write_atomic(p, "X=1\n", 4, 0644), -EACCES);
        ck_assert_int_eq(stat(p, &after), 0);
        ck_assert_uint_eq(before.st_ino, after.st_ino);
        back = read_text(p);
        ck_assert_str_eq(back, sample);
        free(back);
        ck_assert_uint_eq(count_files(), 1);

        /* A missing folder, a folder, an empty path. */
        ck_assert_int_eq(sessiond_file_write_atomic(path_in("no/such/dir.env"), "X=1\n", 4, 0644), -ENOENT);
        ck_assert_int_eq(sessiond_file_write_atomic(scratch(), "X=1\n", 4, 0644), -EISDIR);
        ck_assert_int_eq(sessiond_file_write_atomic("", "X=1\n", 4, 0644), -EINVAL);
        ck_assert_uint_eq(count_files(), 1);
        chmod(p, 0644);
        scratch_remove();
}
END_TEST

static Suite *envfile_suite(void) {
        Suite *s = suite_create("config-envfile");
        TCase *tc = tcase_create("envfile");
        tcase_add_test(tc, test_round_trip_exact);
        tcase_add_test(tc, test_set_in_place);
        tcase_add_test(tc, test_quoting_round_trip);
        tcase_add_test(tc, test_malformed);
        tcase_add_test(tc, test_read_errors);
        tcase_add_test(tc, test_write_atomic_keeps_mode);
        tcase_add_test(tc, test_write_follows_symlink);
        tcase_add_test(tc, test_write_refused_untouched);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(envfile_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
