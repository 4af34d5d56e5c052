// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * An OCI layer tar unpacked into an overlayfs layer. libarchive writes
 * the files, with owners, modes, times, hard links and holes, and rejects
 * entries that would land outside the current directory. The
 * paths are also checked here first, so that every rejection names its
 * entry.
 * Whiteout and opaque entries are collected and applied at the end.
 */
#include "import.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define IMPORT_PATH_MAX 4096

struct import_ctx {
	struct archive *in, *disk;
	const struct oci_import_options *opts;
	struct oci_error *e;
	struct import_marks marks;
	struct progress *progress;
	long long read_bytes;	    /* input consumed, for the progress bar */
	struct archive_entry *root; /* the "./" entry, applied last */
};

/* The disk writer: secure extraction of everything an entry carries but
 * its xattrs, which set_xattrs() writes. */
static struct archive *import_disk_writer(void)
{
	struct archive *disk = archive_write_disk_new();

	if (!disk)
		return NULL;
	archive_write_disk_set_options(
	    disk, ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM |
		      ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_ACL |
		      ARCHIVE_EXTRACT_SECURE_SYMLINKS |
		      ARCHIVE_EXTRACT_SECURE_NODOTDOT |
		      ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS);
	return disk;
}

static void import_progress(struct import_ctx *x)
{
	long long now = archive_filter_bytes(x->in, -1);

	if (now > x->read_bytes) {
		progress_add(x->progress, (uint64_t)(now - x->read_bytes));
		x->read_bytes = now;
	}
}

/* Drop overlayfs's xattrs: in a tar they could forge redirects. */
static void strip_overlay_xattrs(struct archive_entry *entry)
{
	struct archive_entry *keep = archive_entry_new();
	const char *name;
	const void *value;
	size_t size;

	if (!keep)
		return;
	archive_entry_xattr_reset(entry);
	while (archive_entry_xattr_next(entry, &name, &value, &size) ==
	       ARCHIVE_OK)
		if (!oci_xattr_is_overlay(name))
			archive_entry_xattr_add_entry(keep, name, value, size);
	archive_entry_xattr_clear(entry);
	archive_entry_xattr_reset(keep);
	while (archive_entry_xattr_next(keep, &name, &value, &size) ==
	       ARCHIVE_OK)
		archive_entry_xattr_add_entry(entry, name, value, size);
	archive_entry_free(keep);
}

/* Check the hard link target of entry, if any, and clean it in place. */
static int check_hardlink(struct import_ctx *x, struct archive_entry *entry,
			  const char *path)
{
	const char *target = archive_entry_hardlink(entry);
	char clean[IMPORT_PATH_MAX];
	struct oci_error ignored;

	if (!target)
		return 0;
	if (oci_clean_path(target, clean, sizeof(clean), &ignored) ||
	    !clean[0] || oci_name_kind(clean) != OCI_NAME_PLAIN) {
		oci_error_set(
		    x->e,
		    "tar entry '%s' is a hard link to '%s', outside the layer or to a whiteout; the archive is unsafe, so nothing was imported",
		    path, target);
		return -EINVAL;
	}
	archive_entry_copy_hardlink(entry, clean);
	return 0;
}

static int copy_data(struct import_ctx *x, const char *path)
{
	char why[512];
	const void *buf;
	size_t size;
	la_int64_t offset;
	int rc;

	while (!*x->opts->stop) {
		rc = archive_read_data_block(x->in, &buf, &size, &offset);
		if (rc == ARCHIVE_EOF)
			return 0;
		if (rc < ARCHIVE_WARN) {
			oci_error_set(
			    x->e,
			    "reading the data of tar entry '%s' failed: %s",
			    path, archive_error_string(x->in));
			return -EIO;
		}
		/* The disk writer reports a failed write(2) as ARCHIVE_WARN,
		 * and then the file lacks this block. */
		if (archive_write_data_block(x->disk, buf, size, offset) !=
		    ARCHIVE_OK) {
			oci_error_set(
			    x->e, "writing tar entry '%s' failed: %s", path,
			    oci_archive_error(x->disk, why, sizeof(why)));
			return -EIO;
		}
		import_progress(x);
	}
	return -EINTR;
}

static void warn_entry(struct archive *a, const char *path)
{
	char why[512];

	fprintf(stderr, "lamina: warning: tar entry '%s': %s\n", path,
		oci_archive_error(a, why, sizeof(why)));
}

/*
 * Whether a status of the disk writer means that the layer lacks part of
 * the entry. libarchive reports a failed metadata step (owner, mode,
 * times, ACLs) as ARCHIVE_WARN, and the import warns and goes on. The
 * same status with ENOSPC, EDQUOT or EIO means that the filesystem could
 * not store what the tar holds, so the import fails.
 */
static bool disk_write_failed(struct archive *disk, int rc)
{
	int err = archive_errno(disk);

	if (rc < ARCHIVE_WARN)
		return true;
	return rc == ARCHIVE_WARN &&
	       (err == ENOSPC || err == EDQUOT || err == EIO);
}

