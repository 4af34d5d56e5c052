// SPDX-License-Identifier: GPL-2.0-or-later
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

static bool debug_on;
static bool to_syslog;
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_debug(bool on)
{
	debug_on = on;
}

bool log_debug_enabled(void)
{
	return debug_on;
}

void log_use_syslog(void)
{
	openlog("lamina", LOG_PID, LOG_DAEMON);
	to_syslog = true;
}

static int syslog_priority(enum log_level level)
{
	switch (level) {
	case LOG_LVL_ERR:
		return LOG_ERR;
	case LOG_LVL_WARN:
		return LOG_WARNING;
	case LOG_LVL_INFO:
		return LOG_INFO;
	default:
		return LOG_DEBUG;
	}
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);

	if (to_syslog) {
		syslog(syslog_priority(level), "%s", line);
		return;
	}
	/* The stream lock keeps lines from several threads whole. */
	flockfile(stderr);
	fputs("lamina: ", stderr);
	if (level == LOG_LVL_ERR)
		fputs("error: ", stderr);
	else if (level == LOG_LVL_WARN)
		fputs("warning: ", stderr);
	fputs(line, stderr);
	fputc('\n', stderr);
	funlockfile(stderr);
}

bool log_ratelimit_pass(struct log_ratelimit *rl)
{
	struct timespec now;
	uint32_t dropped = 0;
	bool pass;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&rl_lock);
	if (now.tv_sec - rl->window_start >= LOG_WINDOW) {
		dropped = rl->dropped;
		rl->window_start = now.tv_sec;
		rl->printed = 0;
		rl->dropped = 0;
	}
	pass = rl->printed < LOG_BURST;
	if (pass)
		rl->printed++;
	else
		rl->dropped++;
	pthread_mutex_unlock(&rl_lock);

	if (dropped)
		log_msg(LOG_LVL_WARN, "%u similar warnings suppressed", dropped);
	return pass;
}
