// SPDX-License-Identifier: GPL-2.0-or-later
/* Reply messages: one per request, written on the descriptor it came from. */
#include "internal.h"
#include "../common/log.h"

#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

const struct fuse_ctx *fuse_req_ctx(const struct fuse_req *req)
{
	return &req->ctx;
}

void *fuse_req_fs(const struct fuse_req *req)
{
	return req->se->fs;
}

struct fuse_session *fuse_req_session(const struct fuse_req *req)
{
	return req->se;
}

int fuse_send(struct fuse_req *req, int error, const struct iovec *iov,
	      int count)
{
	struct fuse_out_header out = {.unique = req->unique, .error = error};
	struct iovec vec[4];
	ssize_t n;
	int i;

	if (req->answered) {
		log_warn_rl("second reply to request %llu dropped",
			    (unsigned long long)req->unique);
		return -EALREADY;
	}
	req->answered = true;
	vec[0].iov_base = &out;
	vec[0].iov_len = sizeof(out);
	out.len = sizeof(out);
	for (i = 0; i < count && i < 3; i++) {
		vec[i + 1] = iov[i];
		out.len += iov[i].iov_len;
	}
	if (req->se->debug)
		log_debug("   unique: %llu, %s %d, outsize: %u",
			  (unsigned long long)req->unique,
			  error ? "error:" : "success,", error, out.len);
	if (req->uring)
		return fuse_uring_send(req, &out, iov, count);
	n = writev(req->fd, vec, count + 1);
	if (n < 0) {
		int err = -errno;

		/* ENOENT: the request was interrupted and is gone. */
		if (err != -ENOENT && err != -ENODEV)
			log_warn_rl("writing reply to /dev/fuse failed: %s",
				    strerror(-err));
		return err;
	}
	return 0;
}

static void reply_data(struct fuse_req *req, const void *arg, size_t size)
{
	struct iovec iov = {.iov_base = (void *)arg, .iov_len = size};

	fuse_send(req, 0, &iov, size ? 1 : 0);
}

/* Reply with an error, or with success and no data when err is 0. */
void fuse_reply_err(struct fuse_req *req, int err)
{
	if (err < 0 || err >= 4096) {
		log_warn_rl("invalid error %d for %s", err,
			    fuse_opname(req->opcode));
		err = EIO;
	}
	fuse_send(req, -err, NULL, 0);
}

void fuse_reply_none(struct fuse_req *req)
{
	req->answered = true;
}

static void fill_attr(struct fuse_attr *a, const struct stat *st)
{
	a->ino = st->st_ino;
	a->mode = st->st_mode;
	a->nlink = st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = st->st_rdev;
	a->size = st->st_size;
	a->blocks = st->st_blocks;
	a->blksize = st->st_blksize;
	a->atime = st->st_atim.tv_sec;
	a->atimensec = st->st_atim.tv_nsec;
	a->mtime = st->st_mtim.tv_sec;
	a->mtimensec = st->st_mtim.tv_nsec;
	a->ctime = st->st_ctim.tv_sec;
	a->ctimensec = st->st_ctim.tv_nsec;
}

static uint64_t timeout_sec(double t)
{
	return t > 0 ? (uint64_t)t : 0;
}

static uint32_t timeout_nsec(double t)
{
	if (t <= 0)
		return 0;
	return (uint32_t)((t - (double)(uint64_t)t) * 1e9);
}

void fuse_fill_entry_out(struct fuse_entry_out *o, const struct fuse_entry *e)
{
	memset(o, 0, sizeof(*o));
	o->nodeid = e->nodeid;
	o->generation = e->generation;
	o->entry_valid = timeout_sec(e->entry_timeout);
	o->entry_valid_nsec = timeout_nsec(e->entry_timeout);
	o->attr_valid = timeout_sec(e->attr_timeout);
	o->attr_valid_nsec = timeout_nsec(e->attr_timeout);
	fill_attr(&o->attr, &e->attr);
}

void fuse_reply_entry(struct fuse_req *req, const struct fuse_entry *e)
{
	struct fuse_entry_out o;

	fuse_fill_entry_out(&o, e);
	reply_data(req, &o, sizeof(o));
}

