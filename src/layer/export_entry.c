// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * One file of a layer as one tar entry. The entry carries the mode, the
 * numeric owner, the mtime with nanoseconds, the xattrs other than
 * overlayfs's, and the symlink target or device number. Hard links
 * become tar hard links, and a regular file's holes a sparse entry.
 */
#include "export.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

/* The archive's own message, for errors that libarchive reports. */
static int archive_fail(struct export_ctx *x, const char *tarpath)
{
	char why[512];

	oci_error_set(x->e, "writing tar entry '%s' failed: %s", tarpath,
		      oci_archive_error(x->a, why, sizeof(why)));
	return -EIO;
}

static int add_xattrs(struct archive_entry *entry, int dirfd, const char *name)
{
	char path[64], *names = NULL, *value = NULL, *p;
	ssize_t len, vlen;
	int fd, err = 0;

	/* The xattr calls follow /proc/self/fd/N to the entry itself, which
	 * may be a symlink: the O_PATH open did not follow it. */
	fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	len = listxattr(path, NULL, 0);
	if (len <= 0) {
		err = len < 0 && errno != ENOTSUP ? -errno : 0;
		goto out;
	}
	names = malloc((size_t)len);
	len = names ? listxattr(path, names, (size_t)len) : -1;
	if (len < 0) {
		err = names ? -errno : -ENOMEM;
		goto out;
	}
	for (p = names; !err && p < names + len; p += strlen(p) + 1) {
		if (oci_xattr_is_overlay(p))
			continue;
		vlen = getxattr(path, p, NULL, 0);
		free(value);
		value = vlen >= 0 ? malloc((size_t)vlen + 1) : NULL;
		if (vlen < 0 || !value) {
			err = vlen < 0 ? -errno : -ENOMEM;
			break;
		}
		vlen = getxattr(path, p, value, (size_t)vlen);
		if (vlen < 0)
			err = -errno;
		else
			archive_entry_xattr_add_entry(entry, p, value,
						      (size_t)vlen);
	}
out:
	free(value);
	free(names);
	close(fd);
	return err;
}

/*
 * Record the data regions of fd in entry when the file has holes, so
 * that the tar keeps it sparse. A file without holes gets no sparse map.
 */
