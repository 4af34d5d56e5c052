// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * System calls on layer contents. Every path is resolved under a layer
 * directory descriptor without following symlinks, so nothing a layer
 * contains can lead lamina outside of it.
 */
#include "ovl.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/*
 * Open a directory at relpath below layer_fd. RESOLVE_BENEATH keeps
 * ".." inside the layer and RESOLVE_NO_SYMLINKS refuses any symlink on
 * the way, even one that stays inside.
 */
int ovl_open_layer_dir(int layer_fd, const char *relpath, int flags)
{
	struct open_how how = {
		.flags = O_DIRECTORY | O_CLOEXEC | flags,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
			   RESOLVE_NO_MAGICLINKS,
	};
	long fd;

	if (!relpath || !*relpath)
		relpath = ".";
	do
		fd = syscall(SYS_openat2, layer_fd, relpath, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	if (fd < 0)
		return -errno;
	return (int)fd;
}

/*
 * Take an exclusive flock on fd, trying again every 20 ms while another
 * process holds it, for up to wait_ms. Returns 0, -EWOULDBLOCK when it
 * stayed held, or another negative errno.
 */
int ovl_flock_wait(int fd, int wait_ms)
{
	struct timespec pause = {0, 20 * 1000 * 1000};
	int waited;

	for (waited = 0;; waited += 20) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK)
			return -errno;
		if (waited >= wait_ms)
			return -EWOULDBLOCK;
		nanosleep(&pause, NULL);
	}
}

/*
 * Return whether another process has an OFD read lock on fd. lamina
 * commit sets this mark so that its flock on an upper can be distinguished
 * from a mount's flock.
 */
bool ovl_commit_marked(int fd)
{
	struct flock probe = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

	return fcntl(fd, F_OFD_GETLK, &probe) == 0 && probe.l_type == F_RDLCK;
}

/* Open the directory that dirfd, maybe an O_PATH descriptor, refers to. */
int ovl_reopen_dir(int dirfd, int flags)
{
	int fd = openat(dirfd, ".", O_DIRECTORY | O_CLOEXEC | flags);

	return fd < 0 ? -errno : fd;
}

/*
 * Open a directory stream on a new descriptor for dirfd, which may be an
 * O_PATH descriptor, so that closing the stream leaves dirfd open.
 * Returns NULL with errno set on failure.
 */
DIR *ovl_opendir_at(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir;
	int err;

	if (fd < 0)
		return NULL;
	dir = fdopendir(fd);
	if (!dir) {
		err = errno;
		close(fd);
		errno = err;
	}
	return dir;
}

int ovl_do_fstatat(int dirfd, const char *name, struct stat *st)
{
	/* AT_FDCWD: name is the /proc link of a file without a name. */
	int flags = dirfd == AT_FDCWD ? 0 : AT_SYMLINK_NOFOLLOW;

	if (fstatat(dirfd, name, st, flags) < 0)
		return -errno;
	return 0;
}

/*
 * xattr calls have no *at() form on this kernel's C library, so they go
 * through the directory descriptor's /proc link; the l*xattr() calls do
 * not follow the final name, and the name contains no slash.
 */
static int proc_path(char *buf, size_t size, int dirfd, const char *name)
{
	int n;

	if (dirfd == AT_FDCWD) /* name is an O_TMPFILE's /proc link */
		n = snprintf(buf, size, "%s", name);
	else
		n = snprintf(buf, size, "/proc/self/fd/%d/%s", dirfd, name);

	return n < (int)size ? 0 : -ENAMETOOLONG;
}

/*
 * getxattrat(2), Linux 6.13 and later, reads an attribute relative to
 * a directory descriptor without the walk through /proc. The C library
 * has no wrapper yet, and the number is the same on every architecture
 * but alpha, which lamina does not build for.
 */
#define LAMINA_SYS_getxattrat 464

struct lamina_xattr_args {
	uint64_t value;
	uint32_t size;
	uint32_t flags;
};

static atomic_bool no_getxattrat;

static int getxattr_at(int dirfd, const char *name, const char *attr,
		       void *buf, size_t size)
{
	struct lamina_xattr_args args = {
		.value = (uintptr_t)buf,
		.size = (uint32_t)size,
	};
	long n;

	if (atomic_load(&no_getxattrat))
		return -ENOSYS;
	n = syscall(LAMINA_SYS_getxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW,
		    attr, &args, sizeof(args));
	if (n < 0 && errno == ENOSYS) {
		atomic_store(&no_getxattrat, true);
		return -ENOSYS;
	}
	return n < 0 ? -errno : (int)n;
}

int ovl_do_getxattr(int dirfd, const char *name, const char *attr,
		    void *buf, size_t size)
{
	char path[OVL_PATH_MAX];
	ssize_t n;
	int err;

	/* An empty name, for dirfd itself, goes through /proc: the *at
	 * calls refuse AT_EMPTY_PATH on an O_PATH descriptor. */
	if (dirfd != AT_FDCWD && name[0]) {
		err = getxattr_at(dirfd, name, attr, buf, size);
		if (err != -ENOSYS)
			return err;
	}
	err = proc_path(path, sizeof(path), dirfd, name);
	if (err)
		return err;
	n = dirfd == AT_FDCWD ? getxattr(path, attr, buf, size)
			       : lgetxattr(path, attr, buf, size);
	return n < 0 ? -errno : (int)n;
}

