// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Copying one entry of a layer with everything overlayfs shows of it:
 * file type, data with its holes, owner, mode, xattrs and times with
 * nanoseconds. Hard links within one layer stay hard links.
 */
#include "copy.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An inode with several names, and where its first copy went. */
struct link_key {
	int layer;
	dev_t dev;
	ino_t ino;
	char *out_path;
};

static int link_cmp(const void *a, const void *b)
{
	const struct link_key *x = a, *y = b;

	if (x->layer != y->layer)
		return x->layer < y->layer ? -1 : 1;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

static void link_free(void *node)
{
	struct link_key *k = node;

	free(k->out_path);
	free(k);
}

void layer_copy_release(struct layer_copy *c)
{
	tdestroy(c->links, link_free);
	c->links = NULL;
}

static int link_remember(struct layer_copy *c, const struct link_key *key)
{
	struct link_key *k = malloc(sizeof(*k));

	if (!k)
		return -ENOMEM;
	*k = *key;
	k->out_path = strdup(key->out_path);
	if (!k->out_path || !tsearch(k, &c->links, link_cmp)) {
		link_free(k);
		return -ENOMEM;
	}
	return 0;
}

bool layer_xattr_is_private(const struct layer_format *fmt, const char *name)
{
	size_t len = strlen(fmt->xattr_prefix);

	if (strncmp(name, fmt->xattr_prefix, len))
		return false;
	return strncmp(name + len, "overlay.", 8) != 0;
}

static int copy_xattr(int sdir, const char *sname, int ddir, const char *dname,
		      const char *attr, char *value, size_t size)
{
	int n = ovl_do_getxattr(sdir, sname, attr, value, size);

	if (n == -ENODATA)
		return 0; /* removed since it was listed */
	if (n < 0)
		return n;
	return ovl_do_setxattr(ddir, dname, attr, value, (size_t)n, 0);
}

static int copy_xattrs(struct layer_copy *c, int sdir, const char *sname,
		       int ddir, const char *dname)
{
	const size_t value_size = 65536; /* XATTR_SIZE_MAX */
	char *list = NULL, *value = NULL, *attr;
	int size, err = 0;

	size = ovl_do_listxattr(sdir, sname, NULL, 0);
	if (size <= 0)
		return size == -EOPNOTSUPP ? 0 : size;
	list = malloc((size_t)size);
	value = malloc(value_size);
	if (!list || !value)
		err = -ENOMEM;
	if (!err)
		size = ovl_do_listxattr(sdir, sname, list, (size_t)size);
	if (!err && size < 0)
		err = size;
	for (attr = list; !err && attr < list + size;
	     attr += strlen(attr) + 1) {
		if (c->drop_overlay_xattrs &&
		    layer_xattr_is_private(c->fmt, attr))
			continue;
		err = copy_xattr(sdir, sname, ddir, dname, attr, value,
				 value_size);
	}
	free(list);
	free(value);
	return err;
}

/*
 * The owner goes first, because chown clears the set-user-ID bits and
 * security.capability; the mode and the xattrs then put them back. The
 * times go last, because every other change moves them.
 */
int layer_copy_attrs(struct layer_copy *c, int sdir, const char *sname,
		     const struct stat *st, int ddir, const char *dname)
{
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	int err;

	if (fchownat(ddir, dname, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) <
	    0)
		return -errno;
	err = copy_xattrs(c, sdir, sname, ddir, dname);
	if (err)
		return err;
	/* fchmodat follows symlinks, and a symlink's mode means nothing. */
	if (!S_ISLNK(st->st_mode) &&
	    fchmodat(ddir, dname, st->st_mode & 07777, 0) < 0)
		return -errno;
	if (utimensat(ddir, dname, times, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int open_source(int sdir, const char *sname)
{
	int fd =
	    openat(sdir, sname, O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);

	/* O_NOATIME needs the file's owner or CAP_FOWNER. */
	if (fd < 0 && errno == EPERM)
		fd = openat(sdir, sname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int copy_regular(struct layer_copy *c, int sdir, const char *sname,
			const struct stat *st, int ddir, const char *dname)
{
	int src, dst, err;

	src = open_source(sdir, sname);
	if (src < 0)
		return src;
	dst =
	    openat(ddir, dname,
		   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (dst < 0) {
		err = -errno;
		close(src);
		return err;
	}
	err = ovl_copy_up_data(src, dst, st->st_size);
	if (!err)
		c->bytes += (uint64_t)st->st_size;
	close(src);
	close(dst);
	return err;
}

static int copy_symlink(int sdir, const char *sname, const struct stat *st,
			int ddir, const char *dname)
{
	size_t size = (size_t)st->st_size + 1;
	char *target = malloc(size);
	ssize_t n;
	int err = 0;

	if (!target)
		return -ENOMEM;
	n = readlinkat(sdir, sname, target, size);
	if (n < 0)
		err = -errno;
	else if ((size_t)n >= size)
		err = -EAGAIN; /* the link changed while it was read */
	if (!err) {
		target[n] = '\0';
		if (symlinkat(target, ddir, dname) < 0)
			err = -errno;
	}
	free(target);
	return err;
}

static int create_entry(struct layer_copy *c, int sdir, const char *sname,
			const struct stat *st, int ddir, const char *dname)
{
	switch (st->st_mode & S_IFMT) {
	case S_IFREG:
		return copy_regular(c, sdir, sname, st, ddir, dname);
	case S_IFLNK:
		return copy_symlink(sdir, sname, st, ddir, dname);
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		if (mknodat(ddir, dname, st->st_mode & (S_IFMT | 0777),
			    st->st_rdev) < 0)
			return -errno;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Link ddir/dname to the first copy of key's inode, if it was copied
 * before. Returns 1 when it linked. */
static int link_to_copy(struct layer_copy *c, const struct link_key *key,
			int ddir, const char *dname)
{
	struct link_key **first = tfind(key, &c->links, link_cmp);

	if (!first)
		return 0;
	if (linkat(c->out_root, (*first)->out_path, ddir, dname, 0) < 0)
		return -errno;
	return 1;
}

int layer_copy_entry(struct layer_copy *c, int layer, int sdir,
		     const char *sname, const struct stat *st, int ddir,
		     const char *dname, const char *out_path)
{
	struct link_key key = {.layer = layer,
			       .dev = st->st_dev,
			       .ino = st->st_ino,
			       .out_path = (char *)out_path};
	int err;

	if (st->st_nlink > 1) {
		err = link_to_copy(c, &key, ddir, dname);
		if (err)
			return err < 0 ? err : 0;
	}
	err = create_entry(c, sdir, sname, st, ddir, dname);
	if (!err)
		err = layer_copy_attrs(c, sdir, sname, st, ddir, dname);
	if (!err && st->st_nlink > 1)
		err = link_remember(c, &key);
	return err;
}

/* Create a metacopy file of m's size with no data, and its overlay
 * xattrs. */
static int create_metacopy(struct layer_copy *c, const struct layer_metacopy *m,
			   int ddir, const char *dname)
{
	char attr[64];
	int fd, err = 0;

	fd = openat(ddir, dname,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, m->st->st_size) < 0)
		err = -errno;
	close(fd);
	snprintf(attr, sizeof(attr), "%smetacopy", c->fmt->xattr_prefix);
	if (!err)
		err = ovl_do_setxattr(ddir, dname, attr, "", 0, 0);
	snprintf(attr, sizeof(attr), "%sredirect", c->fmt->xattr_prefix);
	if (!err && m->redirect)
		err = ovl_do_setxattr(ddir, dname, attr, m->redirect,
				      strlen(m->redirect), 0);
	return err;
}

int layer_copy_metacopy(struct layer_copy *c, const struct layer_metacopy *m,
			int ddir, const char *dname, const char *out_path)
{
	struct link_key key = {.layer = m->layer,
			       .dev = m->st->st_dev,
			       .ino = m->st->st_ino,
			       .out_path = (char *)out_path};
	int err;

	if (!c->drop_overlay_xattrs)
		return -EINVAL;
	if (m->st->st_nlink > 1) {
		err = link_to_copy(c, &key, ddir, dname);
		if (err)
			return err < 0 ? err : 0;
	}
	/* The size shown is the metacopy file's, as overlayfs shows it. */
	if (m->data_dirfd >= 0)
		err = copy_regular(c, m->data_dirfd, m->data_name, m->st, ddir,
				   dname);
	else
		err = create_metacopy(c, m, ddir, dname);
	if (!err)
		err =
		    layer_copy_attrs(c, m->dirfd, m->name, m->st, ddir, dname);
	if (!err && m->st->st_nlink > 1)
		err = link_remember(c, &key);
	return err;
}
