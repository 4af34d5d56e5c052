/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * OCI image layer tars and the overlayfs layer format. An OCI layer marks
 * a deleted NAME with an empty ".wh.NAME" entry and an opaque directory
 * with a ".wh..wh..opq" entry inside it. overlayfs uses whiteout devices
 * and xattrs instead, and the conversion happens only here, at export
 * and import time.
 */
#ifndef LAMINA_OCI_H
#define LAMINA_OCI_H

#include "layer.h"

#include <stdbool.h>
#include <stddef.h>

#define OCI_WHITEOUT_PREFIX ".wh."
#define OCI_OPAQUE_NAME ".wh..wh..opq"

struct archive;

/* A message for the user, made where the failing entry is known. */
struct oci_error {
	char msg[1024];
};
void oci_error_set(struct oci_error *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Format the last error of the archive a into buf: libarchive's message,
 * followed by the errno text that the message lacks, as in "Write failed:
 * No space left on device". Returns buf.
 */
const char *oci_archive_error(struct archive *a, char *buf, size_t size);

/* ---- oci.c: names ---- */

enum oci_name_kind {
	OCI_NAME_PLAIN,	   /* an ordinary entry */
	OCI_NAME_WHITEOUT, /* .wh.NAME: NAME is deleted */
	OCI_NAME_OPAQUE,   /* .wh..wh..opq: the parent is opaque */
};

/*
 * Check a tar entry's path and reduce it to a clean relative path in
 * out: no leading "./" or "/", no "." components, no doubled slashes.
 * Returns 0, or -EINVAL with a message naming the entry when the path
 * is absolute, contains "..", has a ".wh." component that is not the
 * last one, or whites out "", "." or "..". An empty out is the root.
 */
int oci_clean_path(const char *path, char *out, size_t size,
		   struct oci_error *e);

/* The meaning of a clean path's last component in an OCI layer. */
enum oci_name_kind oci_name_kind(const char *clean_path);

/* Whether an xattr belongs to overlayfs: trusted.overlay.* or
 * user.overlay.*. These never go into a tar and are never taken from one. */
bool oci_xattr_is_overlay(const char *name);

/* ---- stack.c: the layers below the exported one ---- */

/*
 * The exported layer on top of its lower layers, for the entries whose
 * content lives below: redirected directories and metacopy files.
 */
struct layer_stack_roots {
	int *fds;  /* [0] the exported layer, then the lowers, top first */
	int count; /* 1 when no lowers are known */
	const struct layer_format *fmt;
};

/* One layer's copy of a merged directory. */
struct layer_stack_dir {
	int layer; /* index into layer_stack_roots.fds */
	int fd;	   /* open O_RDONLY | O_DIRECTORY */
};

/* The directories that make up one merged directory, top layer first. */
struct layer_stack {
	struct layer_stack_dir *dirs;
	int count;
};

/* The result of looking up one name in a merged directory. */
struct layer_stack_entry {
	bool found;
	int dirfd;	/* the top entry's parent (borrowed), or -1 */
	struct stat st; /* lstat of the top entry */
	int datafd;	/* for a metacopy file: its data, open; or -1 */
	struct layer_stack children; /* for a directory: its stack */
};

/* Open the root directory of every layer as one stack. */
int layer_stack_root(const struct layer_stack_roots *roots,
		     struct layer_stack *out);
/*
 * Look up name in the merged directory parent. out->found is false for a
 * name that is missing or whited out. Returns -ENODATA for a metacopy
 * file without a full copy below it. Release out when done.
 */
int layer_stack_lookup(const struct layer_stack_roots *roots,
		       const struct layer_stack *parent, const char *name,
		       struct layer_stack_entry *out);
/* Open the stack of the merged directory at a clean relative path, "" for
 * the root. The stack is empty when the path is no merged directory. */
int layer_stack_open_dir(const struct layer_stack_roots *roots,
			 const char *path, struct layer_stack *out);
void layer_stack_release(struct layer_stack *s);
void layer_stack_entry_release(struct layer_stack_entry *e);

/* ---- export_tar.c ---- */

struct oci_export_options {
	const struct layer_stack_roots *roots;
	const char *layer_path; /* the layer directory, for messages */
	bool lowers_given;	/* false: redirects and metacopy are errors */
};

/* Write the layer at roots->fds[0] into the open archive a. */
int oci_export(struct archive *a, const struct oci_export_options *opts,
	       struct oci_error *e);

/* ---- import_tar.c ---- */

struct oci_import_options {
	bool userxattr;		    /* xattr whiteouts and user.overlay.* */
	volatile int *stop;	    /* set by a signal handler to abort */
	unsigned long long in_size; /* input bytes for the progress bar, or 0 */
};

/*
 * Unpack the archive a into the current directory, which must be an
 * empty staging directory, converting OCI whiteouts.
 */
int oci_import(struct archive *a, const struct oci_import_options *opts,
	       struct oci_error *e);

#endif
