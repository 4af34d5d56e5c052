// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Decoding of each request into a call of the filesystem's operation
 * table. Every handler checks the argument size before it reads.
 */
#include "internal.h"
#include "../common/log.h"

#include <errno.h>
#include <string.h>

#define ARG(type, name)                                                    \
	const struct type *name = arg;                                     \
	if (len < sizeof(*name)) {                                         \
		fuse_reply_err(req, EINVAL);                               \
		return;                                                    \
	}

static const struct fuse_ops *ops_of(const struct fuse_req *req)
{
	return req->se->ops;
}

/* Return the NUL-terminated string at arg, or NULL if it runs past len. */
static const char *arg_string(const void *arg, size_t len)
{
	if (!len || !memchr(arg, '\0', len))
		return NULL;
	return arg;
}

/* Return the string after the first one, for messages with two names. */
static const char *arg_second_string(const char *first, const void *arg,
				     size_t len)
{
	size_t used = strlen(first) + 1;

	if (used >= len)
		return NULL;
	return arg_string((const char *)arg + used, len - used);
}

#define NAME_ARG(name, start, size)                                        \
	const char *name = arg_string(start, size);                        \
	if (!name) {                                                       \
		fuse_reply_err(req, EINVAL);                               \
		return;                                                    \
	}

static void do_lookup(struct fuse_req *req, const void *arg, size_t len)
{
	NAME_ARG(name, arg, len);
	ops_of(req)->lookup(req, req->nodeid, name);
}

static void do_forget(struct fuse_req *req, const void *arg, size_t len)
{
	const struct fuse_forget_in *in = arg;

	if (len >= sizeof(*in) && ops_of(req)->forget)
		ops_of(req)->forget(req->se->fs, req->nodeid, in->nlookup);
	fuse_reply_none(req);
}

static void do_batch_forget(struct fuse_req *req, const void *arg,
			    size_t len)
{
	const struct fuse_batch_forget_in *in = arg;
	const struct fuse_forget_one *one;
	uint32_t i;

	fuse_reply_none(req);
	if (len < sizeof(*in) ||
	    (len - sizeof(*in)) / sizeof(*one) < in->count)
		return;
	one = (const void *)(in + 1);
	for (i = 0; i < in->count; i++)
		ops_of(req)->forget(req->se->fs, one[i].nodeid,
				    one[i].nlookup);
}

static void do_getattr(struct fuse_req *req, const void *arg, size_t len)
{
	const struct fuse_getattr_in *in = arg;
	bool has_fh = len >= sizeof(*in) && (in->getattr_flags & FUSE_GETATTR_FH);

	ops_of(req)->getattr(req, req->nodeid, has_fh ? in->fh : 0, has_fh);
}

static void do_statx(struct fuse_req *req, const void *arg, size_t len)
{
	const struct lamina_fuse_statx_in *in = arg;
	bool has_fh;

	if (!ops_of(req)->statx || len < sizeof(*in)) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	has_fh = in->getattr_flags & FUSE_GETATTR_FH;
	ops_of(req)->statx(req, req->nodeid, has_fh ? in->fh : 0, has_fh);
}

static void do_setattr(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_setattr attr;
	ARG(fuse_setattr_in, in);

	memset(&attr, 0, sizeof(attr));
	attr.valid = in->valid;
	attr.fh = in->fh;
	attr.st.st_mode = in->mode;
	attr.st.st_uid = in->uid;
	attr.st.st_gid = in->gid;
	attr.st.st_size = in->size;
	attr.st.st_atim.tv_sec = in->atime;
	attr.st.st_atim.tv_nsec = in->atimensec;
	attr.st.st_mtim.tv_sec = in->mtime;
	attr.st.st_mtim.tv_nsec = in->mtimensec;
	attr.st.st_ctim.tv_sec = in->ctime;
	attr.st.st_ctim.tv_nsec = in->ctimensec;
	ops_of(req)->setattr(req, req->nodeid, &attr);
}

static void do_readlink(struct fuse_req *req, const void *arg, size_t len)
{
	(void)arg;
	(void)len;
	ops_of(req)->readlink(req, req->nodeid);
}

