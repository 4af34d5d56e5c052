// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Open files. With FUSE passthrough the kernel reads and writes the
 * real file itself; lamina only opens it and registers it once per
 * node. Without passthrough, reads and writes come here.
 */
#include "ops.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ovl_file *file_of(const struct fuse_file_info *fi)
{
	return (struct ovl_file *)(uintptr_t)fi->fh;
}

/* Open the real file behind a passthrough backing id once. */
static int backing_fd_once(struct ovl_fs *fs, struct ovl_node *node, bool upper)
{
	struct ovl_path path;
	int fd, err;

	err = ovl_node_open_parent(fs, node, ovl_node_data_layer(node), &path);
	if (err)
		return err;
	fd = openat(path.dirfd, path.name,
		    (upper ? O_RDWR : O_RDONLY | O_NOATIME) | O_CLOEXEC |
			    (path.dirfd == AT_FDCWD ? 0 : O_NOFOLLOW));
	if (fd < 0 && !upper && errno == EPERM)
		fd = openat(path.dirfd, path.name,
			    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	err = fd < 0 ? -errno : fd;
	ovl_path_close(&path);
	return err;
}

/* Open the real file behind a passthrough backing id, read-write if upper,
 * again if a rename overlapped the open. */
static int backing_fd(struct ovl_fs *fs, struct ovl_node *node, bool upper)
{
	unsigned int seen;
	int fd = -1, tries = 0;
	bool settled;

	do {
		if (fd >= 0)
			close(fd);
		settled = ovl_moves_settle(fs, &seen);
		fd = backing_fd_once(fs, node, upper);
	} while (ovl_moves_read_again(fs, settled, seen, &tries));
	return fd;
}

static void passthrough_disable(struct ovl_fs *fs, int err)
{
	if (atomic_exchange(&fs->passthrough_ok, false))
		log_info("FUSE passthrough unavailable (%s); reads and writes go through lamina",
			 strerror(-err));
}

/*
 * Bind the open to the node's backing file. The kernel keeps one
 * backing file per inode while it is open, so a node that was opened
 * from the lower layer and copied up since then cannot switch: such an
 * open goes through lamina uncached instead.
 */
static void file_passthrough(struct ovl_fs *fs, struct ovl_file *file,
			     bool upper, struct fuse_file_info *fi)
{
	struct ovl_node *node = file->node;
	int fd, id;

	pthread_mutex_lock(&node->lock);
	if (node->backing_id > 0 && node->backing_upper != upper) {
		fi->direct_io = true;
	} else if (node->backing_id > 0) {
		node->backing_refs++;
		file->backing = true;
	} else {
		/* A read-write upper descriptor, or a lower one, serves all. */
		int mode = fcntl(file->fd, F_GETFL) & O_ACCMODE;
		bool reuse = upper ? mode == O_RDWR : mode == O_RDONLY;

		fd = reuse ? file->fd : backing_fd(fs, node, upper);
		id = fd < 0 ? fd : fuse_backing_open(fs->se, fd);
		if (fd >= 0 && !reuse)
			close(fd);
		if (id == -EPERM || id == -EOPNOTSUPP || id == -ENOTTY) {
			passthrough_disable(fs, id);
			fi->direct_io = true;
		} else if (id < 0) {
			char name[NAME_MAX + 1];

			log_warn_rl("passthrough for %s failed: %s",
				    ovl_node_name_try_copy(fs, node, name,
							   sizeof(name)),
				    strerror(-id));
			fi->direct_io = true;
		} else {
			node->backing_id = id;
			node->backing_upper = upper;
			node->backing_refs = 1;
			file->backing = true;
		}
	}
	if (file->backing)
		fi->backing_id = node->backing_id;
	pthread_mutex_unlock(&node->lock);
}

/*
 * A file with other names, or none yet, may be reached through another
 * node, which is another kernel inode with a page cache of its own.
 * Without passthrough, which shares the real file's page cache, such a
 * file bypasses the kernel's cache so that every name sees every write.
 */
static bool shares_data(struct ovl_node *node, int fd)
{
	struct stat st;

	if (node->anon_fd >= 0)
		return true;
	return fstat(fd, &st) == 0 && st.st_nlink != 1;
}

/*
 * A file that a user has open on the upper file of node, with one more
 * reference, or NULL. Its descriptor serves requests on the file's inode
 * without walking its path, and stays right when the file is renamed.
 * The caller drops the reference with ovl_file_put().
 */
struct ovl_file *ovl_node_open_file(struct ovl_node *node)
{
	struct ovl_file *file, *found = NULL;

	if (!ovl_node_has(node, OVL_N_UPPER))
		return NULL;
	pthread_mutex_lock(&node->lock);
	for (file = node->files; file && !found; file = file->next) {
		pthread_mutex_lock(&file->lock);
		if (!file->lower) {
			atomic_fetch_add(&file->refs, 1);
			found = file;
		}
		pthread_mutex_unlock(&file->lock);
	}
	pthread_mutex_unlock(&node->lock);
	return found;
}

void ovl_file_put(struct ovl_fs *fs, struct ovl_file *file)
{
	struct ovl_node *node = file->node;

	if (atomic_fetch_sub(&file->refs, 1) != 1)
		return;
	close(file->fd);
	pthread_mutex_destroy(&file->lock);
	free(file);
	ovl_node_put(fs, node);
}

/* Wrap fd in an open-file handle and decide how the kernel does I/O. */
int ovl_file_setup(struct fuse_req *req, struct ovl_node *node, int fd,
		   bool upper, struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_file *file = calloc(1, sizeof(*file));

	if (!file)
		return -ENOMEM;
	file->fd = fd;
	file->node = node;
	file->lower = !upper;
	atomic_init(&file->refs, 1);
	pthread_mutex_init(&file->lock, NULL);
	ovl_node_get(node);
	pthread_mutex_lock(&node->lock);
	file->next = node->files;
	node->files = file;
	pthread_mutex_unlock(&node->lock);
	fi->fh = (uintptr_t)file;
	fi->noflush = true;
	if (atomic_load(&fs->passthrough_ok))
		file_passthrough(fs, file, upper, fi);
	else if (shares_data(node, fd))
		fi->direct_io = true;
	else
		fi->keep_cache = true;
	return 0;
}

/*
 * Flags for the real file. With passthrough the kernel does the I/O on
 * the backing file with the caller's flags, and one read-write
 * descriptor of an upper file can back every later open too, so the
 * real file is opened read-write and without O_APPEND.
 */
static int real_flags(struct ovl_fs *fs, int flags, bool upper)
{
	if (!(upper && atomic_load(&fs->passthrough_ok)))
		return flags;
	if ((flags & O_ACCMODE) != O_RDONLY || upper)
		flags = (flags & ~O_ACCMODE) | O_RDWR;
	return flags & ~O_APPEND;
}

static bool lower_backed(struct ovl_node *node)
{
	bool lower;

	pthread_mutex_lock(&node->lock);
	lower = node->backing_id > 0 && !node->backing_upper;
	pthread_mutex_unlock(&node->lock);
	return lower;
}

/*
 * The real file was opened with O_NONBLOCK, so that a FIFO or device
 * that took the name under the mount cannot block the worker. Anything
 * but a regular file is closed again; a regular file gets back the
 * caller's blocking mode.
 */
static int check_regular(int fd, int flags)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		st.st_mode = 0;
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		log_warn_rl("open found mode %o instead of a regular file",
			    st.st_mode);
		return -EIO;
	}
	if (!(flags & O_NONBLOCK))
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* The node's data is in the upper layer: not below a metacopy file. */
static bool data_upper(const struct ovl_node *node)
{
	return ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX) &&
	       node->data_layer < 0;
}

