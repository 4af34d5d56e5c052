/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lamina diff: the changes an upper layer makes to its lower layers. */
#ifndef LAMINA_CLI_DIFF_H
#define LAMINA_CLI_DIFF_H

#include "layer/layer.h"

#include <stdbool.h>
#include <sys/stat.h>

/* ---- diff_lower.c ---- */

/* The lower entry that a path of the merged tree shows. */
struct lower_hit {
	int dirfd;	/* its parent directory, open; -1 when none */
	char name[256]; /* its name in dirfd */
	struct stat st;
	int err; /* negative errno when a lower layer could not be read */
};

bool diff_lower_find(const int *lowerfds, int nlower,
		     const struct layer_format *fmt, const char *path,
		     struct lower_hit *hit);

/* ---- diff_compare.c ---- */
bool diff_entry_changed(const struct layer_entry *upper,
			const struct lower_hit *lower);

#endif
