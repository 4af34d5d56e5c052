/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Layer directories as plain trees, for the commands that read or write
 * them without a mount: whiteouts, opaque directories, redirects and
 * metacopy files in the overlayfs on-disk format.
 */
#ifndef LAMINA_LAYER_H
#define LAMINA_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/* The namespace of overlay xattrs: "trusted.overlay." or "user.overlay.". */
struct layer_format {
	const char *xattr_prefix;
};

/* The overlay meaning of one entry of a layer. */
struct layer_entry {
	const char *path; /* relative to the layer's root; "" for the root */
	const char *name; /* last component; "" for the root */
	int dirfd;	  /* the parent directory, open; the root's own fd */
	int depth;	  /* 0 for the root */
	struct stat st;	  /* lstat of the entry */
	bool whiteout;	  /* char 0/0, or an xattr whiteout */
	bool opaque;	  /* a directory that hides the layers below */
	bool metacopy;	  /* metadata only; the data is below */
	char *redirect;	  /* overlay.redirect, or NULL */
};

enum layer_visit {
	LAYER_VISIT_ENTRY,   /* any entry but a directory */
	LAYER_VISIT_DIR,     /* a directory, before its entries */
	LAYER_VISIT_DIR_END, /* the same directory, after its entries */
};

/*
 * Called for every entry, in name order, parents first. Return 0 to go
 * on, LAYER_WALK_SKIP from LAYER_VISIT_DIR to skip the directory's
 * entries (LAYER_VISIT_DIR_END still comes), or a negative errno to stop.
 */
#define LAYER_WALK_SKIP 1
typedef int (*layer_walk_fn)(void *arg, const struct layer_entry *e,
			     enum layer_visit visit);

/*
 * Walk the tree under rootfd (an O_DIRECTORY descriptor). Symlinks are
 * never followed and the walk never leaves the tree. Returns 0, the
 * callback's negative errno, or a negative errno of its own.
 */
/* The path of the entry at which this thread's last walk failed, "" for
 * the root. */
const char *layer_walk_failure(void);
int layer_walk(int rootfd, const struct layer_format *fmt, layer_walk_fn fn,
	       void *arg);

/*
 * Fill the overlay fields of e from dirfd/name; e->st must be set. An
 * invalid overlay.redirect gives -EUCLEAN, with a message on stderr
 * already (the walk passes it on), so callers add none of their own.
 */
int layer_classify(int dirfd, const char *name, const struct layer_format *fmt,
		   struct layer_entry *e);
void layer_entry_release(struct layer_entry *e);

/* Read the overlay xattr called suffix ("opaque", "redirect", ...) of
 * dirfd/name into buf; returns its length or a negative errno. */
int layer_getxattr(int dirfd, const char *name, const struct layer_format *fmt,
		   const char *suffix, char *buf, size_t size);

/* ---- progress.c ---- */

/*
 * A progress bar on stderr for long commands. It draws only when stderr
 * is a terminal, at most ten times a second, so scripts see nothing.
 */
struct progress;
struct progress *progress_start(const char *what, uint64_t total);
void progress_set_total(struct progress *p, uint64_t total);
void progress_add(struct progress *p, uint64_t done);
void progress_end(struct progress *p);

#endif
