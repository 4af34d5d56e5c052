/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lamina's FUSE transport: the /dev/fuse device, the mount, INIT
 * negotiation, worker threads and the reply messages. It contains no
 * overlay logic. A filesystem passes it a table of operations and
 * replies to each request with one of the fuse_reply_*() calls.
 */
#ifndef LAMINA_FUSE_TRANSPORT_H
#define LAMINA_FUSE_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

struct fuse_session;
struct fuse_req;

/* Caller identity, valid until the request gets its reply. */
struct fuse_ctx {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	mode_t umask;
};

/* A LOOKUP-style reply: the node, its attributes and cache timeouts. */
struct fuse_entry {
	uint64_t nodeid; /* 0 means a cached negative entry */
	uint64_t generation;
	struct stat attr;
	double entry_timeout; /* seconds */
	double attr_timeout;  /* seconds */
};

/* Per-open state shared between the transport and the filesystem. */
struct fuse_file_info {
	int flags;	    /* open(2) flags from the request */
	uint64_t fh;	    /* filesystem's handle */
	bool direct_io;	    /* FOPEN_DIRECT_IO */
	bool keep_cache;    /* FOPEN_KEEP_CACHE */
	bool cache_dir;	    /* FOPEN_CACHE_DIR */
	bool noflush;	    /* FOPEN_NOFLUSH */
	bool parallel_dio;  /* FOPEN_PARALLEL_DIRECT_WRITES */
	int32_t backing_id; /* > 0: FOPEN_PASSTHROUGH to this backing */
	uint64_t lock_owner;
	bool flush;	   /* release also flushes */
	bool kill_suidgid; /* open or write must clear set-ID bits */
};

/* Connection parameters: the kernel's offer and the filesystem's request at INIT. */
struct fuse_conn {
	uint32_t proto_minor; /* negotiated minor version */
	uint64_t kernel_flags;
	uint64_t want_flags; /* FUSE_* INIT flags the filesystem requests */
	uint32_t max_write;
	uint16_t max_pages;
	uint32_t max_stack_depth; /* > 0 with FUSE_PASSTHROUGH */
	uint32_t time_gran;
};

/* Attribute bits of fuse_ops.setattr: the protocol's FATTR_* values. */
#define FUSE_SET_ATTR_MODE (1 << 0)
#define FUSE_SET_ATTR_UID (1 << 1)
#define FUSE_SET_ATTR_GID (1 << 2)
#define FUSE_SET_ATTR_SIZE (1 << 3)
#define FUSE_SET_ATTR_ATIME (1 << 4)
#define FUSE_SET_ATTR_MTIME (1 << 5)
#define FUSE_SET_ATTR_FH (1 << 6)
#define FUSE_SET_ATTR_ATIME_NOW (1 << 7)
#define FUSE_SET_ATTR_MTIME_NOW (1 << 8)
#define FUSE_SET_ATTR_CTIME (1 << 10)
#define FUSE_SET_ATTR_KILL_SUIDGID (1 << 11)

struct fuse_setattr {
	uint32_t valid; /* FATTR_* */
	uint64_t fh;
	struct stat st; /* mode, uid, gid, size, atim, mtim */
};

