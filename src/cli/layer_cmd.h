/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What lamina commit and lamina squash share: their command line and
 * the new layer directory that each of them makes.
 */
#ifndef LAMINA_CLI_LAYER_CMD_H
#define LAMINA_CLI_LAYER_CMD_H

#include "ovl/ovl.h"

#include <limits.h>
#include <stdbool.h>

struct layer_cmd_args {
	struct ovl_config cfg;
	const char *newlayer; /* the NEWLAYER argument as given */
	bool bottom;	      /* squash --bottom */
};

/* Parse "-o OPTIONS [--bottom] NEWLAYER" for cmd ("commit" or
 * "squash"). lowers_only (squash) accepts --bottom and rejects an upper
 * layer. Returns 0, or EXIT_USAGE after printing why. */
int layer_cmd_parse(int argc, char **argv, const char *cmd, const char *usage,
		    bool lowers_only, struct layer_cmd_args *a);

/* The directory a command creates, and its staging name beside it. */
struct new_layer {
	char path[PATH_MAX];	     /* absolute: the parent's real path/name */
	char name[NAME_MAX + 1];     /* the last component */
	char staging[NAME_MAX + 1];  /* ".NAME.lamina-<cmd>" in the parent */
	char staging_path[PATH_MAX]; /* the same as an absolute path */
	int parent_fd;
	int staging_fd; /* the staging directory, flock-ed, or -1 */
};

/* Resolve NEWLAYER's parent and open it. Returns 0 or EXIT_USAGE after
 * printing why. */
int new_layer_open(struct new_layer *nl, const char *arg, const char *cmd);
void new_layer_close(struct new_layer *nl);

/*
 * The staging directory is flock-ed for the whole run, so a second run
 * on the same NEWLAYER can tell a live run from one that was killed,
 * whose lock the kernel dropped. new_layer_lock_staging() opens and locks
 * an existing staging directory: it returns 1 when it locked one, 0 when
 * there is none, and -EBUSY when another run holds it.
 * new_layer_make_staging() creates the staging directory and locks it:
 * it returns 0, or -EBUSY when another run created or locked it first.
 * Both keep the lock in nl->staging_fd, which new_layer_close() drops.
 */
int new_layer_lock_staging(struct new_layer *nl);
int new_layer_make_staging(struct new_layer *nl);

/* Reject a new layer inside dir, a directory the command reads or
 * changes; what names dir in the message. Returns 0 or EXIT_USAGE. */
int layer_cmd_check_apart(const struct new_layer *nl, const char *dir,
			  const char *what);

/* Reject a lowerdir of cfg given twice, and an upperdir, workdir or
 * lowerdir that is the same directory as another or lies inside another,
 * as the mount does. Returns 0 or EXIT_USAGE after printing why. */
int layer_cmd_check_layers(const struct ovl_config *cfg, const char *cmd);

/* fsync the directory dirfd/name. */
int layer_cmd_fsync_dir(int dirfd, const char *name);

/* Print lowerdir= with the new layer on top of the given lowers, each
 * path escaped for the option list. */
void layer_cmd_print_lowerdir(const char *top, const struct ovl_config *cfg);

#endif
