// SPDX-License-Identifier: GPL-2.0-or-later
/* A progress bar on stderr, drawn only when stderr is a terminal. */
#include "layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_WIDTH 30
#define PROGRESS_INTERVAL_NS 100000000LL /* ten updates a second */

struct progress {
	const char *what;
	uint64_t total, done;
	long long last_ns;
	bool drawn;
};

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void draw(struct progress *p)
{
	char bar[PROGRESS_WIDTH + 1];
	uint64_t fill;
	int i;

	if (!p->total) {
		fprintf(stderr, "\r%s: %llu", p->what,
			(unsigned long long)p->done);
	} else {
		fill = p->done >= p->total
			   ? PROGRESS_WIDTH
			   : p->done * PROGRESS_WIDTH / p->total;
		for (i = 0; i < PROGRESS_WIDTH; i++)
			bar[i] = (uint64_t)i < fill ? '#' : '.';
		bar[PROGRESS_WIDTH] = '\0';
		fprintf(
		    stderr, "\r%s [%s] %3u%% (%llu/%llu)", p->what, bar,
		    (unsigned)(p->done >= p->total ? 100
						   : p->done * 100 / p->total),
		    (unsigned long long)p->done, (unsigned long long)p->total);
	}
	p->drawn = true;
}

/* NULL when stderr is not a terminal: every call then does nothing. */
struct progress *progress_start(const char *what, uint64_t total)
{
	struct progress *p;

	if (!isatty(STDERR_FILENO) || getenv("LAMINA_NO_PROGRESS"))
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->what = what;
	p->total = total;
	return p;
}

void progress_set_total(struct progress *p, uint64_t total)
{
	if (p)
		p->total = total;
}

void progress_add(struct progress *p, uint64_t done)
{
	long long t;

	if (!p)
		return;
	p->done += done;
	t = now_ns();
	if (t - p->last_ns >= PROGRESS_INTERVAL_NS) {
		p->last_ns = t;
		draw(p);
	}
}

void progress_end(struct progress *p)
{
	if (!p)
		return;
	if (p->drawn) {
		if (p->total)
			p->done = p->total;
		draw(p);
		fputc('\n', stderr);
	}
	free(p);
}
