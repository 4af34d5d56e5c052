/* SPDX-License-Identifier: GPL-2.0-or-later */
/* lamina commit: the state shared by its steps. */
#ifndef LAMINA_CLI_COMMIT_H
#define LAMINA_CLI_COMMIT_H

#include "layer/layer.h"
#include "layer_cmd.h"

#include <sys/types.h>

struct commit {
	struct layer_cmd_args args;
	struct new_layer nl; /* NEWLAYER; nl.staging records the commit */
	struct layer_format fmt;
	char upper[PATH_MAX]; /* real path of upperdir */
	char upper_name[NAME_MAX + 1];
	char fresh_name[NAME_MAX + 1]; /* the new empty upper, beside it */
	int upper_parent_fd;
	int work_fd;
	int upper_lock_fd; /* the upper, locked by cli_upper_lock() */
	int fresh_lock_fd; /* the new empty upper, locked the same way */
	ino_t upper_ino; /* inode of the upper being committed */
	bool by_rename;	 /* NEWLAYER is on the upper's mount */
	bool resumed;	 /* an interrupted run left nl.staging */
};

/* commit_state.c: the staging directory that records a commit.
 * commit_state_lock() locks the record of an earlier run, if there is
 * one, and returns whether there is. commit_state_begin() returns
 * COMMIT_FINISHED when an interrupted run had already finished the
 * commit. */
#define COMMIT_FINISHED 2
int commit_state_lock(struct commit *c);
int commit_state_begin(struct commit *c);
int commit_state_end(struct commit *c);

/* commit_links.c: link the names of indexed files into the upper. */
int commit_link_index_names(struct commit *c);

/* commit_move.c: the moves themselves. */
int commit_move(struct commit *c);
int commit_clear_workdir(struct commit *c);

#endif
