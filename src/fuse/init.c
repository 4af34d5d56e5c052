// SPDX-License-Identifier: GPL-2.0-or-later
/* INIT: agree on a protocol version and on the features to use. */
#include "internal.h"
#include "../common/log.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>

/* Newest protocol minor whose messages this transport understands. */
#define FUSE_OUR_MINOR 45

static uint64_t init_in_flags(const struct fuse_init_in *in, size_t len)
{
	uint64_t flags = in->flags;

	if (len >= offsetof(struct fuse_init_in, flags2) + sizeof(in->flags2) &&
	    (in->flags & FUSE_INIT_EXT))
		flags |= (uint64_t)in->flags2 << 32;
	return flags;
}

static void init_reply_major_only(struct fuse_req *req)
{
	struct lamina_fuse_init_out out = {.major = FUSE_KERNEL_VERSION,
					   .minor = FUSE_OUR_MINOR};
	struct iovec iov = {.iov_base = &out, .iov_len = sizeof(out)};

	/* The kernel replies with a new INIT at our major version. */
	fuse_send(req, 0, &iov, 1);
}

/* The kernel's smallest ring payload: 8 KiB, max_write or max_pages. */
static size_t init_payload_size(const struct fuse_conn *c)
{
	size_t size = (size_t)c->max_pages * 4096;

	if (size < c->max_write)
		size = c->max_write;
	return size < 8192 ? 8192 : size;
}

static void init_fill_out(struct fuse_session *se,
			  struct lamina_fuse_init_out *out,
			  const struct fuse_init_in *in)
{
	struct fuse_conn *c = &se->conn;
	uint64_t flags = c->want_flags & c->kernel_flags;

	if (flags & FUSE_WRITEBACK_CACHE)
		flags &= ~FUSE_PASSTHROUGH;
	if (!(flags & FUSE_PASSTHROUGH))
		c->max_stack_depth = 0;
	if (c->kernel_flags & FUSE_INIT_EXT)
		flags |= FUSE_INIT_EXT;
	c->want_flags = flags;

	out->major = FUSE_KERNEL_VERSION;
	out->minor = c->proto_minor;
	out->max_readahead = in->max_readahead;
	out->flags = (uint32_t)flags;
	out->flags2 = (uint32_t)(flags >> 32);
	out->max_background = 64;
	out->congestion_threshold = 48;
	out->max_write = c->max_write;
	out->max_pages = c->max_pages;
	out->time_gran = c->time_gran;
	out->max_stack_depth = c->max_stack_depth;
}

void fuse_do_init(struct fuse_req *req, const void *arg, size_t len)
{
	const struct fuse_init_in *in = arg;
	struct fuse_session *se = req->se;
	struct fuse_conn *c = &se->conn;
	struct lamina_fuse_init_out out;
	struct iovec iov;
	int err;

	if (len < offsetof(struct fuse_init_in, flags2)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (in->major > FUSE_KERNEL_VERSION) {
		init_reply_major_only(req);
		return;
	}
	if (in->major < FUSE_KERNEL_VERSION || in->minor < FUSE_MIN_MINOR) {
		log_err("kernel FUSE protocol %u.%u is older than 7.%u, which lamina needs",
			in->major, in->minor, FUSE_MIN_MINOR);
		fuse_reply_err(req, EPROTO);
		fuse_session_exit(se);
		return;
	}

	memset(c, 0, sizeof(*c));
	c->proto_minor = in->minor < FUSE_OUR_MINOR ? in->minor : FUSE_OUR_MINOR;
	c->kernel_flags = init_in_flags(in, len);
	c->max_pages = FUSE_MAX_PAGES_WANTED;
	c->max_write = FUSE_MAX_PAGES_WANTED * 4096;
	c->time_gran = 1;
	if (se->ops->init)
		se->ops->init(se->fs, c);

	if ((c->want_flags & c->kernel_flags & FUSE_OVER_IO_URING) &&
	    fuse_uring_prepare(se, init_payload_size(c)) < 0)
		c->want_flags &= ~FUSE_OVER_IO_URING;

	memset(&out, 0, sizeof(out));
	init_fill_out(se, &out, in);
	log_debug("INIT: protocol 7.%u, flags 0x%llx of 0x%llx offered",
		  c->proto_minor, (unsigned long long)c->want_flags,
		  (unsigned long long)c->kernel_flags);
	iov.iov_base = &out;
	iov.iov_len = sizeof(out);
	/*
	 * The kernel sends the next request as soon as it has the reply,
	 * and another worker may read it at once. So the session counts as
	 * initialised before the reply goes out, or that request would get
	 * EIO.
	 */
	atomic_store(&se->got_init, true);
	err = fuse_send(req, 0, &iov, 1);
	if (err != 0)
		atomic_store(&se->got_init, false);
	fuse_uring_go(se, err == 0 && (c->want_flags & FUSE_OVER_IO_URING));
	fuse_session_mark_ready(se);
}
