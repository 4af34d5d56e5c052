// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * OCI whiteouts turned into overlayfs ones. They are applied after every
 * entry is unpacked, because a tar may list ".wh.NAME" before NAME or
 * before its directory's ".wh..wh..opq", and both change what is needed.
 */
#include "import.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define IMPORT_PATH_MAX 4096

static int list_add(char ***list, size_t *n, char *s)
{
	char **grown = realloc(*list, (*n + 1) * sizeof(**list));

	if (!s || !grown) {
		free(s);
		if (grown)
			*list = grown;
		return -ENOMEM;
	}
	*list = grown;
	(*list)[(*n)++] = s;
	return 0;
}

int import_marks_add(struct import_marks *m, const char *clean_path,
		     enum oci_name_kind kind)
{
	const char *slash = strrchr(clean_path, '/');
	const char *name = slash ? slash + 1 : clean_path;
	int dirlen = slash ? (int)(slash - clean_path) : 0;
	char *s = NULL;

	if (kind == OCI_NAME_OPAQUE)
		return list_add(&m->opaque, &m->nopaque,
				strndup(clean_path, (size_t)dirlen));
	name += strlen(OCI_WHITEOUT_PREFIX);
	if (asprintf(&s, "%.*s%s%s", dirlen, clean_path, dirlen ? "/" : "",
		     name) < 0)
		return -ENOMEM;
	return list_add(&m->whiteouts, &m->nwhiteouts, s);
}

void import_marks_free(struct import_marks *m)
{
	size_t i;

	for (i = 0; i < m->nwhiteouts; i++)
		free(m->whiteouts[i]);
	for (i = 0; i < m->nopaque; i++)
		free(m->opaque[i]);
	free(m->whiteouts);
	free(m->opaque);
	memset(m, 0, sizeof(*m));
}

/*
 * Open the directory at path under the current directory, creating the
 * missing ones (mode 0755) and following no symlink. for_entry names the
 * tar entry in messages.
 */
static int open_dir_create(const char *path, const char *for_entry,
			   struct oci_error *e)
{
	char copy[IMPORT_PATH_MAX], *comp, *save;
	int fd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), next, err;

	if (fd < 0)
		return -errno;
	snprintf(copy, sizeof(copy), "%s", path);
	for (comp = strtok_r(copy, "/", &save); comp;
	     comp = strtok_r(NULL, "/", &save)) {
		next = -1;
		if (mkdirat(fd, comp, 0755) == 0 || errno == EEXIST)
			next = openat(fd, comp,
				      O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					  O_CLOEXEC);
		err = -errno;
		close(fd);
		if (next >= 0) {
			fd = next;
			continue;
		}
		if (err == -ELOOP || err == -ENOTDIR)
			oci_error_set(
			    e,
			    "tar entry '%s' lies under '%s', which is not a directory in the tar; the archive is invalid",
			    for_entry, path);
		else
			oci_error_set(
			    e,
			    "cannot create directory '%s' for tar entry '%s': %s",
			    path, for_entry, strerror(-err));
		return err;
	}
	return fd;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_opaque(const struct import_marks *m, const char *dir)
{
	return m->nopaque &&
	       bsearch(&dir, m->opaque, m->nopaque, sizeof(char *), cmp_str);
}

/*
 * A zero-size file with overlay.whiteout, mode 000, in a directory marked
 * "x". The file is writable until the xattr is set: a user.* xattr needs
 * write permission, which only root has on a file of mode 000.
 */
static int make_xwhiteout(int dirfd, const char *name)
{
	int fd =
	    openat(dirfd, name,
		   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (fsetxattr(fd, "user.overlay.whiteout", "", 0, 0) < 0 ||
	    fchmod(fd, 0) < 0 ||
	    fsetxattr(dirfd, "user.overlay.opaque", "x", 1, 0) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int make_whiteout(int dirfd, const char *name, bool *userxattr)
{
	if (!*userxattr) {
		if (mknodat(dirfd, name, S_IFCHR | 0000, makedev(0, 0)) == 0)
			return 0;
		if (errno != EPERM)
			return -errno;
		fprintf(
		    stderr,
		    "lamina: warning: creating whiteout devices is not permitted (mknod); writing xattr whiteouts instead, so mount this layer with -o userxattr\n");
		*userxattr = true;
	}
	return make_xwhiteout(dirfd, name);
}

static int apply_whiteout(const struct import_marks *m, const char *path,
			  bool *userxattr, struct oci_error *e)
{
	char dir[IMPORT_PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	struct stat st;
	int dirfd, err = 0;

	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 0,
		 path);
	if (is_opaque(m, dir))
		return 0;
	dirfd = open_dir_create(dir, path, e);
	if (dirfd < 0)
		return dirfd;
	/* The layer's own entry of that name already hides the lower one. */
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		err = make_whiteout(dirfd, name, userxattr);
		if (err)
			oci_error_set(e,
				      "cannot create the whiteout for '%s': %s",
				      path, strerror(-err));
	}
	close(dirfd);
	return err;
}

static int apply_opaque(const char *dir, bool userxattr, struct oci_error *e)
{
	const char *attr =
	    userxattr ? "user.overlay.opaque" : "trusted.overlay.opaque";
	int dirfd = open_dir_create(dir, dir, e), err = 0;

	if (dirfd < 0)
		return dirfd;
	if (fsetxattr(dirfd, attr, "y", 1, 0) < 0) {
		err = -errno;
		oci_error_set(
		    e,
		    "cannot set %s on directory '%s': %s; import as root, or with --userxattr",
		    attr, *dir ? dir : ".", strerror(errno));
	}
	close(dirfd);
	return err;
}

int import_marks_apply(struct import_marks *m, bool userxattr,
		       struct oci_error *e)
{
	size_t i;
	int err = 0;

	if (m->nopaque)
		qsort(m->opaque, m->nopaque, sizeof(char *), cmp_str);
	/* Whiteouts first: they settle whether the layer uses userxattr. */
	for (i = 0; !err && i < m->nwhiteouts; i++)
		err = apply_whiteout(m, m->whiteouts[i], &userxattr, e);
	for (i = 0; !err && i < m->nopaque; i++)
		err = apply_opaque(m->opaque[i], userxattr, e);
	return err;
}