static void fill_open(struct lamina_fuse_open_out *o,
		      const struct fuse_file_info *fi)
{
	memset(o, 0, sizeof(*o));
	o->fh = fi->fh;
	if (fi->direct_io)
		o->open_flags |= FOPEN_DIRECT_IO;
	if (fi->keep_cache)
		o->open_flags |= FOPEN_KEEP_CACHE;
	if (fi->cache_dir)
		o->open_flags |= FOPEN_CACHE_DIR;
	if (fi->noflush)
		o->open_flags |= FOPEN_NOFLUSH;
	if (fi->parallel_dio)
		o->open_flags |= FOPEN_PARALLEL_DIRECT_WRITES;
	if (fi->backing_id > 0) {
		o->open_flags |= FOPEN_PASSTHROUGH;
		o->backing_id = fi->backing_id;
	}
}

void fuse_reply_create(struct fuse_req *req, const struct fuse_entry *e,
		       const struct fuse_file_info *fi)
{
	struct {
		struct fuse_entry_out entry;
		struct lamina_fuse_open_out open;
	} o;

	fuse_fill_entry_out(&o.entry, e);
	fill_open(&o.open, fi);
	reply_data(req, &o, sizeof(o));
}

void fuse_reply_attr(struct fuse_req *req, const struct stat *st,
		     double timeout)
{
	struct fuse_attr_out o;

	memset(&o, 0, sizeof(o));
	o.attr_valid = timeout_sec(timeout);
	o.attr_valid_nsec = timeout_nsec(timeout);
	fill_attr(&o.attr, st);
	reply_data(req, &o, sizeof(o));
}

static struct lamina_fuse_sx_time sx_time(const struct timespec *ts)
{
	struct lamina_fuse_sx_time t = {.tv_sec = ts->tv_sec,
					.tv_nsec = (uint32_t)ts->tv_nsec};

	return t;
}

void fuse_reply_statx(struct fuse_req *req, const struct stat *st,
		      const struct timespec *btime, double timeout)
{
	struct lamina_fuse_statx_out o;
	struct lamina_fuse_statx *sx = &o.stat;

	memset(&o, 0, sizeof(o));
	o.attr_valid = timeout_sec(timeout);
	o.attr_valid_nsec = timeout_nsec(timeout);
	sx->mask = STATX_BASIC_STATS | (btime ? STATX_BTIME : 0);
	sx->blksize = (uint32_t)st->st_blksize;
	sx->nlink = (uint32_t)st->st_nlink;
	sx->uid = st->st_uid;
	sx->gid = st->st_gid;
	sx->mode = (uint16_t)st->st_mode;
	sx->ino = st->st_ino;
	sx->size = (uint64_t)st->st_size;
	sx->blocks = (uint64_t)st->st_blocks;
	sx->atime = sx_time(&st->st_atim);
	sx->mtime = sx_time(&st->st_mtim);
	sx->ctime = sx_time(&st->st_ctim);
	if (btime)
		sx->btime = sx_time(btime);
	sx->rdev_major = major(st->st_rdev);
	sx->rdev_minor = minor(st->st_rdev);
	sx->dev_major = major(st->st_dev);
	sx->dev_minor = minor(st->st_dev);
	reply_data(req, &o, sizeof(o));
}

void fuse_reply_readlink(struct fuse_req *req, const char *target)
{
	reply_data(req, target, strlen(target));
}

void fuse_reply_open(struct fuse_req *req, const struct fuse_file_info *fi)
{
	struct lamina_fuse_open_out o;

	fill_open(&o, fi);
	reply_data(req, &o, sizeof(o));
}

void fuse_reply_write(struct fuse_req *req, size_t count)
{
	struct fuse_write_out o = {.size = count};

	reply_data(req, &o, sizeof(o));
}

void fuse_reply_buf(struct fuse_req *req, const void *buf, size_t size)
{
	reply_data(req, buf, size);
}

void fuse_reply_statfs(struct fuse_req *req, const struct statvfs *st)
{
	struct fuse_statfs_out o;

	memset(&o, 0, sizeof(o));
	o.st.blocks = st->f_blocks;
	o.st.bfree = st->f_bfree;
	o.st.bavail = st->f_bavail;
	o.st.files = st->f_files;
	o.st.ffree = st->f_ffree;
	o.st.bsize = st->f_bsize;
	o.st.namelen = st->f_namemax;
	o.st.frsize = st->f_frsize;
	reply_data(req, &o, sizeof(o));
}