/*
 * Set an xattr on file. Without root, a user.* xattr needs write
 * permission, which the tar's mode may have taken away already: the
 * owner gets it back for the moment.
 */
static int set_xattr_as_owner(const char *file, const char *name,
			      const void *value, size_t size)
{
	struct stat st;
	int err;

	if (lsetxattr(file, name, value, size, 0) == 0)
		return 0;
	err = errno;
	if (err != EACCES || lstat(file, &st) < 0 || st.st_uid != geteuid() ||
	    S_ISLNK(st.st_mode) ||
	    chmod(file, (st.st_mode & 07777) | S_IWUSR) < 0) {
		errno = err;
		return -1;
	}
	err = lsetxattr(file, name, value, size, 0) < 0 ? errno : 0;
	chmod(file, st.st_mode & 07777);
	errno = err;
	return err ? -1 : 0;
}

/*
 * Set the xattrs of entry on the file unpacked at clean ("" is the root).
 * libarchive 3.6.2 reports a failed xattr without its errno, so the
 * import sets them itself. It warns where the filesystem or the caller's
 * privileges do not allow an xattr, as libarchive does for an owner or a
 * mode, and fails on ENOSPC, EDQUOT or EIO.
 */
static int set_xattrs(struct import_ctx *x, struct archive_entry *entry,
		      const char *path, const char *clean)
{
	const char *name;
	const void *value;
	size_t size;

	/* As in libarchive: a hard link with no data of its own does not
	 * change the metadata of the file it names. */
	if (archive_entry_hardlink(entry) && archive_entry_size(entry) <= 0)
		return 0;
	archive_entry_xattr_reset(entry);
	while (archive_entry_xattr_next(entry, &name, &value, &size) ==
	       ARCHIVE_OK) {
		if (set_xattr_as_owner(clean[0] ? clean : ".", name, value,
				       size) == 0)
			continue;
		if (errno == ENOSPC || errno == EDQUOT || errno == EIO) {
			oci_error_set(
			    x->e,
			    "setting xattr %s of tar entry '%s' failed: %s",
			    name, path, strerror(errno));
			return -errno;
		}
		fprintf(
		    stderr,
		    "lamina: warning: tar entry '%s': setting xattr %s failed: %s\n",
		    path, name, strerror(errno));
	}
	return 0;
}

/*
 * Remove the ACLs that file got from its directory's default ACL when it
 * was made, since an entry gets only the ACLs that the tar holds for it.
 * set_xattrs() writes those kept as xattrs, and the disk writer sets
 * libarchive's own ACL records, which stay.
 */
static void drop_inherited_acls(struct archive_entry *entry, const char *path,
				const char *file)
{
	static const struct {
		const char *xattr;
		int type;
	} acls[] = {
	    {"system.posix_acl_access", ARCHIVE_ENTRY_ACL_TYPE_ACCESS},
	    {"system.posix_acl_default", ARCHIVE_ENTRY_ACL_TYPE_DEFAULT},
	};
	size_t i;

	if (entry && (archive_entry_filetype(entry) == AE_IFLNK ||
		      archive_entry_hardlink(entry)))
		return;
	for (i = 0; i < sizeof(acls) / sizeof(acls[0]); i++) {
		if (entry && archive_entry_acl_count(entry, acls[i].type) > 0)
			continue;
		if (lremovexattr(file, acls[i].xattr) == 0 ||
		    errno == ENODATA || errno == EOPNOTSUPP)
			continue;
		fprintf(
		    stderr,
		    "lamina: warning: tar entry '%s': removing the inherited %s failed: %s\n",
		    path, acls[i].xattr, strerror(errno));
	}
}

/* Unpack one ordinary entry at its clean path ("." for the root). */
static int write_entry(struct import_ctx *x, struct archive_entry *entry,
		       const char *path, const char *clean)
{
	char why[512];
	int rc, err;

	err = check_hardlink(x, entry, path);
	if (err)
		return err;
	archive_entry_copy_pathname(entry, clean[0] ? clean : ".");
	strip_overlay_xattrs(entry);
	rc = archive_write_header(x->disk, entry);
	if (disk_write_failed(x->disk, rc)) {
		oci_error_set(x->e, "cannot unpack tar entry '%s': %s", path,
			      oci_archive_error(x->disk, why, sizeof(why)));
		return -EINVAL;
	}
	if (rc == ARCHIVE_WARN)
		warn_entry(x->disk, path);
	if (archive_entry_size(entry) > 0) {
		err = copy_data(x, path);
		if (err)
			return err;
	}
	rc = archive_write_finish_entry(x->disk);
	if (disk_write_failed(x->disk, rc)) {
		oci_error_set(x->e, "cannot finish tar entry '%s': %s", path,
			      oci_archive_error(x->disk, why, sizeof(why)));
		return -EIO;
	}
	if (rc == ARCHIVE_WARN)
		warn_entry(x->disk, path);
	drop_inherited_acls(entry, path, clean[0] ? clean : ".");
	return set_xattrs(x, entry, path, clean);
}

