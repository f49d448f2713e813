/* Connection strings (lib/config/conninfo.c): sessiond_conninfo_redact()
 * in both of libpq's forms, with quoting and escapes, without a password,
 * and on text libpq cannot read; conninfo_check() and its masked reasons;
 * and every way a configuration shows daemon.postgres_url (value_to_string,
 * the JSON, load errors) without its password. */
#include "helpers.h"
#include "config/internal.h" /* conninfo_check(), setting_is_conninfo() */

#define SECRET "s3cr3t"

static char *redact(const char *in) {
        char *out = NULL;

        ck_assert_int_eq(sessiond_conninfo_redact(in, &out), 0);
        ck_assert_ptr_nonnull(out);
        return out;
}

#define assert_redacted(in, expected)                                                                             \
        do {                                                                                                      \
                char *_r = redact(in);                                                                            \
                ck_assert_msg(strcmp(_r, (expected)) == 0, "redact(%s) = %s, expected %s", (in), _r, (expected)); \
                free(_r);                                                                                         \
        } while (0)

START_TEST(test_uri) {
        assert_redacted("postgresql://app:" SECRET "@/sessions?host=/run/pg",
                        "postgresql://app:***@/sessions?host=/run/pg");
        assert_redacted("postgres://app:" SECRET "@db.example:5432/sessions",
                        "postgres://app:***@db.example:5432/sessions");
        /* a password without a user, several hosts */
        assert_redacted("postgresql://:" SECRET "@h1:5432,h2:5433/db", "postgresql://:***@h1:5432,h2:5433/db");
        /* percent-encoded: hidden as written */
        assert_redacted("postgresql://app:p%40ss%2Fw@h/db", "postgresql://app:***@h/db");
        /* parameters: password and sslpassword, a percent-encoded key too */
        assert_redacted("postgresql://app@h/db?password=" SECRET "&sslmode=require",
                        "postgresql://app@h/db?password=***&sslmode=require");
        assert_redacted("postgresql:///db?host=/run/pg&sslpassword=" SECRET,
                        "postgresql:///db?host=/run/pg&sslpassword=***");
        assert_redacted("postgresql://h/db?pass%77ord=" SECRET, "postgresql://h/db?pass%77ord=***");
        /* both at once */
        assert_redacted("postgresql://app:" SECRET "@h/db?password=" SECRET, "postgresql://app:***@h/db?password=***");
}
END_TEST

START_TEST(test_uri_without_password) {
        assert_redacted("postgresql://app@/sessions?host=/run/pg", "postgresql://app@/sessions?host=/run/pg");
        assert_redacted("postgresql:///sessions?host=/run/postgresql", "postgresql:///sessions?host=/run/postgresql");
        assert_redacted("postgresql://", "postgresql://");
        assert_redacted("postgresql://db.example:5432/sessions?application_name=sessiond&sslmode=verify-full",
                        "postgresql://db.example:5432/sessions?application_name=sessiond&sslmode=verify-full");
        /* an empty password is nothing to hide */
        assert_redacted("postgresql://app:@h/db?password=", "postgresql://app:@h/db?password=");
}
END_TEST

/* Unencoded '@', '/', '?' or '&' in a password: libpq reads such a URI
 * differently (or not at all); the password is hidden whole anyway. */
START_TEST(test_uri_mistyped) {
        assert_redacted("postgresql://app:p@ss@h/db", "postgresql://app:***@h/db");
        assert_redacted("postgresql://app:ab/cd+ef==@h/db", "postgresql://app:***@h/db");
        assert_redacted("postgresql://app:se?cret@h/db", "postgresql://app:***@h/db");
        assert_redacted("postgresql://app:a b@h/db", "postgresql://app:***@h/db");
        assert_redacted("postgresql://h/db?password=a&b&sslmode=disable",
                        "postgresql://h/db?password=***&sslmode=disable");
        assert_redacted("postgresql://h/db?password=a&b", "postgresql://h/db?password=***");
        assert_redacted("postgresql://app:se%zzcret@h", "postgresql://app:***@h");
        /* '@' in a parameter: no user info for libpq, a password all the same */
        assert_redacted("postgresql://h/db?password=+@/x@y&sslmode=disable",
                        "postgresql://h/db?password=***&sslmode=disable");
        /* read both ways, hidden both ways */
        assert_redacted("postgresql://h:5432/db?password=a@b", "postgresql://h:***");
        assert_redacted("postgresql://app:se?cret@h/db?password=x&a=b", "postgresql://app:***@h/db?password=***&a=b");
}
END_TEST