/* Open the node's real file by path once; returns the descriptor. */
static int open_real_once(struct ovl_fs *fs, struct ovl_node *node, int flags,
			  int requested, bool upper)
{
	struct ovl_path path;
	int fd, err;

	err = ovl_node_open_parent(fs, node, ovl_node_data_layer(node), &path);
	if (err)
		return err;
	/* The /proc link of a file without a name must be followed. */
	if (path.dirfd == AT_FDCWD) {
		flags &= ~O_NOFOLLOW;
		requested &= ~O_NOFOLLOW;
	}
	fd = openat(path.dirfd, path.name, flags);
	/* Read-write was only wished for: a running program (ETXTBSY) or a
	 * read-only file may refuse it, and the caller's flags still do. */
	if (fd < 0 && (flags & ~O_NONBLOCK) != requested && errno != ENOENT)
		fd = openat(path.dirfd, path.name, requested | O_NONBLOCK);
	if (fd < 0 && errno == EPERM && !upper)
		fd = openat(path.dirfd, path.name, flags & ~O_NOATIME);
	/* ENXIO: a rename left its whiteout (device 0/0) at the path. */
	if (fd < 0 && errno == ENXIO)
		errno = ENOENT;
	err = fd < 0 ? -errno : fd;
	ovl_path_close(&path);
	return err;
}

