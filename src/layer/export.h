/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Internal to export: the state of one export and the entry writers. */
#ifndef LAMINA_EXPORT_H
#define LAMINA_EXPORT_H

#include "oci.h"

#include <stdbool.h>

struct archive_entry_linkresolver;

#define EXPORT_BUF_SIZE (128 * 1024)

struct export_ctx {
	struct archive *a;
	struct archive_entry_linkresolver *links; /* hard links seen so far */
	const struct oci_export_options *opts;
	struct oci_error *e;
	struct progress *progress;
	char *buf; /* a data buffer of EXPORT_BUF_SIZE bytes */
	bool warned_user_marks; /* the warning about user.overlay.* was printed
				 */
};

/* ---- export_entry.c ---- */

/*
 * Write the file at dirfd/name as the tar entry tarpath, with st as its
 * metadata. A metacopy file passes the descriptor of its data in datafd;
 * everything else passes -1.
 */
int export_file(struct export_ctx *x, const char *tarpath, int dirfd,
		const char *name, const struct stat *st, int datafd);

/* Write an empty whiteout or opaque marker entry, mode 0644, with st's
 * owner and mtime. */
int export_marker(struct export_ctx *x, const char *tarpath,
		  const struct stat *st);

#endif