struct fuse_ops {
	void (*init)(void *fs, struct fuse_conn *conn);
	void (*destroy)(void *fs);
	void (*lookup)(struct fuse_req *req, uint64_t parent, const char *name);
	void (*forget)(void *fs, uint64_t nodeid, uint64_t nlookup);
	void (*getattr)(struct fuse_req *req, uint64_t nodeid, uint64_t fh,
			bool has_fh);
	/* Like getattr, with the birth time as well where the file has one. */
	void (*statx)(struct fuse_req *req, uint64_t nodeid, uint64_t fh,
		      bool has_fh);
	void (*setattr)(struct fuse_req *req, uint64_t nodeid,
			const struct fuse_setattr *attr);
	void (*readlink)(struct fuse_req *req, uint64_t nodeid);
	void (*symlink)(struct fuse_req *req, uint64_t parent,
			const char *name, const char *target);
	void (*mknod)(struct fuse_req *req, uint64_t parent, const char *name,
		      mode_t mode, dev_t rdev);
	void (*mkdir)(struct fuse_req *req, uint64_t parent, const char *name,
		      mode_t mode);
	void (*unlink)(struct fuse_req *req, uint64_t parent, const char *name);
	void (*rmdir)(struct fuse_req *req, uint64_t parent, const char *name);
	void (*rename)(struct fuse_req *req, uint64_t parent, const char *name,
		       uint64_t newparent, const char *newname,
		       unsigned int flags);
	void (*link)(struct fuse_req *req, uint64_t nodeid, uint64_t newparent,
		     const char *newname);
	void (*open)(struct fuse_req *req, uint64_t nodeid,
		     struct fuse_file_info *fi);
	void (*create)(struct fuse_req *req, uint64_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi);
	void (*tmpfile)(struct fuse_req *req, uint64_t parent, mode_t mode,
			struct fuse_file_info *fi);
	void (*read)(struct fuse_req *req, uint64_t nodeid, size_t size,
		     off_t off, struct fuse_file_info *fi);
	void (*write)(struct fuse_req *req, uint64_t nodeid, const void *buf,
		      size_t size, off_t off, struct fuse_file_info *fi);
	void (*flush)(struct fuse_req *req, uint64_t nodeid,
		      struct fuse_file_info *fi);
	void (*release)(struct fuse_req *req, uint64_t nodeid,
			struct fuse_file_info *fi);
	void (*fsync)(struct fuse_req *req, uint64_t nodeid, bool datasync,
		      struct fuse_file_info *fi);
	void (*opendir)(struct fuse_req *req, uint64_t nodeid,
			struct fuse_file_info *fi);
	void (*readdir)(struct fuse_req *req, uint64_t nodeid, size_t size,
			off_t off, bool plus, struct fuse_file_info *fi);
	void (*releasedir)(struct fuse_req *req, uint64_t nodeid,
			   struct fuse_file_info *fi);
	void (*fsyncdir)(struct fuse_req *req, uint64_t nodeid, bool datasync,
			 struct fuse_file_info *fi);
	void (*statfs)(struct fuse_req *req, uint64_t nodeid);
	void (*setxattr)(struct fuse_req *req, uint64_t nodeid,
			 const char *name, const void *value, size_t size,
			 int flags);
	void (*getxattr)(struct fuse_req *req, uint64_t nodeid,
			 const char *name, size_t size);
	void (*listxattr)(struct fuse_req *req, uint64_t nodeid, size_t size);
	void (*removexattr)(struct fuse_req *req, uint64_t nodeid,
			    const char *name);
	void (*access)(struct fuse_req *req, uint64_t nodeid, int mask);
	void (*fallocate)(struct fuse_req *req, uint64_t nodeid, int mode,
			  off_t off, off_t len, struct fuse_file_info *fi);
	void (*lseek)(struct fuse_req *req, uint64_t nodeid, off_t off,
		      int whence, struct fuse_file_info *fi);
	void (*copy_file_range)(struct fuse_req *req, uint64_t nodein,
				off_t offin, struct fuse_file_info *fiin,
				uint64_t nodeout, off_t offout,
				struct fuse_file_info *fiout, size_t len,
				int flags);
};

/* Options for fuse_session_mount(). */
struct fuse_mount_opts {
	const char *source;  /* shown in /proc/mounts */
	const char *subtype; /* type becomes fuse.<subtype> */
	bool allow_other;
	bool default_permissions;
	unsigned long mount_flags; /* MS_RDONLY, MS_NOSUID, MS_NOEXEC, ... */
};

/* Session life cycle: session.c */
int fuse_session_new(const struct fuse_ops *ops, void *fs, bool debug,
		     struct fuse_session **out);
int fuse_session_mount(struct fuse_session *se, const char *mountpoint,
		       const struct fuse_mount_opts *opts);
void fuse_session_unmount(struct fuse_session *se);
/*
 * When fuse_session_mount() ran fusermount3, its exit status (127: not
 * found), else -1; and the first line of its error output, "" if none.
 */
int fuse_session_fusermount_status(const struct fuse_session *se);
const char *fuse_session_fusermount_error(const struct fuse_session *se);
void fuse_session_destroy(struct fuse_session *se);
int fuse_session_fd(const struct fuse_session *se);
/* Requests come through FUSE over io_uring. */
bool fuse_session_uring_active(const struct fuse_session *se);
/*
 * Tell the ring threads whether other threads of the daemon have work
 * that would run before a thread at idle priority. While they do, the
 * ring threads return to normal priority after each hand-off.
 */
void fuse_session_other_work(struct fuse_session *se, bool busy);
/*
 * Tell the ring threads that many callers will send requests for the
 * next ns nanoseconds, so that no hand-off pays off: they commit at their
 * own policy until then.
 */