int ovl_do_setxattr(int dirfd, const char *name, const char *attr,
		    const void *buf, size_t size, int flags)
{
	char path[OVL_PATH_MAX];
	int err = proc_path(path, sizeof(path), dirfd, name);

	if (err)
		return err;
	if ((dirfd == AT_FDCWD ? setxattr : lsetxattr)(path, attr, buf, size,
						      flags) < 0)
		return -errno;
	return 0;
}

int ovl_do_removexattr(int dirfd, const char *name, const char *attr)
{
	char path[OVL_PATH_MAX];
	int err = proc_path(path, sizeof(path), dirfd, name);

	if (err)
		return err;
	if ((dirfd == AT_FDCWD ? removexattr : lremovexattr)(path, attr) < 0)
		return -errno;
	return 0;
}

/* listxattrat(2), from the same kernel release and family. */
#define LAMINA_SYS_listxattrat 465

static atomic_bool no_listxattrat;

static int listxattr_at(int dirfd, const char *name, char *buf, size_t size)
{
	long n;

	if (atomic_load(&no_listxattrat))
		return -ENOSYS;
	n = syscall(LAMINA_SYS_listxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW,
		    buf, size);
	if (n < 0 && errno == ENOSYS) {
		atomic_store(&no_listxattrat, true);
		return -ENOSYS;
	}
	return n < 0 ? -errno : (int)n;
}

int ovl_do_listxattr(int dirfd, const char *name, char *buf, size_t size)
{
	char path[OVL_PATH_MAX];
	ssize_t n;
	int err;

	if (dirfd != AT_FDCWD && name[0]) {
		err = listxattr_at(dirfd, name, buf, size);
		if (err != -ENOSYS)
			return err;
	}
	err = proc_path(path, sizeof(path), dirfd, name);
	if (err)
		return err;
	n = dirfd == AT_FDCWD ? listxattr(path, buf, size)
			       : llistxattr(path, buf, size);
	return n < 0 ? -errno : (int)n;
}

int ovl_do_rename(int olddir, const char *oldname, int newdir,
		  const char *newname, unsigned int flags)
{
	if (renameat2(olddir, oldname, newdir, newname, flags) < 0)
		return -errno;
	return 0;
}

static int remove_children(int dirfd)
{
	DIR *dir = fdopendir(dirfd);
	struct dirent *d;
	int err = 0;

	if (!dir) {
		err = -errno;
		close(dirfd);
		return err;
	}
	while ((d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		err = ovl_remove_tree(dirfd, d->d_name);
		if (err)
			break;
	}
	closedir(dir);
	return err;
}

/* Remove name below dirfd and, for a directory, all it contains. */
int ovl_remove_tree(int dirfd, const char *name)
{
	int fd;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	fd = openat(dirfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	fd = remove_children(fd);
	if (fd < 0)
		return fd;
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

/* A fresh name for a staging entry in workdir/work. */
void ovl_tmpname(struct ovl_fs *fs, char *buf, size_t size)
{
	uint64_t n = atomic_fetch_add(&fs->tmp_counter, 1);

	snprintf(buf, size, "#%llx.%d", (unsigned long long)n, (int)getpid());
}

/* The kernel's whiteout: a character device with device number 0/0. */
bool ovl_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

void ovl_xattr_name(const struct ovl_fs *fs, char *buf, size_t size,
		    const char *suffix)
{
	snprintf(buf, size, "%s%s", fs->xattr_prefix, suffix);
}

static int opaque_value(struct ovl_fs *fs, int dirfd, const char *name)
{
	char attr[64], value[4];
	int n;

	ovl_xattr_name(fs, attr, sizeof(attr), "opaque");
	n = ovl_do_getxattr(dirfd, name, attr, value, sizeof(value));
	if (n != 1)
		return 0;
	return value[0];
}

/* opaque="y" marks a directory that hides all lower entries. */
bool ovl_check_opaque(struct ovl_fs *fs, int dirfd, const char *name)
{
	return opaque_value(fs, dirfd, name) == 'y';
}

/* Whether the upper entry dirfd/name records the lower file it came from. */
bool ovl_has_origin(struct ovl_fs *fs, int dirfd, const char *name)
{
	char attr[64];

	ovl_xattr_name(fs, attr, sizeof(attr), "origin");
	return ovl_do_getxattr(dirfd, name, attr, NULL, 0) >= 0;
}

/* opaque="x" marks a directory that may hold xattr whiteouts. */
bool ovl_check_xwhiteout_dir(struct ovl_fs *fs, int dirfd, const char *name)
{
	return opaque_value(fs, dirfd, name) == 'x';
}

/*
 * Mark the upper directory dirfd impure, as overlayfs does before an
 * entry with an origin enters it by copy-up or rename. A readdir there
 * then looks up origins to report each entry's st_ino. An upper layer
 * without xattrs keeps no origins, so it needs no mark.
 */
int ovl_set_impure(struct ovl_fs *fs, int dirfd)
{
	char attr[64];
	int err;

	ovl_xattr_name(fs, attr, sizeof(attr), "impure");
	if (ovl_do_getxattr(dirfd, ".", attr, NULL, 0) >= 0)
		return 0;
	err = ovl_do_setxattr(dirfd, ".", attr, "y", 1, 0);
	return err == -EOPNOTSUPP ? 0 : err;
}

/* A zero-size regular file carrying the overlay.whiteout xattr. */
bool ovl_check_xwhiteout(struct ovl_fs *fs, int dirfd, const char *name,
			 const struct stat *st)
{
	char attr[64];

	if (!S_ISREG(st->st_mode) || st->st_size != 0)
		return false;
	ovl_xattr_name(fs, attr, sizeof(attr), "whiteout");
	return ovl_do_getxattr(dirfd, name, attr, NULL, 0) >= 0;
}