static int add_sparse_map(struct archive_entry *entry, int fd, off_t size)
{
	off_t data, hole = lseek(fd, 0, SEEK_HOLE);

	if (hole < 0 || hole >= size)
		return 0;
	for (data = 0; data < size; data = hole) {
		data = lseek(fd, data, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break;
		if (data < 0)
			return -errno;
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		archive_entry_sparse_add_entry(entry, data, hole - data);
	}
	/* A trailing hole still needs the real size at the end of the map. */
	archive_entry_sparse_add_entry(entry, size, 0);
	return 0;
}

/* Write len bytes of zeros: the pax writer drops those in a hole. */
static int write_zeros(struct export_ctx *x, off_t len, const char *tarpath)
{
	static const char zeros[EXPORT_BUF_SIZE];
	size_t chunk;

	for (; len > 0; len -= (off_t)chunk) {
		chunk =
		    len < (off_t)sizeof(zeros) ? (size_t)len : sizeof(zeros);
		if (archive_write_data(x->a, zeros, chunk) < 0)
			return archive_fail(x, tarpath);
	}
	return 0;
}

static int write_region(struct export_ctx *x, int fd, off_t from, off_t to,
			const char *tarpath)
{
	char *buf = x->buf;
	ssize_t n;

	while (from < to) {
		size_t want = to - from < EXPORT_BUF_SIZE ? (size_t)(to - from)
							  : EXPORT_BUF_SIZE;

		n = pread(fd, buf, want, from);
		if (n < 0)
			return -errno;
		if (n == 0) {
			oci_error_set(
			    x->e,
			    "file '%s' shrank while it was read; export the layer again when nothing writes to it",
			    tarpath);
			return -EIO;
		}
		if (archive_write_data(x->a, buf, (size_t)n) < 0)
			return archive_fail(x, tarpath);
		from += n;
	}
	return 0;
}

/* Write the data of fd: its data regions as read, its holes as zeros. */
static int write_data(struct export_ctx *x, int fd, off_t size,
		      const char *tarpath)
{
	off_t pos = 0, data, hole;
	int err = 0;

	while (!err && pos < size) {
		data = lseek(fd, pos, SEEK_DATA);
		if (data < 0 && errno != ENXIO)
			return -errno;
		if (data < 0 || data > size)
			data = size;
		hole = data < size ? lseek(fd, data, SEEK_HOLE) : size;
		if (hole < 0)
			return -errno;
		if (hole > size)
			hole = size;
		err = write_zeros(x, data - pos, tarpath);
		if (!err)
			err = write_region(x, fd, data, hole, tarpath);
		pos = hole;
	}
	return err;
}

/* Fill entry from st and the file at dirfd/name, all but sparse data. */
static int fill_entry(struct archive_entry *entry, const char *tarpath,
		      int dirfd, const char *name, const struct stat *st)
{
	char target[PATH_MAX];
	ssize_t n;

	archive_entry_copy_pathname(entry, tarpath);
	archive_entry_copy_stat(entry, st);
	/* Reading the layer changes atimes, and ctimes cannot be restored:
	 * only the mtime makes equal trees give equal tars. */
	archive_entry_unset_atime(entry);
	archive_entry_unset_ctime(entry);
	archive_entry_unset_birthtime(entry);
	if (!S_ISREG(st->st_mode))
		archive_entry_set_size(entry, 0);
	if (S_ISLNK(st->st_mode)) {
		n = readlinkat(dirfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = '\0';
		archive_entry_copy_symlink(entry, target);
	}
	return add_xattrs(entry, dirfd, name);
}

int export_file(struct export_ctx *x, const char *tarpath, int dirfd,
		const char *name, const struct stat *st, int datafd)
{
	struct archive_entry *entry = archive_entry_new(), *spare = NULL;
	struct stat data_st;
	int fd = -1, err;

	if (!entry)
		return -ENOMEM;
	err = fill_entry(entry, tarpath, dirfd, name, st);
	if (!err && S_ISREG(st->st_mode)) {
		fd = datafd >= 0 ? fcntl(datafd, F_DUPFD_CLOEXEC, 0)
				 : openat(dirfd, name,
					  O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &data_st) < 0)
			err = -errno;
		else
			archive_entry_set_size(entry, data_st.st_size);
	}
	if (!err)
		archive_entry_linkify(x->links, &entry, &spare);
	/* A later name of a hard link carries no data of its own. */
	if (!err && fd >= 0 && !archive_entry_hardlink(entry))
		err = add_sparse_map(entry, fd, data_st.st_size);
	/* The pax writer returns ARCHIVE_WARN for a name that it writes with
	 * hdrcharset=BINARY, bytes intact, and ARCHIVE_FATAL for failed
	 * output. */
	if (!err && archive_write_header(x->a, entry) < ARCHIVE_WARN)
		err = archive_fail(x, tarpath);
	if (!err && fd >= 0 && !archive_entry_hardlink(entry))
		err = write_data(x, fd, data_st.st_size, tarpath);
	if (fd >= 0)
		close(fd);
	archive_entry_free(entry);
	archive_entry_free(spare);
	progress_add(x->progress, 1);
	return err;
}

int export_marker(struct export_ctx *x, const char *tarpath,
		  const struct stat *st)
{
	struct archive_entry *entry = archive_entry_new();
	int err = 0;

	if (!entry)
		return -ENOMEM;
	archive_entry_copy_pathname(entry, tarpath);
	archive_entry_set_filetype(entry, AE_IFREG);
	archive_entry_set_perm(entry, 0644);
	archive_entry_set_uid(entry, st->st_uid);
	archive_entry_set_gid(entry, st->st_gid);
	archive_entry_set_mtime(entry, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
	archive_entry_set_size(entry, 0);
	if (archive_write_header(x->a, entry) < ARCHIVE_WARN)
		err = archive_fail(x, tarpath);
	archive_entry_free(entry);
	progress_add(x->progress, 1);
	return err;
}
