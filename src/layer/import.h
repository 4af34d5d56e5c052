/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internal to import: the OCI whiteouts of a tar, applied at the end. */
#ifndef LAMINA_IMPORT_H
#define LAMINA_IMPORT_H

#include "oci.h"

/* Paths collected while unpacking, all clean and relative. */
struct import_marks {
	char **whiteouts; /* the deleted paths, without ".wh." */
	size_t nwhiteouts;
	char **opaque; /* directories with a .wh..wh..opq entry */
	size_t nopaque;
};

/* ---- import_marks.c ---- */

/* Record the meaning of a clean whiteout or opaque entry path. */
int import_marks_add(struct import_marks *m, const char *clean_path,
		     enum oci_name_kind kind);

/*
 * Write the recorded marks into the unpacked tree under the current
 * directory: whiteout devices (or xattr whiteouts with userxattr, or
 * where mknod is not permitted) and overlay.opaque=y. A whiteout whose
 * name the tar also holds, or that lies in an opaque directory, is left
 * out, because the layer's own entries hide it there anyway.
 */
int import_marks_apply(struct import_marks *m, bool userxattr,
		       struct oci_error *e);
void import_marks_free(struct import_marks *m);

#endif