static int import_entry(struct import_ctx *x, struct archive_entry *entry)
{
	const char *path = archive_entry_pathname(entry);
	char clean[IMPORT_PATH_MAX];
	enum oci_name_kind kind;
	int err;

	if (!path) {
		oci_error_set(
		    x->e,
		    "a tar entry has no readable name; the archive is damaged");
		return -EINVAL;
	}
	err = oci_clean_path(path, clean, sizeof(clean), x->e);
	if (err)
		return err;
	kind = oci_name_kind(clean);
	if (!clean[0] && archive_entry_filetype(entry) == AE_IFDIR) {
		archive_entry_free(x->root);
		x->root = archive_entry_clone(entry);
		return x->root ? 0 : -ENOMEM;
	}
	if (kind == OCI_NAME_PLAIN)
		return write_entry(x, entry, path, clean);
	if (archive_entry_filetype(entry) == AE_IFDIR) {
		oci_error_set(
		    x->e,
		    "tar entry '%s' is a directory with a whiteout name; the archive is invalid",
		    path);
		return -EINVAL;
	}
	return import_marks_add(&x->marks, clean, kind);
}

static int import_entries(struct import_ctx *x)
{
	struct archive_entry *entry;
	int rc, err = 0;

	while (!err) {
		if (*x->opts->stop)
			return -EINTR;
		rc = archive_read_next_header(x->in, &entry);
		if (rc == ARCHIVE_EOF)
			break;
		/* The reader returns ARCHIVE_WARN for every name that does not
		 * convert to the locale's charset, and keeps the name's bytes,
		 * which is what the layer needs. */
		if (rc < ARCHIVE_WARN) {
			oci_error_set(x->e, "reading the tar failed: %s",
				      archive_error_string(x->in));
			return -EIO;
		}
		err = import_entry(x, entry);
		import_progress(x);
	}
	return err;
}

/*
 * Give the layer's root the "./" entry's owner, mode, xattrs and mtime.
 * libarchive does not restore the times of ".", and every entry created
 * in the root changes its mtime, so this comes after everything else.
 */
static int apply_root(struct import_ctx *x)
{
	struct archive_entry *r = x->root;
	struct timespec times[2] = {{.tv_nsec = UTIME_OMIT},
				    {.tv_nsec = UTIME_OMIT}};
	const char *name;
	const void *value;
	size_t size;

	if (!r)
		return 0;
	strip_overlay_xattrs(r);
	archive_entry_xattr_reset(r);
	while (archive_entry_xattr_next(r, &name, &value, &size) == ARCHIVE_OK)
		if (lsetxattr(".", name, value, size, 0) < 0)
			return -errno;
	if (archive_entry_mtime_is_set(r)) {
		times[1].tv_sec = archive_entry_mtime(r);
		times[1].tv_nsec = archive_entry_mtime_nsec(r);
	}
	if (archive_entry_atime_is_set(r)) {
		times[0].tv_sec = archive_entry_atime(r);
		times[0].tv_nsec = archive_entry_atime_nsec(r);
	}
	if (lchown(".", (uid_t)archive_entry_uid(r),
		   (gid_t)archive_entry_gid(r)) < 0 ||
	    chmod(".", archive_entry_perm(r)) < 0 ||
	    utimensat(AT_FDCWD, ".", times, 0) < 0)
		return -errno;
	return 0;
}

int oci_import(struct archive *a, const struct oci_import_options *opts,
	       struct oci_error *e)
{
	struct import_ctx x = {.in = a, .opts = opts, .e = e};
	char why[512];
	int err;

	x.disk = import_disk_writer();
	if (!x.disk)
		return -ENOMEM;
	x.progress = progress_start("import", opts->in_size);
	/* The new layer's root may have inherited ACLs from its parent. */
	drop_inherited_acls(NULL, "./", ".");
	err = import_entries(&x);
	/* Before the close: it restores directory times that whiteouts
	 * created inside them would change. */
	if (!err)
		err = import_marks_apply(&x.marks, opts->userxattr, e);
	if (archive_write_close(x.disk) != ARCHIVE_OK && !err) {
		oci_error_set(e, "cannot set the final modes and times: %s",
			      oci_archive_error(x.disk, why, sizeof(why)));
		err = -EIO;
	}
	if (!err) {
		err = apply_root(&x);
		if (err)
			oci_error_set(
			    e,
			    "cannot set the owner, mode, xattrs or times of the layer's root: %s",
			    strerror(-err));
	}
	archive_entry_free(x.root);
	progress_end(x.progress);
	archive_write_free(x.disk);
	import_marks_free(&x.marks);
	return err;
}
