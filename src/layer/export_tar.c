// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A layer directory as an OCI layer tar. The layer is walked in name
 * order, parents first, so equal trees give equal tars. Whiteouts become
 * ".wh.NAME" entries and an opaque directory gets a ".wh..wh..opq" entry
 * right after its own. A redirected directory has no OCI form, so it is
 * written as an opaque directory with its whole merged content from the
 * lower layers. A metacopy file takes its data from them too.
 */
#include "export.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT_PATH_MAX 4096

/* tarpath = dir/prefix+name, or prefix+name at the root. */
static int join(char *out, const char *dir, const char *prefix,
		const char *name)
{
	int n = snprintf(out, EXPORT_PATH_MAX, "%s%s%s%s", dir, *dir ? "/" : "",
			 prefix, name);

	return n >= EXPORT_PATH_MAX ? -ENAMETOOLONG : 0;
}

/* The directory part of a layer path: "" at the root. */
static void parent_of(const char *path, char *out)
{
	const char *slash = strrchr(path, '/');
	size_t len = slash ? (size_t)(slash - path) : 0;

	memcpy(out, path, len);
	out[len] = '\0';
}

static int skip_socket(const char *path)
{
	fprintf(
	    stderr,
	    "lamina: warning: socket '%s' left out; tar has no socket type\n",
	    path);
	return 0;
}

