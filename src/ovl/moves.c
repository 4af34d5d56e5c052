// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Directory moves in flight. A rename or removal of a directory changes
 * the upper layer first and the node table after it, so for a moment a
 * path built from the node table names another directory on disk, or
 * none. Such a change counts itself as started before it touches the
 * disk and as finished once the node table follows.
 *
 * Opening an upper directory by its path waits until no move runs, and
 * opens again if one started meanwhile. A descriptor opened that way
 * belongs to the node's own directory: it stays right when the directory
 * moves later, since it follows the inode, and so it may be kept.
 *
 * Every rename counts as a move. The kernel does not lock an inode to
 * open it, stat it or read its xattrs or link target, so such a request
 * can reach lamina while a rename of the same name runs. A read by path
 * therefore also waits for moves, and reads again when one overlapped it.
 */
#include "ovl.h"

#include <sched.h>

/* Yields to wait for a move before opening without that guarantee. */
#define MOVES_WAIT_YIELDS 10000
/* Reads by path that a move overlapped, before one result is kept. */
#define MOVES_READ_TRIES 16

void ovl_moves_begin(struct ovl_fs *fs)
{
	atomic_fetch_add(&fs->moves_started, 1);
}

void ovl_moves_end(struct ovl_fs *fs)
{
	atomic_fetch_add(&fs->moves_finished, 1);
}

/*
 * Wait until no move runs and store the count of started moves in *seen.
 * Returns false if moves kept running, so the caller goes on unsure.
 */
bool ovl_moves_settle(struct ovl_fs *fs, unsigned int *seen)
{
	unsigned int finished;
	int i;

	for (i = 0; i < MOVES_WAIT_YIELDS; i++) {
		finished = atomic_load(&fs->moves_finished);
		*seen = atomic_load(&fs->moves_started);
		if (*seen == finished)
			return true;
		sched_yield();
	}
	return false;
}

/* Whether no move started since ovl_moves_settle() stored seen. */
bool ovl_moves_none_since(struct ovl_fs *fs, unsigned int seen)
{
	return atomic_load(&fs->moves_started) == seen;
}

/*
 * Whether a read by path, which began with ovl_moves_settle() returning
 * settled and seen, must be done again because a move started meanwhile.
 * After a few tries the caller keeps what it read.
 */
bool ovl_moves_read_again(struct ovl_fs *fs, bool settled, unsigned int seen,
			  int *tries)
{
	return settled && !ovl_moves_none_since(fs, seen) &&
	       ++*tries < MOVES_READ_TRIES;
}