void fuse_session_pause_handoff(struct fuse_session *se, uint64_t ns);
/* The device number of the mount, noted right after mounting; 0 if
 * unknown. */
dev_t fuse_session_mount_dev(const struct fuse_session *se);
/*
 * The device number of the filesystem at dirfd/path ("" for dirfd). With
 * AT_STATX_DONT_SYNC a FUSE mount takes it from the kernel's cache and
 * sends no request, which its daemon might not serve yet or any more.
 */
int fuse_mount_dev(int dirfd, const char *path, dev_t *dev);
/* 1 when /proc/self/mountinfo lists a mount of the filesystem dev, 0 when
 * it lists none, or a negative errno when it cannot be read. */
int fuse_dev_mounted(dev_t dev);

/*
 * Request loop: loop.c. start() runs the worker threads, which serve
 * until the mount goes away. A worker then calls fuse_session_exit(),
 * and join() waits for all of them.
 */
int fuse_session_start(struct fuse_session *se, unsigned int workers,
		       void (*on_exit)(void *arg), void *arg);
void fuse_session_join(struct fuse_session *se);
/* Wait until INIT got its reply (true) or the loop ended (false). */
bool fuse_session_wait_ready(struct fuse_session *se);
void fuse_session_exit(struct fuse_session *se);

/*
 * Tell the kernel to drop its cached attributes of a node (off < 0) or
 * also its cached data from off for len bytes (len 0: to the end).
 */
int fuse_notify_inval_inode(struct fuse_session *se, uint64_t nodeid,
			    int64_t off, int64_t len);
/*
 * Once req's reply has reached the kernel, drop the kernel's cached data
 * of a node if the counter then differs from seen. The reply is sent
 * already, or staged for a ring commit.
 */
void fuse_inval_after_reply(struct fuse_req *req, uint64_t nodeid,
			    const atomic_uint *counter, unsigned int seen);

/* Passthrough backing files: passthrough.c */
int fuse_backing_open(struct fuse_session *se, int fd);
void fuse_backing_close(struct fuse_session *se, int backing_id);
bool fuse_session_passthrough(const struct fuse_session *se);

/* Request accessors: reply.c */
const struct fuse_ctx *fuse_req_ctx(const struct fuse_req *req);
void *fuse_req_fs(const struct fuse_req *req);
struct fuse_session *fuse_req_session(const struct fuse_req *req);

/* Replies: each request gets exactly one. Errors are positive errno. */
void fuse_reply_err(struct fuse_req *req, int err);
void fuse_reply_none(struct fuse_req *req);
void fuse_reply_entry(struct fuse_req *req, const struct fuse_entry *e);
void fuse_reply_create(struct fuse_req *req, const struct fuse_entry *e,
		       const struct fuse_file_info *fi);
void fuse_reply_attr(struct fuse_req *req, const struct stat *st,
		     double timeout);
/* Reply to STATX: st, and the birth time when btime is not NULL. */
void fuse_reply_statx(struct fuse_req *req, const struct stat *st,
		      const struct timespec *btime, double timeout);
void fuse_reply_readlink(struct fuse_req *req, const char *target);
void fuse_reply_open(struct fuse_req *req, const struct fuse_file_info *fi);
void fuse_reply_write(struct fuse_req *req, size_t count);
void fuse_reply_buf(struct fuse_req *req, const void *buf, size_t size);
/* Reply to READ with up to size bytes of fd at off. */
void fuse_reply_data(struct fuse_req *req, int fd, off_t off, size_t size);
void fuse_reply_statfs(struct fuse_req *req, const struct statvfs *st);
void fuse_reply_xattr(struct fuse_req *req, size_t size);
void fuse_reply_lseek(struct fuse_req *req, off_t off);

/*
 * Directory listing buffers: dirbuf.c. Add entries until one does not
 * fit (the add returns false), then send the buffer with
 * fuse_reply_buf(). Offsets are those the next READDIR resumes from.
 */
struct fuse_dirbuf {
	char *data;
	size_t size;
	size_t cap;
};
int fuse_dirbuf_init(struct fuse_dirbuf *db, size_t cap);
void fuse_dirbuf_free(struct fuse_dirbuf *db);
bool fuse_dirbuf_add(struct fuse_dirbuf *db, const char *name, uint64_t ino,
		     unsigned int type, off_t next_off);
bool fuse_dirbuf_add_plus(struct fuse_dirbuf *db, const char *name,
			  const struct fuse_entry *e, off_t next_off);

#endif