/* Truncate the file open as fd, which may be open for reading only. */
static int truncate_open(int fd)
{
	char proc[64];

	if (ftruncate(fd, 0) == 0)
		return 0;
	if (errno != EBADF && errno != EINVAL)
		return -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return truncate(proc, 0) < 0 ? -errno : 0;
}

/*
 * Open the node's real file. The open goes by path, and a rename may
 * move another entry there meanwhile, so it is done again after one. An
 * O_TRUNC is applied only to the file that the open kept, since an
 * overlapped open may have reached the other entry.
 */
static int open_real(struct ovl_fs *fs, struct ovl_node *node, int flags)
{
	bool truncate_it = flags & O_TRUNC;
	int fd = -1, requested, tries = 0, err;
	bool upper, settled;
	unsigned int seen;

	ovl_metacopy_pending(fs, node);
	upper = data_upper(node);

	flags &=
	    ~(O_CREAT | O_EXCL | O_NOCTTY | O_DIRECT | O_TMPFILE | O_TRUNC);
	flags |= O_NOFOLLOW | O_CLOEXEC | (upper ? 0 : O_NOATIME);
	requested = flags;
	flags = real_flags(fs, flags, upper) | O_NONBLOCK;
	do {
		if (fd >= 0)
			close(fd);
		settled = ovl_moves_settle(fs, &seen);
		fd = open_real_once(fs, node, flags, requested, upper);
	} while (ovl_moves_read_again(fs, settled, seen, &tries));
	fd = fd < 0 ? fd : check_regular(fd, requested);
	if (fd >= 0 && truncate_it) {
		err = truncate_open(fd);
		if (err) {
			close(fd);
			return err;
		}
	}
	return fd;
}

/*
 * Clear set-ID bits after an O_TRUNC open or a write, and make the kernel
 * drop the mode it caches, which neither reply carries.
 */
static int kill_suidgid(struct fuse_req *req, uint64_t nodeid, int fd)
{
	int err = ovl_kill_suidgid(fd, -1, NULL, fuse_req_ctx(req));

	if (err > 0)
		fuse_notify_inval_inode(ovl_req_fs(req)->se, nodeid, -1, 0);
	return err > 0 ? 0 : err;
}