START_TEST(test_keywords) {
        assert_redacted("host=/x password=" SECRET " dbname=y", "host=/x password=*** dbname=y");
        /* quoted, with escaped quotes and backslashes, spaces around = */
        assert_redacted("host=/x password='a b\\' c\\\\' dbname=y", "host=/x password='***' dbname=y");
        assert_redacted("host=/x password = 'a b'  dbname=y", "host=/x password = '***'  dbname=y");
        /* a quoted value ends at its quote, spaces or not */
        assert_redacted("sslpassword='a'gw=W'", "sslpassword='***'gw=W'");
        /* an unquoted value with an escaped space */
        assert_redacted("password=a\\ b host=x", "password=*** host=x");
        assert_redacted("sslpassword=" SECRET " sslkey=/k", "sslpassword=*** sslkey=/k");
        /* any case, at the start, at the end, twice */
        assert_redacted("PASSWORD=" SECRET, "PASSWORD=***");
        assert_redacted("password=a host=x password=b", "password=*** host=x password=***");
        /* other values stay, quoted or not */
        assert_redacted("host='/run/pg' application_name='my app' passfile=/p",
                        "host='/run/pg' application_name='my app' passfile=/p");
}
END_TEST

START_TEST(test_keywords_without_password) {
        assert_redacted("", "");
        assert_redacted("host=/run/postgresql dbname=sessions user=app",
                        "host=/run/postgresql dbname=sessions user=app");
        assert_redacted("  host=x\tdbname=y  ", "  host=x\tdbname=y  ");
        assert_redacted("password='' host=x", "password='' host=x");
        assert_redacted("password= ", "password= ");
}
END_TEST

/* Text libpq stops reading: hidden from where it breaks off. */
START_TEST(test_keywords_broken) {
        assert_redacted("host=x " SECRET, "host=x ***");
        assert_redacted("host=x password " SECRET, "host=x ***");
        assert_redacted("host=x password='" SECRET, "host=x password='***");
        assert_redacted("host=x password='a\\'", "host=x password='***");
        /* not a URI for libpq (case matters): keyword/value, broken at once */
        assert_redacted("POSTGRESQL://app:" SECRET "@h/db", "***");
}
END_TEST

START_TEST(test_redact_arguments) {
        char *out = NULL;

        ck_assert_int_eq(sessiond_conninfo_redact(NULL, &out), -EINVAL);
        ck_assert_int_eq(sessiond_conninfo_redact("host=x", NULL), -EINVAL);
}
END_TEST

static int check(const char *conninfo, char **reason) {
        *reason = NULL;
        return conninfo_check(conninfo, reason);
}

START_TEST(test_check) {
        char *reason;

        ck_assert_int_eq(check("postgresql://app:" SECRET "@/sessions?host=/run/pg", &reason), 0);
        ck_assert_ptr_null(reason);
        ck_assert_int_eq(check("host=/x password=" SECRET " dbname=y", &reason), 0);
        ck_assert_int_eq(check("", &reason), 0);

        /* libpq's reason, with the pieces of the value it quotes hidden */
        ck_assert_int_eq(check("host=x my" SECRET, &reason), -EINVAL);
        ck_assert_str_eq(reason, "missing \"=\" after \"***\" in connection info string");
        free(reason);
        ck_assert_int_eq(check("postgresql://app:se%zz" SECRET "@h", &reason), -EINVAL);
        ck_assert_str_eq(reason, "invalid percent-encoded token: \"***\"");
        free(reason);
        ck_assert_int_eq(check("postgresql://app:" SECRET "@[::1", &reason), -EINVAL);
        ck_assert_str_eq(reason,
                         "end of string reached when looking for matching \"]\" in IPv6 host address in URI: \"***\"");
        free(reason);
        ck_assert_int_eq(check("host=x password='" SECRET, &reason), -EINVAL);
        ck_assert_str_eq(reason, "unterminated quoted string in connection info string");
        free(reason);
        ck_assert_int_eq(check("passwd=" SECRET, &reason), -EINVAL);
        ck_assert_ptr_null(strstr(reason, SECRET));
        free(reason);
        ck_assert_int_eq(conninfo_check("nonsense", NULL), -EINVAL);
}
END_TEST

