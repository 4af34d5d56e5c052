/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Looking up one name in a directory merged from several layers, by the
 * rules of overlayfs's lookup, for layer_squash.
 */
#ifndef LAMINA_LAYER_SQUASH_LOOKUP_H
#define LAMINA_LAYER_SQUASH_LOOKUP_H

#include "copy.h"

#include <limits.h>

/* One layer's directory in the stack of a merged directory. */
struct squash_src {
	int layer;
	int fd;
};

/* How a merged directory goes on into the layers below the squashed set. */
enum squash_below {
	SQUASH_BELOW_NONE, /* it does not: opaque, or cut off above */
	SQUASH_BELOW_NAME, /* by name, through its parent's directories */
	SQUASH_BELOW_PATH, /* by absolute path, from each layer's root */
};

/* A directory of the merged tree: its layers' directories, top first. */
struct squash_dir {
	struct squash_src *srcs;
	int nsrc, cap;
	enum squash_below below;
	/* Its path in the layers below, from their root, without a leading
	 * '/'; NULL when below is SQUASH_BELOW_NONE. */
	char *below_path;
};

/* The squashed layers, as every lookup needs them. */
struct squash_layers {
	const int *root_fds;
	int n;
	const struct layer_format *fmt;
	char *error; /* o->error of layer_squash */
	size_t error_size;
};

/* The outcome of looking up one name in a merged directory. */
struct squash_lookup {
	bool found;	       /* an entry is visible under the name */
	bool whiteout;	       /* a whiteout hides the name */
	int top_layer;	       /* the visible entry: its layer, */
	int top_dirfd;	       /* its parent directory there (not owned), */
	struct stat st;	       /* and its attributes */
	struct squash_dir dir; /* for a directory: its layers' directories */
	bool stop;	       /* no layer below can add to the directory */
	bool absolute;	       /* path is absolute, from the layers' roots */
	unsigned int absolute_redirects; /* absolute redirects met so far */
	char path[PATH_MAX];		 /* where the next layer is searched */
	/* For a metacopy file on top: its data is searched below it, and
	 * data_dirfd (owned) and data_name locate the file that holds it,
	 * or data_dirfd is -1 when the squashed layers do not hold it. */
	bool metacopy;
	int data_dirfd;
	char data_name[NAME_MAX + 1];
};

int squash_lookup(const struct squash_layers *sl, const struct squash_dir *md,
		  const char *name, const char *where,
		  struct squash_lookup *lk);
void squash_lookup_release(struct squash_lookup *lk);

/* Add the layer's directory dirfd/name below the others in d. */
int squash_dir_append(struct squash_dir *d, int layer, int dirfd,
		      const char *name);
void squash_dir_release(struct squash_dir *d);

#endif