static void do_symlink(struct fuse_req *req, const void *arg, size_t len)
{
	const char *target;
	NAME_ARG(name, arg, len);

	target = arg_second_string(name, arg, len);
	if (!target) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	ops_of(req)->symlink(req, req->nodeid, name, target);
}

static void do_mknod(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_mknod_in, in);
	NAME_ARG(name, in + 1, len - sizeof(*in));

	req->ctx.umask = in->umask;
	ops_of(req)->mknod(req, req->nodeid, name, in->mode, in->rdev);
}

static void do_mkdir(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_mkdir_in, in);
	NAME_ARG(name, in + 1, len - sizeof(*in));

	req->ctx.umask = in->umask;
	ops_of(req)->mkdir(req, req->nodeid, name, in->mode);
}

static void do_unlink(struct fuse_req *req, const void *arg, size_t len)
{
	NAME_ARG(name, arg, len);
	ops_of(req)->unlink(req, req->nodeid, name);
}

static void do_rmdir(struct fuse_req *req, const void *arg, size_t len)
{
	NAME_ARG(name, arg, len);
	ops_of(req)->rmdir(req, req->nodeid, name);
}

static void rename_names(struct fuse_req *req, const void *names,
			 size_t len, uint64_t newdir, unsigned int flags)
{
	const char *newname;
	NAME_ARG(oldname, names, len);

	newname = arg_second_string(oldname, names, len);
	if (!newname) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	ops_of(req)->rename(req, req->nodeid, oldname, newdir, newname,
			    flags);
}

static void do_rename(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_rename_in, in);
	rename_names(req, in + 1, len - sizeof(*in), in->newdir, 0);
}

static void do_rename2(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_rename2_in, in);
	rename_names(req, in + 1, len - sizeof(*in), in->newdir, in->flags);
}

static void do_link(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_link_in, in);
	NAME_ARG(name, in + 1, len - sizeof(*in));

	ops_of(req)->link(req, in->oldnodeid, req->nodeid, name);
}

static void do_open(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_open_in, in);

	fi.flags = in->flags;
	fi.kill_suidgid = in->open_flags & FUSE_OPEN_KILL_SUIDGID;
	if (req->opcode == FUSE_OPENDIR)
		ops_of(req)->opendir(req, req->nodeid, &fi);
	else
		ops_of(req)->open(req, req->nodeid, &fi);
}

static void do_create(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_create_in, in);
	NAME_ARG(name, in + 1, len - sizeof(*in));

	fi.flags = in->flags;
	req->ctx.umask = in->umask;
	if (req->opcode == FUSE_TMPFILE)
		ops_of(req)->tmpfile(req, req->nodeid, in->mode, &fi);
	else
		ops_of(req)->create(req, req->nodeid, name, in->mode, &fi);
}

static void do_read(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_read_in, in);

	fi.fh = in->fh;
	fi.flags = in->flags;
	if (req->opcode == FUSE_READ)
		ops_of(req)->read(req, req->nodeid, in->size, in->offset, &fi);
	else
		ops_of(req)->readdir(req, req->nodeid, in->size, in->offset,
				     req->opcode == FUSE_READDIRPLUS, &fi);
}

static void do_write(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_write_in, in);

	if (len - sizeof(*in) < in->size) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fi.fh = in->fh;
	fi.flags = in->flags;
	fi.lock_owner = in->lock_owner;
	fi.kill_suidgid = in->write_flags & FUSE_WRITE_KILL_SUIDGID;
	ops_of(req)->write(req, req->nodeid, in + 1, in->size, in->offset,
			   &fi);
}

static void do_flush(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_flush_in, in);

	fi.fh = in->fh;
	fi.lock_owner = in->lock_owner;
	ops_of(req)->flush(req, req->nodeid, &fi);
}

static void do_release(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_release_in, in);

	fi.fh = in->fh;
	fi.flags = in->flags;
	fi.lock_owner = in->lock_owner;
	fi.flush = in->release_flags & FUSE_RELEASE_FLUSH;
	if (req->opcode == FUSE_RELEASEDIR)
		ops_of(req)->releasedir(req, req->nodeid, &fi);
	else
		ops_of(req)->release(req, req->nodeid, &fi);
}