/* What a configuration shows of daemon.postgres_url. */
START_TEST(test_config_shows_redacted) {
        char *env[] = {"SESSIOND_POSTGRES_URL=postgresql://app:" SECRET "@/sessions?host=/run/pg", NULL};
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};
        int idx = sessiond_setting_find("daemon.postgres_url");
        char *text, *dump;
        json_t *j;

        ck_assert_int_ge(idx, 0);
        ck_assert(setting_is_conninfo(&sessiond_settings[idx]));
        ck_assert_int_eq(sessiond_setting_find_variable("SESSIOND_POSTGRES_URL"), idx);
        ck_assert_int_eq(load_env(env, &c, &is), 0);
        /* the daemon gets the real value */
        ck_assert_str_eq(c->daemon.postgres_url, "postgresql://app:" SECRET "@/sessions?host=/run/pg");

        text = sessiond_config_value_to_string(c, (size_t) idx);
        ck_assert_str_eq(text, "postgresql://app:***@/sessions?host=/run/pg");
        free(text);
        for (int origins = 0; origins < 2; origins++) {
                j = sessiond_config_to_json(c, origins);
                ck_assert_ptr_nonnull(j);
                dump = json_dumps(j, 0);
                ck_assert_ptr_null(strstr(dump, SECRET));
                ck_assert_ptr_nonnull(strstr(dump, "postgresql://app:***@/sessions?host=/run/pg"));
                free(dump);
                json_decref(j);
        }
        /* and the validation's messages (the URL is ignored here: a warning) */
        ck_assert_int_eq(sessiond_config_validate(c, &is), 0);
        assert_issue(&is, SESSIOND_WARNING,
                     "daemon.postgres_url=postgresql://app:***@/sessions?host=/run/pg from environment");
        for (size_t i = 0; i < is.count; i++)
                ck_assert_ptr_null(strstr(is.items[i].message, SECRET));
        sessiond_issues_clear(&is);
        sessiond_config_free(c);
}
END_TEST

/* A value the loader refuses (not UTF-8) is quoted redacted. */
START_TEST(test_load_errors_redacted) {
        char *env[] = {"SESSIOND_POSTGRES_URL=host=x password=" SECRET " dbname=\xff", NULL};
        struct sessiond_config *c = NULL;
        struct sessiond_issues is = {};

        ck_assert_int_eq(load_env(env, &c, &is), -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "SESSIOND_POSTGRES_URL: value 'host=x password=*** dbname=");
        for (size_t i = 0; i < is.count; i++)
                ck_assert_ptr_null(strstr(is.items[i].message, SECRET));
        sessiond_issues_clear(&is);

        ck_assert_int_eq(
                load_conf_text("daemon: { postgres_url = \"postgresql://app:" SECRET "@h/\xff\"; };\n", &c, &is),
                -EINVAL);
        assert_issue(&is, SESSIOND_ERROR, "daemon.postgres_url: value \"postgresql://app:***@h/");
        for (size_t i = 0; i < is.count; i++)
                ck_assert_ptr_null(strstr(is.items[i].message, SECRET));
        sessiond_issues_clear(&is);
        scratch_remove();
}
END_TEST

static Suite *conninfo_suite(void) {
        Suite *s = suite_create("config-conninfo");
        TCase *tc = tcase_create("redact");
        tcase_add_test(tc, test_uri);
        tcase_add_test(tc, test_uri_without_password);
        tcase_add_test(tc, test_uri_mistyped);
        tcase_add_test(tc, test_keywords);
        tcase_add_test(tc, test_keywords_without_password);
        tcase_add_test(tc, test_keywords_broken);
        tcase_add_test(tc, test_redact_arguments);
        suite_add_tcase(s, tc);

        tc = tcase_create("check");
        tcase_add_test(tc, test_check);
        tcase_add_test(tc, test_config_shows_redacted);
        tcase_add_test(tc, test_load_errors_redacted);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(conninfo_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
