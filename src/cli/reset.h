/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lamina reset: an upper directory made empty again. */
#ifndef LAMINA_CLI_RESET_H
#define LAMINA_CLI_RESET_H

#include "layer/layer.h"

#include <stddef.h>
#include <stdint.h>

/* The count of entries a deletion removed, and where it failed. */
struct reset_count {
	uint64_t removed;
	char failed[4096]; /* path, relative to the deleted tree */
};

/* ---- reset_tree.c ---- */
void reset_aside_name(const char *name, char *buf, size_t size);
int reset_swap(int parentfd, const char *name, const char *aside);
int reset_workdir(int workfd, struct reset_count *count);

/* ---- reset_delete.c ---- */
int reset_delete(int dirfd, const char *name, struct reset_count *count,
		 struct progress *progress);
int reset_delete_contents(int fd, struct reset_count *count,
			  struct progress *progress);

#endif
