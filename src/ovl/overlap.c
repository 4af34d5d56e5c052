// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Overlap checks between the directories of one layer stack. As in
 * overlayfs, the upper, the workdir and each lower must be separate
 * directories, none inside another, and no lower may be given twice.
 * The mount and the layer commands share these checks, so they accept
 * and reject the same stacks. Every path here is a real path, as
 * realpath(3) returns it.
 */
#include "ovl.h"

#include <errno.h>
#include <string.h>

bool ovl_path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (!strcmp(dir, "/"))
		return true;
	return !strncmp(path, dir, n) && (path[n] == '\0' || path[n] == '/');
}

/* Reject a and b, named by their option keys ka and kb, when they are
 * the same directory or one lies inside the other. */
static int check_apart(const char *ka, const char *a, const char *kb,
		       const char *b, struct ovl_error *e)
{
	if (!strcmp(a, b)) {
		ovl_error_set(
		    e,
		    "%s and %s are the same directory, %s; use separate directories",
		    ka, kb, a);
		return -EINVAL;
	}
	if (ovl_path_within(a, b)) {
		ovl_error_set(
		    e, "%s %s is inside %s %s; use separate directory trees",
		    ka, a, kb, b);
		return -EINVAL;
	}
	if (ovl_path_within(b, a)) {
		ovl_error_set(
		    e, "%s %s is inside %s %s; use separate directory trees",
		    kb, b, ka, a);
		return -EINVAL;
	}
	return 0;
}

int ovl_check_layers_apart(const char *upper, const char *work,
			   const char *const *lowers, int nlower,
			   struct ovl_error *e)
{
	int i, err = 0;

	if (upper && work)
		err = check_apart("upperdir", upper, "workdir", work, e);
	for (i = 0; !err && i < nlower; i++) {
		if (!lowers[i])
			continue;
		if (upper)
			err = check_apart("upperdir", upper, "lowerdir",
					  lowers[i], e);
		if (!err && work)
			err = check_apart("workdir", work, "lowerdir",
					  lowers[i], e);
	}
	return err;
}

int ovl_check_lowers_distinct(const char *const *lowers, int nlower,
			      struct ovl_error *e)
{
	int i, j;

	for (i = 0; i < nlower; i++) {
		for (j = i + 1; j < nlower; j++) {
			if (!lowers[i] || !lowers[j] ||
			    strcmp(lowers[i], lowers[j]))
				continue;
			ovl_error_set(
			    e,
			    "lowerdir %s is given twice; list each layer once",
			    lowers[i]);
			return -EINVAL;
		}
	}
	return 0;
}
