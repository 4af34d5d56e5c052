// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Mount-time setup: open the layers, check every reason the mount would
 * fail or misbehave, prepare workdir/work, and make the root node. Each
 * failure fills an ovl_error with the path involved and the fix.
 */
#include "ovl.h"
#include "../common/log.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <signal.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef FS_IOC_GETFSUUID
struct fsuuid2 {
	uint8_t len;
	uint8_t uuid[16];
};
#define FS_IOC_GETFSUUID _IOR(0x15, 0, struct fsuuid2)
#endif

/* Resolve a layer path to an absolute one and check it is a directory. */
static int layer_resolve(const char *key, const char *path, char **out,
			 struct ovl_error *e)
{
	char real[PATH_MAX];
	struct stat st;

	if (!realpath(path, real) || stat(real, &st) < 0) {
		int err = -errno;

		ovl_error_set(e, "%s %s: %s; create the directory or correct the path",
			      key, path, strerror(-err));
		return err;
	}
	if (!S_ISDIR(st.st_mode)) {
		ovl_error_set(e, "%s %s: not a directory; give a directory",
			      key, path);
		return -ENOTDIR;
	}
	*out = strdup(real);
	return *out ? 0 : -ENOMEM;
}

static void layer_read_uuid(struct ovl_layer *layer)
{
	struct fsuuid2 u = {.len = 16};
	int fd = openat(layer->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (ioctl(fd, FS_IOC_GETFSUUID, &u) == 0 && u.len == 16) {
		memcpy(layer->uuid, u.uuid, 16);
		layer->has_uuid = true;
	}
	close(fd);
}

/*
 * Open a private, detached copy of the mount at path, without the mounts
 * below it. Paths resolved in it then stay on the layer's filesystem, as
 * in overlayfs, which sees under a mount point the directory beneath it.
 * The copy also keeps lamina from looking into its own mount when the
 * mount point lies inside a layer. Without the privilege for that, the
 * directory itself is opened.
 */
static int open_detached(const char *path, bool *cloned)
{
	long fd = syscall(SYS_open_tree, AT_FDCWD, path,
			  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);

	*cloned = fd >= 0;
	if (fd >= 0)
		return (int)fd;
	fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : (int)fd;
}

/*
 * Make a lower layer's private mount read-only and without access-time
 * updates: nothing lamina or the kernel does through it, passthrough
 * reads included, can then change the layer, its atimes either. Only
 * for a private copy: without the privilege to clone, the layer stays
 * as it is.
 */
static void protect_lower(struct ovl_layer *layer)
{
	struct mount_attr attr = {
		.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME,
		.attr_clr = MOUNT_ATTR__ATIME,
	};

	if (syscall(SYS_mount_setattr, layer->fd, "", AT_EMPTY_PATH, &attr,
		    sizeof(attr)) < 0)
		log_warn("lowerdir %s: making its private mount read-only failed: %s",
			 layer->path, strerror(errno));
}

/* Open path below the detached mount of base, whose path is base_path. */
static int open_below(int base, const char *base_path, const char *path,
		      int flags)
{
	size_t n = strlen(base_path);
	const char *rel = path + n;

	if (n == 1) /* base is "/" */
		rel = path;
	while (*rel == '/')
		rel++;
	return ovl_open_layer_dir(base, rel, flags);
}

/*
 * ext2/3/4 and XFS file handles of types 1 and 2 begin with the inode
 * number, so an origin's st_ino can be read without opening it.
 */
static void layer_read_fstype(struct ovl_layer *layer)
{
	struct statfs sfs;

	if (fstatfs(layer->fd, &sfs) < 0)
		return;
	layer->fid_has_ino = sfs.f_type == EXT4_SUPER_MAGIC ||
			     sfs.f_type == XFS_SUPER_MAGIC;
	/* open_by_handle_at() takes no O_PATH descriptor. */
	if (!layer->fid_has_ino)
		layer->handle_fd = openat(layer->fd, ".",
					  O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int layer_open(struct ovl_layer *layer, const char *key,
		      const char *path, struct ovl_error *e)
{
	bool cloned;
	struct stat st;
	int err = layer_resolve(key, path, &layer->path, e);

	if (err)
		return err;
	layer->fd = open_detached(layer->path, &cloned);
	/* Only a private copy may change: never the mount of the caller. */
	if (cloned)
		protect_lower(layer);
	if (layer->fd < 0 || fstat(layer->fd, &st) < 0) {
		err = -errno;
		ovl_error_set(e, "%s %s: %s", key, path, strerror(-err));
		return err;
	}
	layer->dev = st.st_dev;
	layer_read_uuid(layer);
	layer_read_fstype(layer);
	return 0;
}

/* The deepest directory that contains both a and b, canonical paths. */
static char *common_dir(const char *a, const char *b)
{
	size_t i, end = 0;
	char *dir;

	for (i = 0; a[i] && a[i] == b[i]; i++)
		if (a[i] == '/')
			end = i;
	if ((!a[i] || a[i] == '/') && (!b[i] || b[i] == '/'))
		end = i;
	dir = strndup(a, end ? end : 1);
	return dir;
}

/*
 * Lock the upper directory, or note in upper_busy that another lamina
 * mount holds it. The daemon of a mount that umount(8) has just removed
 * holds the lock until it has exited, some milliseconds later, so a held
 * lock is tried again for up to a second. lamina commit, which sets up
 * the engine while it holds the lock itself, sets upper_locked.
 */
static void lock_upper(struct ovl_fs *fs)
{
	if (fs->upper_locked)
		return;
	fs->upper_lock_fd = openat(fs->upper->fd, ".",
				   O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fs->upper_busy =
	    fs->upper_lock_fd >= 0 &&
	    ovl_flock_wait(fs->upper_lock_fd, 1000) == -EWOULDBLOCK;
	fs->upper_committing =
	    fs->upper_busy && ovl_commit_marked(fs->upper_lock_fd);
}

/*
 * Two mounts of one upper directory, each with its own workdir, give
 * undefined results. With the index on they also break hard links: each
 * mount copies a hard-linked lower file into its own index, so its names
 * end up as one inode with different contents. overlayfs (Linux 6.18)
 * rejects a second mount of an upper with index=on (EBUSY) and only
 * warns with index=off. lamina does the same, and ovl_check_report()
 * prints the warning.
 */
static int check_upper_shared(struct ovl_fs *fs, struct ovl_error *e)
{
	const char *kernel = ovl_upper_kernel_mount(fs);

	/* The commit swaps the upper for an empty one under any mount. */
	if (fs->upper_committing) {
		ovl_error_set(
		    e,
		    "upperdir %s is being committed by lamina commit; wait for it to end, then mount with the lowerdir= value that it prints",
		    fs->upper->path);
		return ovl_error_continue(e, -EBUSY);
	}
	if ((!fs->upper_busy && !kernel) || !fs->config.index)
		return 0;
	if (kernel)
		ovl_error_set(
		    e,
		    "upperdir %s is in use by the overlay mount on %s, and with the index on, two mounts of one upper break its hard links; unmount %s first, give this mount its own upperdir, or mount with -o index=off to share it anyway",
		    fs->upper->path, kernel, kernel);
	else
		ovl_error_set(
		    e,
		    "upperdir %s is in use by another lamina mount, and with the index on, two mounts of one upper break its hard links; give this mount its own upperdir, or mount with -o index=off to share it anyway",
		    fs->upper->path);
	return ovl_error_continue(e, -EBUSY);
}

const char *ovl_upper_kernel_mount(const struct ovl_fs *fs)
{
	const char *kernel = fs->upper_kernel_mount;

	if (kernel && fs->work_kernel_mount &&
	    !strcmp(kernel, fs->work_kernel_mount))
		return NULL;
	return kernel;
}

/*
 * The upper and work directories share one detached mount: a rename
 * from workdir/work into the upper layer must stay on one mount.
 */
static int open_upper(struct ovl_fs *fs, struct ovl_error *e)
{
	struct ovl_layer *upper = fs->upper;
	struct stat st, wst;
	bool cloned;
	char *base;
	int err;

	err = layer_resolve("upperdir", fs->config.upperdir, &upper->path, e);
	if (!err)
		err = layer_resolve("workdir", fs->config.workdir,
				    &fs->workdir_path, e);
	if (err)
		return err;
	if (stat(upper->path, &st) < 0 || stat(fs->workdir_path, &wst) < 0)
		return -errno;
	if (st.st_dev != wst.st_dev) {
		ovl_error_set(e, "workdir %s and upperdir %s are on different filesystems; put the workdir on the upper's filesystem",
			      fs->workdir_path, upper->path);
		return -EXDEV;
	}
	base = common_dir(upper->path, fs->workdir_path);
	if (!base)
		return -ENOMEM;
	fs->upper_mnt_fd = open_detached(base, &cloned);
	err = fs->upper_mnt_fd < 0 ? fs->upper_mnt_fd : 0;
	if (!err)
		upper->fd = open_below(fs->upper_mnt_fd, base, upper->path,
				       O_PATH);
	free(base);
	if (!err && upper->fd < 0) {
		err = upper->fd;
		ovl_error_set(e, "upperdir %s and workdir %s are not on one mount: %s; give directories of one mount",
			      upper->path, fs->workdir_path, strerror(-err));
		return err;
	}
	upper->dev = st.st_dev;
	layer_read_uuid(upper);
	layer_read_fstype(upper);
	lock_upper(fs);
	return err;
}

/*
 * Number the filesystems of the layers, the upper's (or the top
 * layer's) first, and reserve enough high bits of st_ino for that
 * number when there is more than one.
 */
static void setup_xino(struct ovl_fs *fs)
{
	dev_t devs[OVL_MAX_LAYERS];
	int i, j, numfs = 0, bits = 0;

	for (i = 0; i < fs->nlayers; i++) {
		for (j = 0; j < numfs && devs[j] != fs->layers[i].dev; j++)
			;
		if (j == numfs)
			devs[numfs++] = fs->layers[i].dev;
		fs->layers[i].fsid = j;
	}
	if (numfs < 2 || fs->config.xino_off)
		return;
	while ((1 << bits) < numfs)
		bits++;
	fs->xino_shift = 64 - bits;
}

/* Fill lowers with the path of each lower, top first, and return their
 * count. A lower that lamina check failed to open has a NULL path. */
static int lower_paths(const struct ovl_fs *fs, const char **lowers)
{
	int i, nlower = 0;

	for (i = fs->first_lower; i < fs->nlayers; i++)
		lowers[nlower++] = fs->layers[i].path;
	return nlower;
}

static int open_layers(struct ovl_fs *fs, struct ovl_error *e)
{
	struct ovl_config *cfg = &fs->config;
	const char *lowers[OVL_MAX_LAYERS];
	int i, err, n = cfg->nlower + (cfg->upperdir ? 1 : 0);

	fs->layers = calloc(n, sizeof(*fs->layers));
	if (!fs->layers)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		fs->layers[i].fd = -1;
		fs->layers[i].handle_fd = -1;
	}
	fs->nlayers = n;
	fs->first_data = n - fs->config.ndata;
	if (cfg->upperdir) {
		fs->upper = &fs->layers[0];
		fs->upper->is_upper = true;
		fs->first_lower = 1;
		err = ovl_error_continue(e, open_upper(fs, e));
		if (err)
			return err;
	}
	for (i = 0; i < cfg->nlower; i++) {
		err = layer_open(&fs->layers[fs->first_lower + i], "lowerdir",
				 cfg->lowerdirs[i], e);
		err = ovl_error_continue(e, err);
		if (err)
			return err;
	}
	err = ovl_check_lowers_distinct(lowers, lower_paths(fs, lowers), e);
	err = ovl_error_continue(e, err);
	if (!err)
		setup_xino(fs);
	return err;
}

/* upper, work and the mount point must not overlap a layer or each other. */
static int check_overlap(struct ovl_fs *fs, const char *work,
			 struct ovl_error *e)
{
	const char *upper = fs->upper->path, *mnt = fs->config.mountpoint;
	const char *lowers[OVL_MAX_LAYERS];
	int err;

	err = ovl_check_layers_apart(upper, work, lowers,
				     lower_paths(fs, lowers), e);
	if (!err && mnt && ovl_path_within(upper, mnt)) {
		ovl_error_set(e, "upperdir %s is inside the mount point %s; put it outside",
			      upper, mnt);
		err = -EINVAL;
	}
	if (!err && mnt && ovl_path_within(work, mnt)) {
		ovl_error_set(e, "workdir %s is inside the mount point %s; put it outside",
			      work, mnt);
		err = -EINVAL;
	}
	return err;
}

/* lamina check names its test directory with this prefix and its pid. */
#define CHECK_DIR_PREFIX "#lamina-check."

/* The pid in the name of a test directory of lamina check, or 0. */
static pid_t check_dir_pid(const char *name)
{
	size_t n = strlen(CHECK_DIR_PREFIX);
	char *end;
	long pid;

	if (strncmp(name, CHECK_DIR_PREFIX, n) ||
	    !isdigit((unsigned char)name[n]))
		return 0;
	errno = 0;
	pid = strtol(name + n, &end, 10);
	if (errno || *end || pid <= 0 || pid > INT_MAX)
		return 0;
	return (pid_t)pid;
}

/*
 * Remove the test directory of a lamina check that was killed before it
 * could remove it. A running check holds the workdir lock, unless a mount
 * held it when the check started, so the directory is stale when the
 * caller holds the lock and no process has the check's pid. Our own pid
 * is stale too, because this process has not made its directory yet.
 */
static bool remove_stale_check_dir(int fd, const char *work, const char *name,
				   bool locked)
{
	pid_t pid = check_dir_pid(name);
	int err;

	if (!pid || !locked)
		return false;
	if (pid != getpid() && (kill(pid, 0) == 0 || errno != ESRCH))
		return false;
	err = ovl_remove_tree(fd, name);
	if (err) {
		log_warn(
		    "workdir %s: removing %s, which a lamina check that did not finish left behind, failed: %s",
		    work, name, strerror(-err));
		return false;
	}
	log_info(
	    "workdir %s: removed %s, which a lamina check that did not finish left behind",
	    work, name);
	return true;
}

/*
 * Only overlayfs's own "work" and "index" may be in the work directory.
 * locked is true when this process holds the workdir lock.
 */
static int check_workdir_empty(int fd, const char *work, bool locked,
			       struct ovl_error *e)
{
	DIR *dir = ovl_opendir_at(fd);
	struct dirent *d;
	pid_t pid;
	int err = 0;

	if (!dir)
		return -errno;
	while (!err && (d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..") ||
		    !strcmp(d->d_name, "work") || !strcmp(d->d_name, "index") ||
		    remove_stale_check_dir(fd, work, d->d_name, locked))
			continue;
		pid = check_dir_pid(d->d_name);
		if (pid)
			ovl_error_set(
			    e,
			    "workdir %s is not empty: it holds '%s', the test directory of lamina check pid %d; unless that check is still running, delete %s/%s",
			    work, d->d_name, (int)pid, work, d->d_name);
		else
			ovl_error_set(
			    e,
			    "workdir %s is not empty: it holds '%s'; give an empty directory on the upper's filesystem",
			    work, d->d_name);
		err = -ENOTEMPTY;
	}
	closedir(dir);
	return err;
}

/* The directory entry type of name in dirfd, DT_UNKNOWN if unreported. */
static int dirent_type(int dirfd, const char *name)
{
	DIR *dir = ovl_opendir_at(dirfd);
	struct dirent *d;
	int type = DT_UNKNOWN;

	if (!dir)
		return DT_UNKNOWN;
	while ((d = readdir(dir)))
		if (!strcmp(d->d_name, name))
			type = d->d_type;
	closedir(dir);
	return type;
}

/*
 * Lock the workdir against a second mount. A daemon whose mount was
 * just unmounted may still hold the lock while it exits, so wait a
 * little before calling the workdir busy.
 */
static int lock_workdir(int fd)
{
	int err = ovl_flock_wait(fd, 5000);

	return err == -EWOULDBLOCK ? -EBUSY : err;
}

static int open_workdir(struct ovl_fs *fs, struct ovl_error *e)
{
	const char *work = fs->workdir_path;
	char *base = common_dir(fs->upper->path, work);
	bool locked = false;
	int err;

	if (!base)
		return -ENOMEM;
	err = ovl_error_continue(e, check_overlap(fs, work, e));
	if (!err) {
		fs->workdir_fd = open_below(fs->upper_mnt_fd, base, work,
					    O_RDONLY);
		if (fs->workdir_fd < 0) {
			err = fs->workdir_fd;
			ovl_error_set(e, "workdir %s: %s", work, strerror(-err));
		}
	}
	free(base);
	if (!err) {
		locked = lock_workdir(fs->workdir_fd) == 0;
		if (!locked) {
			ovl_error_set(
			    e,
			    "workdir %s is in use by another lamina mount; give each mount its own workdir",
			    work);
			err = ovl_error_continue(e, -EBUSY);
		}
	}
	/*
	 * The mount would remove workdir/work, where the kernel mount makes
	 * its copy-ups, and every copy-up through that mount would then fail.
	 */
	if (!err && fs->work_kernel_mount) {
		ovl_error_set(
		    e,
		    "workdir %s is in use by the overlay mount on %s, whose copy-ups would fail once this mount replaced %s/work; unmount %s first, or give this mount its own workdir",
		    work, fs->work_kernel_mount, work, fs->work_kernel_mount);
		err = ovl_error_continue(e, -EBUSY);
	}
	if (!err)
		err = ovl_error_continue(
		    e, check_workdir_empty(fs->workdir_fd, work, locked, e));
	return err;
}

/*
 * A volatile mount leaves work/incompat/volatile behind until it is
 * unmounted cleanly. After a crash the upper may have lost writes, so
 * the mount is rejected, as overlayfs rejects it.
 */
static int check_volatile_marker(struct ovl_fs *fs, struct ovl_error *e)
{
	struct stat st;

	if (fstatat(fs->workdir_fd, "work/incompat/volatile", &st,
		    AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	ovl_error_set(e, "workdir %s: an earlier volatile mount did not end cleanly, so the upper may have lost writes; delete %s/work to use it anyway",
		      fs->config.workdir, fs->config.workdir);
	return -EINVAL;
}

bool ovl_space_advice(struct ovl_fs *fs, int err, char *buf, size_t size)
{
	const char *upper = fs->upper->path;
	struct statvfs st;

	buf[0] = '\0';
	if (err == -EDQUOT)
		snprintf(
		    buf, size,
		    "; the disk quota on the filesystem of upperdir %s is used up, so raise it or delete files there",
		    upper);
	else if (err == -ENOSPC && fstatvfs(fs->upper->fd, &st) == 0 &&
		 st.f_files > 0 && st.f_favail == 0)
		snprintf(
		    buf, size,
		    "; the filesystem of upperdir %s has no free inodes, so delete files there or move the upper and work directories to a filesystem with more inodes",
		    upper);
	else if (err == -ENOSPC)
		snprintf(
		    buf, size,
		    "; the filesystem of upperdir %s is full, so delete files there or move the upper and work directories to a larger filesystem",
		    upper);
	return buf[0] != '\0';
}

/* Recreate workdir/work empty, removing what a crash left in it. */
static int reset_work(struct ovl_fs *fs, struct ovl_error *e)
{
	char advice[512];
	int err = ovl_remove_tree(fs->workdir_fd, "work");

	if (!err && mkdirat(fs->workdir_fd, "work", 0700) < 0)
		err = -errno;
	if (!err) {
		fs->work_fd = openat(fs->workdir_fd, "work",
				     O_PATH | O_DIRECTORY | O_NOFOLLOW |
					     O_CLOEXEC);
		if (fs->work_fd < 0)
			err = -errno;
	}
	if (err) {
		ovl_space_advice(fs, err, advice, sizeof(advice));
		ovl_error_set(e, "workdir %s: cannot prepare %s/work: %s%s",
			      fs->config.workdir, fs->config.workdir,
			      strerror(-err), advice);
	}
	return err;
}

/*
 * lamina check leaves workdir/work alone, which a crashed mount's
 * leftovers may be in, and tests in a directory of its own.
 */
static int make_check_dir(struct ovl_fs *fs, struct ovl_error *e)
{
	char advice[512];
	int err = 0;

	snprintf(fs->work_name, sizeof(fs->work_name), CHECK_DIR_PREFIX "%d",
		 (int)getpid());
	if (mkdirat(fs->workdir_fd, fs->work_name, 0700) < 0)
		err = -errno;
	if (!err) {
		fs->work_fd = openat(fs->workdir_fd, fs->work_name,
				     O_PATH | O_DIRECTORY | O_NOFOLLOW |
					     O_CLOEXEC);
		if (fs->work_fd < 0)
			err = -errno;
	}
	if (err) {
		ovl_space_advice(fs, err, advice, sizeof(advice));
		ovl_error_set(
		    e, "workdir %s: cannot create a test directory in it: %s%s",
		    fs->config.workdir, strerror(-err), advice);
	}
	return err;
}

static int mark_volatile(struct ovl_fs *fs, struct ovl_error *e)
{
	char advice[512];

	if (mkdirat(fs->work_fd, "incompat", 0700) < 0 ||
	    mkdirat(fs->work_fd, "incompat/volatile", 0700) < 0) {
		int err = -errno;

		ovl_space_advice(fs, err, advice, sizeof(advice));
		ovl_error_set(
		    e, "workdir %s: cannot create the volatile marker: %s%s",
		    fs->config.workdir, strerror(-err), advice);
		return err;
	}
	return 0;
}

static bool is_no_space(int err)
{
	return err == -ENOSPC || err == -EDQUOT;
}

/* Report that check_upper_fs() could not create a test entry. */
static int report_test_entry(struct ovl_fs *fs, int err, struct ovl_error *e)
{
	char advice[512];

	ovl_space_advice(fs, err, advice, sizeof(advice));
	ovl_error_set(e,
		      "workdir %s: cannot create a test entry in %s/%s: %s%s",
		      fs->config.workdir, fs->config.workdir, fs->work_name,
		      strerror(-err), advice);
	return err;
}

static int check_upper_fs(struct ovl_fs *fs, struct ovl_error *e)
{
	const char *upper = fs->upper->path;
	char tmp[64], tmp2[64], attr[64];
	int err;

	if (dirent_type(fs->workdir_fd, fs->work_name) != DT_DIR) {
		ovl_error_set(e, "upperdir %s: the filesystem does not report file types in directory entries (d_type); use one that does (for XFS, mkfs.xfs -n ftype=1)",
			      upper);
		err = ovl_error_continue(e, -EINVAL);
		if (err)
			return err;
	}
	ovl_tmpname(fs, tmp, sizeof(tmp));
	if (mkdirat(fs->work_fd, tmp, 0700) < 0)
		return report_test_entry(fs, -errno, e);
	ovl_xattr_name(fs, attr, sizeof(attr), "opaque");
	err = ovl_do_setxattr(fs->work_fd, tmp, attr, "y", 1, 0);
	unlinkat(fs->work_fd, tmp, AT_REMOVEDIR);
	/* Without space for the xattr, the features are still unknown. */
	if (is_no_space(err))
		return report_test_entry(fs, err, e);
	if (err == -EPERM && !fs->config.userxattr) {
		/* trusted.* needs CAP_SYS_ADMIN; the filesystem may be fine. */
		ovl_error_set(
		    e,
		    "upperdir %s: cannot set %s xattrs (%s), which need CAP_SYS_ADMIN; mount as root, or with -o userxattr to keep overlay metadata in user.overlay.* xattrs",
		    upper, fs->xattr_prefix, strerror(-err));
		err = ovl_error_continue(e, err);
		if (err)
			return err;
	} else if (err) {
		ovl_error_set(e, "upperdir %s: cannot set %s xattrs (%s); use a filesystem with xattr support%s",
			      upper, fs->xattr_prefix, strerror(-err),
			      fs->config.userxattr ? "" : ", or -o userxattr");
		err = ovl_error_continue(e, err);
		if (err)
			return err;
	}
	if (mknodat(fs->work_fd, tmp, S_IFCHR, makedev(0, 0)) < 0) {
		err = -errno;
		if (is_no_space(err))
			return report_test_entry(fs, err, e);
		if (!fs->config.userxattr) {
			ovl_error_set(e, "upperdir %s: cannot create whiteouts, character devices 0/0 (%s); run lamina as root or with CAP_MKNOD, or mount with -o userxattr to use xattr whiteouts",
				      upper, strerror(-err));
			return ovl_error_continue(e, err);
		}
		fs->xwhiteouts = true;
		log_warn("upperdir %s: cannot create character device whiteouts (%s); using xattr whiteouts, which kernel overlayfs honours only in lower layers",
			 upper, strerror(-err));
	}
	unlinkat(fs->work_fd, tmp, 0);

	/* RENAME_WHITEOUT makes the whiteout left by a rename atomic. */
	ovl_tmpname(fs, tmp, sizeof(tmp));
	ovl_tmpname(fs, tmp2, sizeof(tmp2));
	err = mknodat(fs->work_fd, tmp, S_IFREG | 0600, 0) < 0 ? -errno : 0;
	/* The whiteout that the rename leaves takes an inode too. */
	if (!err)
		err = ovl_do_rename(fs->work_fd, tmp, fs->work_fd, tmp2,
				    RENAME_WHITEOUT);
	fs->rename_whiteout = !err;
	unlinkat(fs->work_fd, tmp, 0);
	unlinkat(fs->work_fd, tmp2, 0);
	if (is_no_space(err))
		return report_test_entry(fs, err, e);
	return 0;
}

static int make_root(struct ovl_fs *fs)
{
	struct ovl_node *root = ovl_node_new(fs, NULL, "");
	struct stat st;

	if (!root)
		return -ENOMEM;
	root->type = S_IFDIR;
	root->lower = fs->first_lower;
	root->lower_last = fs->first_data - 1;
	root->nlookup = 1;
	if (fstat(fs->layers[0].fd, &st) < 0) {
		ovl_node_put(fs, root);
		return -errno;
	}
	root->ino = ovl_xino(fs, 0, st.st_ino);
	if (fs->upper)
		atomic_fetch_or(&root->flags, OVL_N_UPPER);
	fs->root = root;
	return 0;
}

static int setup_upper(struct ovl_fs *fs, struct ovl_error *e)
{
	int err = open_workdir(fs, e);

	if (!err)
		err = ovl_error_continue(e, check_volatile_marker(fs, e));
	if (!err)
		err = fs->check_only ? make_check_dir(fs, e) : reset_work(fs, e);
	if (!err)
		err = check_upper_fs(fs, e);
	if (!err)
		err = ovl_error_continue(e, ovl_index_setup(fs, e));
	/* After the index setup, which decides whether the index is on. */
	if (!err)
		err = check_upper_shared(fs, e);
	if (!err && fs->config.volatile_mount && !fs->check_only)
		err = mark_volatile(fs, e);
	return err;
}

int ovl_fs_setup(struct ovl_fs *fs, struct ovl_error *e)
{
	int err;

	fs->workdir_fd = -1;
	fs->work_fd = -1;
	fs->index_fd = -1;
	pthread_mutex_init(&fs->index_nlink_lock, NULL);
	pthread_mutex_init(&fs->data_up_lock, NULL);
	pthread_mutex_init(&fs->xattr_up_lock, NULL);
	strcpy(fs->work_name, "work");
	fs->upper_mnt_fd = -1;
	fs->upper_lock_fd = -1;
	fs->timeout = 86400.0;
	ovl_whiteout_init(fs);
	fs->xattr_prefix = fs->config.userxattr ? "user.overlay."
						: "trusted.overlay.";
	fs->xattr_prefix_len = strlen(fs->xattr_prefix);
	/* Registering backing files needs CAP_SYS_ADMIN. */
	atomic_store(&fs->passthrough_ok,
		     fs->config.passthrough && geteuid() == 0);
	err = ovl_nodes_init(fs);
	if (!err)
		err = open_layers(fs, e);
	/* lamina check goes on past errors, but not past a missing upper. */
	if (!err && fs->upper && fs->upper->fd >= 0)
		err = setup_upper(fs, e);
	if (!err && e->count)
		return -EINVAL; /* each error was reported already */
	if (!err)
		err = make_root(fs);
	if (err && !e->msg[0])
		ovl_error_set(e, "setting up the layers failed: %s",
			      strerror(-err));
	return err;
}

void ovl_fs_teardown(struct ovl_fs *fs)
{
	int i;

	if (fs->config.volatile_mount && fs->work_fd >= 0) {
		/* Clean unmount: the upper is whole once synced. */
		if (syncfs(fs->workdir_fd) == 0) {
			unlinkat(fs->work_fd, "incompat/volatile", AT_REMOVEDIR);
			unlinkat(fs->work_fd, "incompat", AT_REMOVEDIR);
		}
	}
	ovl_prefetch_stop(fs);
	ovl_readahead_stop(fs);
	ovl_noxattr_free(fs);
	fs->root = NULL;
	ovl_nodes_destroy(fs);
	for (i = 0; i < fs->nlayers; i++) {
		free(fs->layers[i].path);
		if (fs->layers[i].fd >= 0)
			close(fs->layers[i].fd);
		if (fs->layers[i].handle_fd >= 0)
			close(fs->layers[i].handle_fd);
	}
	free(fs->layers);
	ovl_whiteout_destroy(fs);
	if (fs->work_fd >= 0)
		close(fs->work_fd);
	if (fs->index_fd >= 0)
		close(fs->index_fd);
	pthread_mutex_destroy(&fs->index_nlink_lock);
	pthread_mutex_destroy(&fs->data_up_lock);
	pthread_mutex_destroy(&fs->xattr_up_lock);
	if (fs->check_only && fs->workdir_fd >= 0 && fs->work_fd >= 0)
		ovl_remove_tree(fs->workdir_fd, fs->work_name);
	if (fs->workdir_fd >= 0)
		close(fs->workdir_fd);
	if (fs->upper_mnt_fd >= 0)
		close(fs->upper_mnt_fd);
	if (fs->upper_lock_fd >= 0)
		close(fs->upper_lock_fd);
	free(fs->upper_kernel_mount);
	free(fs->work_kernel_mount);
	free(fs->workdir_path);
	ovl_config_free(&fs->config);
}
