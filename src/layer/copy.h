/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Writing layer directories: copying entries with all the metadata that
 * overlayfs shows, copying a whole layer, and merging several layers
 * into one.
 */
#ifndef LAMINA_LAYER_COPY_H
#define LAMINA_LAYER_COPY_H

#include "layer.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

/* ---- copy.c: one entry at a time ---- */

/* State shared by the copies that build one output tree. */
struct layer_copy {
	const struct layer_format *fmt;
	bool drop_overlay_xattrs; /* leave out fmt's private overlay xattrs */
	int out_root;		  /* the output tree, to link hard links in */
	void *links;	/* inodes with several names, already copied */
	uint64_t bytes; /* file data copied so far */
};

/*
 * Copy the non-directory sdir/sname (attributes st) to ddir/dname, with
 * data, owner, mode, xattrs and times. A second name of an inode that
 * was copied from the same layer before becomes a hard link to the
 * first copy, found under out_path (relative to out_root) of that copy.
 */
int layer_copy_entry(struct layer_copy *c, int layer, int sdir,
		     const char *sname, const struct stat *st, int ddir,
		     const char *dname, const char *out_path);

/*
 * A metacopy file to write from the layers: the metadata of one entry,
 * with either the data of another file or, when that data stays in a
 * layer below the output, a new metacopy file that points at it.
 */
struct layer_metacopy {
	int layer;	  /* the metacopy file's layer, for its hard links */
	int dirfd;	  /* its parent directory, */
	const char *name; /* its name there, */
	const struct stat *st; /* and its attributes */
	int data_dirfd;	       /* the data file's parent directory, or -1 */
	const char *data_name; /* the data file's name there */
	/* With data_dirfd -1: the absolute path of the data in the layers
	 * below, or NULL when it is at the output's own path. */
	const char *redirect;
};

/*
 * Write m to ddir/dname: a plain regular file with m's metadata and the
 * data file's contents, holes kept, or a metacopy file of m's size with
 * no data, overlay.metacopy and overlay.redirect. Hard links are kept as
 * layer_copy_entry keeps them. c->drop_overlay_xattrs must be set,
 * because the overlay xattrs of m do not apply to the output.
 */
int layer_copy_metacopy(struct layer_copy *c, const struct layer_metacopy *m,
			int ddir, const char *dname, const char *out_path);

/* Copy owner, xattrs, mode and times; for directories, after the
 * entries in them, because adding an entry changes the times. */
int layer_copy_attrs(struct layer_copy *c, int sdir, const char *sname,
		     const struct stat *st, int ddir, const char *dname);

/* Whether xattr name is one of fmt's private overlay xattrs. Escaped
 * names (overlay.overlay.*) are ordinary data. */
bool layer_xattr_is_private(const struct layer_format *fmt, const char *name);

void layer_copy_release(struct layer_copy *c);

/* ---- copy_tree.c ---- */

/*
 * Copy the layer under srcfd into the empty directory dstfd, every
 * entry exactly, overlay xattrs and whiteouts included. On failure,
 * failed_path names the entry (relative to the layer) that failed.
 */
int layer_copy_tree(int srcfd, int dstfd, const struct layer_format *fmt,
		    struct progress *progress, char *failed_path, size_t size);

/* The number of entries under rootfd, the root included. */
int layer_count_entries(int rootfd, const struct layer_format *fmt,
			uint64_t *count);

/* ---- squash.c ---- */

/* Settings and error text of layer_squash. */
struct layer_squash_opts {
	const struct layer_format *fmt;
	bool bottom; /* no layer will be mounted below the result */
	struct progress *progress;
	char error[4608]; /* on failure: which entry failed, and why */
};

/*
 * Merge the layers layer_fds[0..n) (top first, as in lowerdir=) into
 * the empty directory outfd, so that outfd mounted above any layers
 * shows what the n layers show above them. Whiteouts, opaque markers
 * and redirects are kept where they can still hide or find something
 * below, and left out with o->bottom. Returns 0 or a negative errno
 * with o->error set.
 */
int layer_squash(const int *layer_fds, int n, int outfd,
		 struct layer_squash_opts *o);

#endif