static void do_fsync(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_fsync_in, in);
	bool datasync = in->fsync_flags & 1;

	fi.fh = in->fh;
	if (req->opcode == FUSE_FSYNCDIR)
		ops_of(req)->fsyncdir(req, req->nodeid, datasync, &fi);
	else
		ops_of(req)->fsync(req, req->nodeid, datasync, &fi);
}

static void do_statfs(struct fuse_req *req, const void *arg, size_t len)
{
	(void)arg;
	(void)len;
	ops_of(req)->statfs(req, req->nodeid);
}

static void do_setxattr(struct fuse_req *req, const void *arg, size_t len)
{
	bool ext = req->se->conn.want_flags & FUSE_SETXATTR_EXT;
	size_t hdr = ext ? sizeof(struct fuse_setxattr_in)
			 : FUSE_COMPAT_SETXATTR_IN_SIZE;
	const struct fuse_setxattr_in *in = arg;
	const char *value;

	if (len < hdr) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	NAME_ARG(name, (const char *)arg + hdr, len - hdr);
	value = name + strlen(name) + 1;
	if ((size_t)(value - (const char *)arg) + in->size > len) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	ops_of(req)->setxattr(req, req->nodeid, name, value, in->size,
			      in->flags);
}

static void do_getxattr(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_getxattr_in, in);
	NAME_ARG(name, in + 1, len - sizeof(*in));

	ops_of(req)->getxattr(req, req->nodeid, name, in->size);
}

static void do_listxattr(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_getxattr_in, in);
	ops_of(req)->listxattr(req, req->nodeid, in->size);
}

static void do_removexattr(struct fuse_req *req, const void *arg,
			   size_t len)
{
	NAME_ARG(name, arg, len);
	ops_of(req)->removexattr(req, req->nodeid, name);
}

static void do_access(struct fuse_req *req, const void *arg, size_t len)
{
	ARG(fuse_access_in, in);
	ops_of(req)->access(req, req->nodeid, in->mask);
}

static void do_interrupt(struct fuse_req *req, const void *arg, size_t len)
{
	/*
	 * NOTE: no lamina operation blocks on another process (locks are
	 * kept by the kernel), so each request finishes on its own and an
	 * interrupt needs no action.
	 */
	(void)arg;
	(void)len;
	fuse_reply_none(req);
}

static void do_destroy(struct fuse_req *req, const void *arg, size_t len)
{
	(void)arg;
	(void)len;
	atomic_store(&req->se->got_destroy, true);
	if (ops_of(req)->destroy)
		ops_of(req)->destroy(req->se->fs);
	fuse_send(req, 0, NULL, 0);
}

static void do_fallocate(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_fallocate_in, in);

	fi.fh = in->fh;
	ops_of(req)->fallocate(req, req->nodeid, in->mode, in->offset,
			       in->length, &fi);
}

static void do_lseek(struct fuse_req *req, const void *arg, size_t len)
{
	struct fuse_file_info fi = {0};
	ARG(fuse_lseek_in, in);

	fi.fh = in->fh;
	ops_of(req)->lseek(req, req->nodeid, in->offset, in->whence, &fi);
}

static void do_copy_file_range(struct fuse_req *req, const void *arg,
			       size_t len)
{
	struct fuse_file_info fi_in = {0}, fi_out = {0};
	ARG(fuse_copy_file_range_in, in);

	fi_in.fh = in->fh_in;
	fi_out.fh = in->fh_out;
	ops_of(req)->copy_file_range(req, req->nodeid, in->off_in, &fi_in,
				     in->nodeid_out, in->off_out, &fi_out,
				     in->len, in->flags);
}

typedef void (*fuse_handler)(struct fuse_req *req, const void *arg,
			     size_t len);

