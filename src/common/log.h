/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One logger for the whole program: a fixed "lamina: " prefix, levels,
 * stderr in the foreground and syslog once the daemon runs detached.
 */
#ifndef LAMINA_LOG_H
#define LAMINA_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_debug(bool on);
bool log_debug_enabled(void);
void log_use_syslog(void);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * A warning that may repeat once per request: printed at most
 * LOG_BURST times per LOG_WINDOW seconds per call site, then counted and
 * summarised once the window ends.
 */
struct log_ratelimit {
	int64_t window_start;
	uint32_t printed;
	uint32_t dropped;
};
#define LOG_BURST 10
#define LOG_WINDOW 5
bool log_ratelimit_pass(struct log_ratelimit *rl);

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                                     \
	do {                                                               \
		if (log_debug_enabled())                                   \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);               \
	} while (0)

/* Rate-limited warning: one static counter per call site. */
#define log_warn_rl(...)                                                   \
	do {                                                               \
		static struct log_ratelimit rl_;                           \
		if (log_ratelimit_pass(&rl_))                              \
			log_msg(LOG_LVL_WARN, __VA_ARGS__);                \
	} while (0)

#endif
