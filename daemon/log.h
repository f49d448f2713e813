/* Logging for the daemon (the library never logs).
 *
 * One line per event on stderr. When stderr is the journal (JOURNAL_STREAM
 * matches our stderr's device and inode) every line starts with the syslog
 * priority "<N>", which journald turns into the entry's priority; otherwise
 * lines carry a short level word. Debug lines appear only with debug_mode.
 *
 * log_error_errno() logs and returns the (negative) error in one expression,
 * in the style of systemd: `return log_error_errno(r, "Failed to open %s: %m", p);`
 * where %m prints strerror of that error.
 */
#pragma once

#include <stdbool.h>
#include <syslog.h>

void log_setup(void);
void log_set_debug(bool on);
bool log_debug_enabled(void);

int log_internal(int priority, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(...) (log_debug_enabled() ? log_internal(LOG_DEBUG, 0, __VA_ARGS__) : 0)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_error_errno(error, ...) log_internal(LOG_ERR, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_internal(LOG_WARNING, (error), __VA_ARGS__)