static const struct {
	const char *name;
	fuse_handler handler;
} fuse_op_table[] = {
    [FUSE_LOOKUP] = {"LOOKUP", do_lookup},
    [FUSE_FORGET] = {"FORGET", do_forget},
    [FUSE_GETATTR] = {"GETATTR", do_getattr},
    [FUSE_SETATTR] = {"SETATTR", do_setattr},
    [FUSE_READLINK] = {"READLINK", do_readlink},
    [FUSE_SYMLINK] = {"SYMLINK", do_symlink},
    [FUSE_MKNOD] = {"MKNOD", do_mknod},
    [FUSE_MKDIR] = {"MKDIR", do_mkdir},
    [FUSE_UNLINK] = {"UNLINK", do_unlink},
    [FUSE_RMDIR] = {"RMDIR", do_rmdir},
    [FUSE_RENAME] = {"RENAME", do_rename},
    [FUSE_LINK] = {"LINK", do_link},
    [FUSE_OPEN] = {"OPEN", do_open},
    [FUSE_READ] = {"READ", do_read},
    [FUSE_WRITE] = {"WRITE", do_write},
    [FUSE_STATFS] = {"STATFS", do_statfs},
    [FUSE_RELEASE] = {"RELEASE", do_release},
    [FUSE_FSYNC] = {"FSYNC", do_fsync},
    [FUSE_SETXATTR] = {"SETXATTR", do_setxattr},
    [FUSE_GETXATTR] = {"GETXATTR", do_getxattr},
    [FUSE_LISTXATTR] = {"LISTXATTR", do_listxattr},
    [FUSE_REMOVEXATTR] = {"REMOVEXATTR", do_removexattr},
    [FUSE_FLUSH] = {"FLUSH", do_flush},
    [FUSE_INIT] = {"INIT", fuse_do_init},
    [FUSE_OPENDIR] = {"OPENDIR", do_open},
    [FUSE_READDIR] = {"READDIR", do_read},
    [FUSE_RELEASEDIR] = {"RELEASEDIR", do_release},
    [FUSE_FSYNCDIR] = {"FSYNCDIR", do_fsync},
    [FUSE_ACCESS] = {"ACCESS", do_access},
    [FUSE_CREATE] = {"CREATE", do_create},
    [FUSE_INTERRUPT] = {"INTERRUPT", do_interrupt},
    [FUSE_DESTROY] = {"DESTROY", do_destroy},
    [FUSE_BATCH_FORGET] = {"BATCH_FORGET", do_batch_forget},
    [FUSE_FALLOCATE] = {"FALLOCATE", do_fallocate},
    [FUSE_READDIRPLUS] = {"READDIRPLUS", do_read},
    [FUSE_RENAME2] = {"RENAME2", do_rename2},
    [FUSE_LSEEK] = {"LSEEK", do_lseek},
    [FUSE_COPY_FILE_RANGE] = {"COPY_FILE_RANGE", do_copy_file_range},
    [FUSE_TMPFILE] = {"TMPFILE", do_create},
    [FUSE_STATX] = {"STATX", do_statx},
};

#define FUSE_OP_COUNT (sizeof(fuse_op_table) / sizeof(fuse_op_table[0]))

const char *fuse_opname(uint32_t opcode)
{
	if (opcode < FUSE_OP_COUNT && fuse_op_table[opcode].name)
		return fuse_op_table[opcode].name;
	return "UNKNOWN";
}

void fuse_dispatch(struct fuse_req *req, const void *in, size_t len)
{
	uint32_t op = req->opcode;
	bool known = op < FUSE_OP_COUNT && fuse_op_table[op].handler;

	if (req->se->debug)
		log_debug("unique: %llu, opcode: %s (%u), nodeid: %llu, insize: %zu, pid: %d",
			  (unsigned long long)req->unique, fuse_opname(op), op,
			  (unsigned long long)req->nodeid, len, req->ctx.pid);
	if (!atomic_load(&req->se->got_init) && op != FUSE_INIT) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (!known) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	fuse_op_table[op].handler(req, in, len);
	if (!req->answered)
		log_warn_rl("%s for node %llu got no reply", fuse_opname(op),
			    (unsigned long long)req->nodeid);
}
