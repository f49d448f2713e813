/* Logging: see log.h. Kept tiny on purpose: stderr is the only sink, because
 * under systemd stderr is the journal and elsewhere it is the terminal. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sessiond/config.h"

static bool log_to_journal;
static bool log_debug_on;

void log_setup(void) {
        const char *js = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;

        log_to_journal = false;
        if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0)
                log_to_journal = (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
        setvbuf(stderr, NULL, _IOLBF, 0);
}

void log_set_debug(bool on) {
        log_debug_on = on;
}
bool log_debug_enabled(void) {
        return log_debug_on;
}

static const char *level_word(int priority) {
        switch (priority) {
        case LOG_DEBUG:
                return "debug";
        case LOG_INFO:
                return "info";
        case LOG_NOTICE:
                return "notice";
        case LOG_WARNING:
                return "warning";
        default:
                return "error";
        }
}

int log_internal(int priority, int error, const char *fmt, ...) {
        char line[2048], escaped[4096];
        int saved_errno = errno;
        va_list ap;

        /* %m prints the error passed in, not whatever errno happens to be. */
        errno = error < 0 ? -error : error;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);

        /* A message is one line of text: embedded newlines would split it
         * into several journal entries (and let a value forge the next
         * one), an ESC would reach the terminal of whoever reads the log.
         * Values in messages come from outside, so control characters and
         * bytes that are not UTF-8 are escaped (\xNN), as everywhere. */
        sessiond_text_escape(escaped, sizeof escaped, line);

        if (log_to_journal)
                fprintf(stderr, "<%d>%s\n", priority, escaped);
        else
                fprintf(stderr, "sessiond[%s]: %s\n", level_word(priority), escaped);
        errno = saved_errno;
        return error < 0 ? error : -error;
}