void ovl_op_open(struct fuse_req *req, uint64_t nodeid,
		 struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	bool write = (fi->flags & O_ACCMODE) != O_RDONLY;
	int fd, err = 0;

	ovl_index_refresh(fs, node);
	if (write || (fi->flags & O_TRUNC))
		err = ovl_copy_up(
		    fs, node, (fi->flags & O_TRUNC) ? OVL_COPY_UP_NO_DATA : 0);
	if (!err && data_upper(node) && lower_backed(node)) {
		/*
		 * The kernel binds this inode to the lower file while it is
		 * open, and would write there too. So the name gets a new
		 * node for the upper copy, which the kernel finds when it
		 * retries the open after ESTALE. Readers already open keep
		 * the lower file.
		 */
		ovl_node_unhash_keep(fs, node);
		err = -ESTALE;
	}
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	fd = open_real(fs, node, fi->flags);
	if (fd < 0) {
		ovl_reply_status(req, fd);
		return;
	}
	if (fi->kill_suidgid && data_upper(node))
		err = kill_suidgid(req, nodeid, fd);
	if (!err)
		err = ovl_file_setup(req, node, fd, data_upper(node), fi);
	if (err) {
		close(fd);
		ovl_reply_status(req, err);
		return;
	}
	fuse_reply_open(req, fi);
}

void ovl_op_create(struct fuse_req *req, uint64_t parent, const char *name,
		   mode_t mode, struct fuse_file_info *fi)
{
	struct ovl_create c = {
		.mode = S_IFREG | (mode & 07777),
		.open_flags = real_flags(ovl_req_fs(req), fi->flags & ~O_DIRECT,
					 true),
	};
	struct fuse_entry e;
	struct ovl_node *node;
	struct stat st;
	int err;

	err = ovl_create_object(req, ovl_req_node(req, parent), name, &c,
				&node, &st);
	if (!err) {
		/* A new file has no security.capability; see xattr.c. */
		if (ovl_req_fs(req)->upper->bare_ok)
			atomic_fetch_or(&node->flags, OVL_N_NOCAPS);
		err = ovl_file_setup(req, node, c.fd, true, fi);
		if (err) {
			close(c.fd);
			ovl_node_forget(ovl_req_fs(req), node, 1);
		}
	}
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	ovl_fill_entry(ovl_req_fs(req), &e, node, &st);
	fuse_reply_create(req, &e, fi);
}

static int tmpfile_owner(int fd, int dirfd, const struct fuse_ctx *ctx)
{
	struct stat dst;
	gid_t gid = ctx->gid;

	if (fstat(dirfd, &dst) == 0 && (dst.st_mode & S_ISGID))
		gid = dst.st_gid;
	if (fchown(fd, ctx->uid, gid) < 0 && geteuid() == 0)
		return -errno;
	return 0;
}

/* O_TMPFILE: an unnamed file in the upper directory, kept by its fd. */
void ovl_op_tmpfile(struct fuse_req *req, uint64_t parent, mode_t mode,
		    struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *dir = ovl_req_node(req, parent), *node;
	struct fuse_entry e;
	struct stat st;
	int dirfd, fd, err;

	err = ovl_copy_up(fs, dir, 0);
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	dirfd = ovl_node_open_dir(fs, dir, 0, O_RDONLY);
	if (dirfd < 0) {
		ovl_reply_status(req, dirfd);
		return;
	}
	ovl_set_umask(fs, fuse_req_ctx(req));
	fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode & 07777);
	err = fd < 0 ? -errno : tmpfile_owner(fd, dirfd, fuse_req_ctx(req));
	close(dirfd);
	if (!err && fstat(fd, &st) < 0)
		err = -errno;
	node = err ? NULL : ovl_node_new(fs, dir, "");
	if (!err && !node)
		err = -ENOMEM;
	if (err) {
		if (fd >= 0)
			close(fd);
		ovl_reply_status(req, err);
		return;
	}
	node->type = S_IFREG;
	node->ino = st.st_ino;
	node->anon_fd = fd;
	node->nlookup = 1; /* the kernel's reference; never hashed */
	atomic_fetch_or(&node->flags, OVL_N_UPPER | OVL_N_DELETED);
	fd = open_real(fs, node, fi->flags);
	err = fd < 0 ? fd : ovl_file_setup(req, node, fd, true, fi);
	if (err) {
		if (fd >= 0)
			close(fd);
		ovl_node_forget(fs, node, 1);
		ovl_reply_status(req, err);
		return;
	}
	ovl_fill_entry(fs, &e, node, &st);
	fuse_reply_create(req, &e, fi);
}