void fuse_reply_xattr(struct fuse_req *req, size_t size)
{
	struct fuse_getxattr_out o = {.size = size};

	reply_data(req, &o, sizeof(o));
}

void fuse_reply_lseek(struct fuse_req *req, off_t off)
{
	struct fuse_lseek_out o = {.offset = off};

	reply_data(req, &o, sizeof(o));
}

int fuse_notify_inval_inode(struct fuse_session *se, uint64_t nodeid,
			    int64_t off, int64_t len)
{
	struct fuse_notify_inval_inode_out arg = {
		.ino = nodeid, .off = off, .len = len};
	struct fuse_out_header out = {
		.len = sizeof(out) + sizeof(arg),
		.error = FUSE_NOTIFY_INVAL_INODE,
	};
	struct iovec vec[2] = {{&out, sizeof(out)}, {&arg, sizeof(arg)}};

	if (writev(se->fd, vec, 2) < 0)
		return -errno;
	return 0;
}

void fuse_inval_if_changed(struct fuse_session *se, uint64_t nodeid,
			   const atomic_uint *counter, unsigned int seen)
{
	if (atomic_load(counter) == seen)
		return;
	if (fuse_notify_inval_inode(se, nodeid, 0, 0) < 0)
		log_warn_rl("dropping the kernel's cache of node %llu failed",
			    (unsigned long long)nodeid);
}

void fuse_inval_after_reply(struct fuse_req *req, uint64_t nodeid,
			    const atomic_uint *counter, unsigned int seen)
{
	struct fuse_uring_thread *t = req->uring;

	if (!t) {
		fuse_inval_if_changed(req->se, nodeid, counter, seen);
		return;
	}
	/* A ring reply reaches the kernel with the commit after the handler. */
	t->inval_node = nodeid;
	t->inval_counter = counter;
	t->inval_seen = seen;
}

/* Empty the worker's pipe, so no stale bytes start the next reply. */
static void pipe_drain(struct fuse_worker *w)
{
	char buf[4096];

	while (read(w->pipe[0], buf, sizeof(buf)) > 0)
		;
}

/*
 * Splice the reply through the worker's pipe: the header, then the file
 * data. The header gives the length, so the length is computed from the
 * file size first. If the file shrinks meanwhile, the splice falls
 * short, and then the pipe is drained and the reply sent by copying.
 */
static int reply_splice(struct fuse_req *req, int fd, off_t off, size_t size)
{
	struct fuse_out_header out = {.unique = req->unique};
	struct fuse_worker *w = req->worker;
	loff_t pos = off;
	struct stat st;
	size_t n, done = 0;
	ssize_t r;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return -EINVAL;
	n = off >= st.st_size ? 0 : (size_t)(st.st_size - off);
	n = n < size ? n : size;
	out.len = sizeof(out) + n;
	if (write(w->pipe[1], &out, sizeof(out)) != sizeof(out))
		return -EIO;
	while (done < n) {
		r = splice(fd, &pos, w->pipe[1], NULL, n - done, 0);
		if (r <= 0)
			break;
		done += r;
	}
	if (done != n) {
		pipe_drain(w);
		return -EAGAIN;
	}
	req->answered = true;
	r = splice(w->pipe[0], NULL, req->fd, NULL, out.len, 0);
	if (r != (ssize_t)out.len) {
		/* ENOENT: the request was interrupted and is gone. */
		if (r < 0 && errno != ENOENT)
			log_warn_rl("splicing a read reply to /dev/fuse failed: %s",
				    strerror(errno));
		pipe_drain(w);
	}
	return 0;
}

void fuse_reply_data(struct fuse_req *req, int fd, off_t off, size_t size)
{
	ssize_t n;
	char *buf;

	if (req->uring) {
		fuse_uring_reply_data(req, fd, off, size);
		return;
	}
	if (req->worker && req->worker->pipe[0] >= 0 &&
	    reply_splice(req, fd, off, size) == 0)
		return;
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = pread(fd, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, n);
	free(buf);
}
