// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Whether an upper entry changes the lower entry it replaces: its type,
 * mode, owner, extended attributes (the overlay ones aside) and, for
 * anything but a directory, its size, mtime and content. A file that a
 * copy-up left as it was is no change. Directory times are not compared
 * because adding or removing a child changes them; the children show as
 * changes of their own.
 */
#include "diff.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#define XATTR_LIST_MAX 65536
#define XATTR_VALUE_MAX 65536

/* An O_PATH descriptor's /proc name, on which xattr calls reach the
 * entry itself even when it is a symlink. */
struct xattr_target {
	int fd;
	char path[64];
};

static int target_open(struct xattr_target *t, int dirfd, const char *name)
{
	t->fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (t->fd < 0)
		return -errno;
	snprintf(t->path, sizeof(t->path), "/proc/self/fd/%d", t->fd);
	return 0;
}

static bool is_overlay_xattr(const char *name)
{
	return !strncmp(name, "trusted.overlay.", 16) ||
	       !strncmp(name, "user.overlay.", 13);
}

/* The number of names in list that are not overlay xattrs. */
static int count_names(const char *list, ssize_t len)
{
	const char *p;
	int n = 0;

	for (p = list; p < list + len; p += strlen(p) + 1)
		n += !is_overlay_xattr(p);
	return n;
}

/* True when both hold the same non-overlay xattrs with equal values. */
static bool xattrs_equal(const struct xattr_target *a,
			 const struct xattr_target *b)
{
	char *la = malloc(XATTR_LIST_MAX), *lb = malloc(XATTR_LIST_MAX);
	char *va = malloc(XATTR_VALUE_MAX), *vb = malloc(XATTR_VALUE_MAX);
	ssize_t na, nb, sa, sb;
	const char *p;
	bool equal = false;

	if (!la || !lb || !va || !vb)
		goto out;
	na = listxattr(a->path, la, XATTR_LIST_MAX);
	nb = listxattr(b->path, lb, XATTR_LIST_MAX);
	na = na < 0 ? 0 : na; /* no xattr support: no xattrs */
	nb = nb < 0 ? 0 : nb;
	if (count_names(la, na) != count_names(lb, nb))
		goto out;
	for (p = la; p < la + na; p += strlen(p) + 1) {
		if (is_overlay_xattr(p))
			continue;
		sa = getxattr(a->path, p, va, XATTR_VALUE_MAX);
		sb = getxattr(b->path, p, vb, XATTR_VALUE_MAX);
		if (sa < 0 || sa != sb || memcmp(va, vb, (size_t)sa))
			goto out;
	}
	equal = true;
out:
	free(la);
	free(lb);
	free(va);
	free(vb);
	return equal;
}

static bool contents_equal(int dirfd_a, const char *a, int dirfd_b,
			   const char *b)
{
	int fa = openat(dirfd_a, a, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int fb = openat(dirfd_b, b, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	static __thread char ba[65536], bb[65536];
	ssize_t na = 0, nb = 0;
	bool equal = fa >= 0 && fb >= 0;

	while (equal) {
		na = read(fa, ba, sizeof(ba));
		nb = read(fb, bb, sizeof(bb));
		if (na != nb || na < 0 || memcmp(ba, bb, (size_t)na))
			equal = false;
		else if (na == 0)
			break;
	}
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return equal;
}

static bool links_equal(int dirfd_a, const char *a, int dirfd_b, const char *b)
{
	char ta[4096], tb[4096];
	ssize_t na = readlinkat(dirfd_a, a, ta, sizeof(ta));
	ssize_t nb = readlinkat(dirfd_b, b, tb, sizeof(tb));

	return na >= 0 && na == nb && !memcmp(ta, tb, (size_t)na);
}

/* Compare what stat shows; for directories only type, mode and owner. */
static bool stat_equal(const struct stat *a, const struct stat *b)
{
	if (a->st_mode != b->st_mode || a->st_uid != b->st_uid ||
	    a->st_gid != b->st_gid)
		return false;
	if (S_ISDIR(a->st_mode))
		return true;
	if (a->st_size != b->st_size || a->st_rdev != b->st_rdev ||
	    a->st_mtim.tv_sec != b->st_mtim.tv_sec ||
	    a->st_mtim.tv_nsec != b->st_mtim.tv_nsec)
		return false;
	return true;
}

bool diff_entry_changed(const struct layer_entry *upper,
			const struct lower_hit *lower)
{
	struct xattr_target a, b;
	bool equal;

	if (!stat_equal(&upper->st, &lower->st))
		return true;
	if (S_ISREG(upper->st.st_mode) &&
	    !contents_equal(upper->dirfd, upper->name, lower->dirfd,
			    lower->name))
		return true;
	if (S_ISLNK(upper->st.st_mode) &&
	    !links_equal(upper->dirfd, upper->name, lower->dirfd, lower->name))
		return true;
	if (target_open(&a, upper->dirfd, upper->name))
		return true;
	if (target_open(&b, lower->dirfd, lower->name)) {
		close(a.fd);
		return true;
	}
	equal = xattrs_equal(&a, &b);
	close(a.fd);
	close(b.fd);
	return !equal;
}