/*
 * A file opened from the lower layer reads the upper copy once the node
 * has been copied up, as overlayfs has done since Linux 4.19; with the
 * index, also when another name of the file was copied up.
 */
int ovl_file_read_fd(struct ovl_fs *fs, struct ovl_file *file)
{
	int fd;

	if (!file->lower)
		return file->fd;
	ovl_index_refresh(fs, file->node);
	ovl_metacopy_pending(fs, file->node);
	if (!data_upper(file->node))
		return file->fd;
	pthread_mutex_lock(&file->lock);
	if (file->lower) {
		fd = open_real(fs, file->node, O_RDONLY);
		if (fd >= 0) {
			close(file->fd);
			file->fd = fd;
			file->lower = false;
		}
	}
	pthread_mutex_unlock(&file->lock);
	return file->fd;
}

void ovl_op_read(struct fuse_req *req, uint64_t nodeid, size_t size,
		 off_t off, struct fuse_file_info *fi)
{
	(void)nodeid;
	fuse_reply_data(req, ovl_file_read_fd(ovl_req_fs(req), file_of(fi)),
			off, size);
}

void ovl_op_write(struct fuse_req *req, uint64_t nodeid, const void *buf,
		  size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n = pwrite(file_of(fi)->fd, buf, size, off);
	int err = n < 0 ? -errno : 0;

	if (!err && fi->kill_suidgid)
		err = kill_suidgid(req, nodeid, file_of(fi)->fd);
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_write(req, n);
}

void ovl_op_flush(struct fuse_req *req, uint64_t nodeid,
		  struct fuse_file_info *fi)
{
	(void)nodeid;
	(void)fi;
	fuse_reply_err(req, 0);
}

void ovl_op_release(struct fuse_req *req, uint64_t nodeid,
		    struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_file *file = file_of(fi);
	struct ovl_node *node = file->node;
	struct ovl_file **pp;

	(void)nodeid;
	pthread_mutex_lock(&node->lock);
	if (file->backing && --node->backing_refs == 0) {
		fuse_backing_close(fs->se, node->backing_id);
		node->backing_id = 0;
	}
	for (pp = &node->files; *pp; pp = &(*pp)->next) {
		if (*pp == file) {
			*pp = file->next;
			break;
		}
	}
	pthread_mutex_unlock(&node->lock);
	ovl_file_put(fs, file);
	fuse_reply_err(req, 0);
}

void ovl_op_fsync(struct fuse_req *req, uint64_t nodeid, bool datasync,
		  struct fuse_file_info *fi)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	int fd = ovl_file_read_fd(fs, file_of(fi)), err = 0;

	(void)nodeid;
	if (fs->config.volatile_mount)
		err = 0;
	else if ((datasync ? fdatasync(fd) : fsync(fd)) < 0)
		err = errno;
	fuse_reply_err(req, err);
}

void ovl_op_fallocate(struct fuse_req *req, uint64_t nodeid, int mode,
		      off_t off, off_t len, struct fuse_file_info *fi)
{
	(void)nodeid;
	if (fallocate(file_of(fi)->fd, mode, off, len) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_err(req, 0);
}

void ovl_op_lseek(struct fuse_req *req, uint64_t nodeid, off_t off,
		  int whence, struct fuse_file_info *fi)
{
	off_t res =
	    lseek(ovl_file_read_fd(ovl_req_fs(req), file_of(fi)), off, whence);

	(void)nodeid;
	if (res < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}

void ovl_op_copy_file_range(struct fuse_req *req, uint64_t nodein,
			    off_t offin, struct fuse_file_info *fiin,
			    uint64_t nodeout, off_t offout,
			    struct fuse_file_info *fiout, size_t len,
			    int flags)
{
	loff_t in = offin, out = offout;
	ssize_t n;

	(void)nodein;
	(void)nodeout;
	n = copy_file_range(ovl_file_read_fd(ovl_req_fs(req), file_of(fiin)),
			    &in, file_of(fiout)->fd, &out, len, flags);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, n);
}