static int export_dir(struct export_ctx *x, const char *path, int dirfd,
		      const char *name, const struct stat *st, bool opaque)
{
	char marker[EXPORT_PATH_MAX];
	int err;

	err = export_file(x, *path ? path : ".", dirfd, name, st, -1);
	if (err || !opaque)
		return err;
	err = join(marker, path, "", OCI_OPAQUE_NAME);
	return err ? err : export_marker(x, marker, st);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted union of the names in every directory of s. */
static int union_names(const struct layer_stack *s, char ***out, size_t *count)
{
	char **names = NULL, **grown;
	struct dirent **list;
	size_t n = 0, kept = 0, i;
	int k, m = 0, j, err = 0;

	for (k = 0; !err && k < s->count; k++) {
		m = scandirat(s->dirs[k].fd, ".", &list, NULL, NULL);
		if (m < 0) {
			err = -errno;
			break;
		}
		grown = realloc(names, (n + (size_t)m + 1) * sizeof(*names));
		if (grown)
			names = grown;
		else
			err = -ENOMEM;
		for (j = 0; j < m; j++) {
			if (!err && strcmp(list[j]->d_name, ".") &&
			    strcmp(list[j]->d_name, "..")) {
				names[n] = strdup(list[j]->d_name);
				if (!names[n++])
					err = -ENOMEM;
			}
			free(list[j]);
		}
		free(list);
	}
	if (err) {
		for (i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return err;
	}
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		if (kept && !strcmp(names[i], names[kept - 1]))
			free(names[i]);
		else
			names[kept++] = names[i];
	}
	*out = names;
	*count = kept;
	return 0;
}

static int export_merged(struct export_ctx *x, const char *path,
			 const struct layer_stack *s);

/* One name of a merged directory, as the top layer that has it shows it. */
static int export_merged_entry(struct export_ctx *x, const char *path,
			       const struct layer_stack *s, const char *name)
{
	struct layer_stack_entry ent;
	char child[EXPORT_PATH_MAX];
	int err = join(child, path, "", name);

	if (!err)
		err = layer_stack_lookup(x->opts->roots, s, name, &ent);
	if (err == -ENODATA) {
		oci_error_set(
		    x->e,
		    "no lower layer holds the data of metacopy file '%s'; give every layer below %s in -o lowerdir=",
		    child, x->opts->layer_path);
		return err;
	}
	if (err || !ent.found)
		return err;
	if (S_ISSOCK(ent.st.st_mode))
		err = skip_socket(child);
	else if (S_ISDIR(ent.st.st_mode))
		err = export_dir(x, child, ent.dirfd, name, &ent.st, false);
	else
		err =
		    export_file(x, child, ent.dirfd, name, &ent.st, ent.datafd);
	if (!err && S_ISDIR(ent.st.st_mode))
		err = export_merged(x, child, &ent.children);
	layer_stack_entry_release(&ent);
	return err;
}

static int export_merged(struct export_ctx *x, const char *path,
			 const struct layer_stack *s)
{
	char **names = NULL;
	size_t count = 0, i;
	int err = union_names(s, &names, &count);

	for (i = 0; !err && i < count; i++)
		err = export_merged_entry(x, path, s, names[i]);
	for (i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return err;
}

/* Look up the entry at e->path through the layers below the export. */
static int lookup_below(struct export_ctx *x, const struct layer_entry *e,
			struct layer_stack *parent,
			struct layer_stack_entry *ent)
{
	char dir[EXPORT_PATH_MAX];
	int err;

	parent_of(e->path, dir);
	err = layer_stack_open_dir(x->opts->roots, dir, parent);
	if (!err)
		err = layer_stack_lookup(x->opts->roots, parent, e->name, ent);
	if (err == -ENODATA)
		oci_error_set(
		    x->e,
		    "no lower layer holds the data of metacopy file '%s'; give every layer below %s in -o lowerdir=",
		    e->path, x->opts->layer_path);
	return err;
}

static int export_redirected(struct export_ctx *x, const struct layer_entry *e)
{
	struct layer_stack parent = {0};
	struct layer_stack_entry ent = {.datafd = -1};
	int err;

	if (!x->opts->lowers_given) {
		oci_error_set(
		    x->e,
		    "directory '%s' in %s was moved by overlayfs (overlay.redirect=\"%s\") and has no OCI form; give the layers below it with -o lowerdir=TOP:...:BOTTOM to export its merged content",
		    e->path, x->opts->layer_path, e->redirect);
		return -EINVAL;
	}
	err = lookup_below(x, e, &parent, &ent);
	if (!err)
		err = export_dir(x, e->path, e->dirfd, e->name, &e->st, true);
	if (!err)
		err = export_merged(x, e->path, &ent.children);
	layer_stack_entry_release(&ent);
	layer_stack_release(&parent);
	return err ? err : LAYER_WALK_SKIP;
}

static int export_metacopy(struct export_ctx *x, const struct layer_entry *e)
{
	struct layer_stack parent = {0};
	struct layer_stack_entry ent = {.datafd = -1};
	int err;

	if (!x->opts->lowers_given) {
		oci_error_set(
		    x->e,
		    "file '%s' in %s is a metacopy file (overlay.metacopy) whose data is in the layers below; give them with -o lowerdir=TOP:...:BOTTOM",
		    e->path, x->opts->layer_path);
		return -EINVAL;
	}
	err = lookup_below(x, e, &parent, &ent);
	if (!err)
		err = export_file(x, e->path, e->dirfd, e->name, &e->st,
				  ent.datafd);
	layer_stack_entry_release(&ent);
	layer_stack_release(&parent);
	return err;
}

/*
 * Warn once when a layer read with trusted.overlay.* has a directory
 * marked in user.overlay.*, as a userxattr mount writes it: without
 * -o userxattr the marks do not reach the tar.
 */
static void check_user_marks(struct export_ctx *x, const struct layer_entry *e)
{
	static const struct layer_format user = {"user.overlay."};
	char buf[8];

	if (x->warned_user_marks ||
	    strcmp(x->opts->roots->fmt->xattr_prefix, "trusted.overlay.") ||
	    layer_getxattr(e->dirfd, e->depth ? e->name : ".", &user, "opaque",
			   buf, sizeof(buf)) < 0)
		return;
	x->warned_user_marks = true;
	fprintf(
	    stderr,
	    "lamina: warning: %s has user.overlay.opaque, which export reads only with -o userxattr, so such marks are left out; export a layer written by a userxattr mount with -o userxattr\n",
	    e->depth ? e->path : ".");
}

static int export_visit(void *arg, const struct layer_entry *e,
			enum layer_visit visit)
{
	struct export_ctx *x = arg;
	char tarpath[EXPORT_PATH_MAX], dir[EXPORT_PATH_MAX];
	int err;

	if (visit == LAYER_VISIT_DIR_END)
		return 0;
	if (e->whiteout) {
		parent_of(e->path, dir);
		err = join(tarpath, dir, OCI_WHITEOUT_PREFIX, e->name);
		return err ? err : export_marker(x, tarpath, &e->st);
	}
	if (S_ISDIR(e->st.st_mode) && e->redirect && e->depth > 0)
		return export_redirected(x, e);
	/* The root is reached as "." in its own descriptor. */
	if (S_ISDIR(e->st.st_mode))
		check_user_marks(x, e);
	if (S_ISDIR(e->st.st_mode))
		return export_dir(x, e->path, e->dirfd,
				  e->depth ? e->name : ".", &e->st, e->opaque);
	if (e->metacopy)
		return export_metacopy(x, e);
	if (S_ISSOCK(e->st.st_mode))
		return skip_socket(e->path);
	return export_file(x, e->path, e->dirfd, e->name, &e->st, -1);
}

int oci_export(struct archive *a, const struct oci_export_options *opts,
	       struct oci_error *e)
{
	struct export_ctx x = {.a = a, .opts = opts, .e = e};
	int err;

	x.links = archive_entry_linkresolver_new();
	x.buf = malloc(EXPORT_BUF_SIZE);
	if (!x.links || !x.buf) {
		err = -ENOMEM;
		goto out;
	}
	archive_entry_linkresolver_set_strategy(x.links, archive_format(a));
	x.progress = progress_start("export", 0);
	err =
	    layer_walk(opts->roots->fds[0], opts->roots->fmt, export_visit, &x);
	progress_end(x.progress);
out:
	free(x.buf);
	if (x.links)
		archive_entry_linkresolver_free(x.links);
	return err;
}
