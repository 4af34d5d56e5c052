// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * FUSE over io_uring. The kernel keeps one queue per possible CPU and
 * puts a request on the queue of the CPU its caller runs on. lamina
 * serves each queue with threads bound to that CPU. The caller and the
 * thread that replies then share one CPU, so no request has to wake an
 * idle CPU. Each thread owns one ring entry: a header
 * buffer and a payload buffer that the kernel fills with a request and
 * reads the reply from. Forgets, interrupts and notifications still use
 * /dev/fuse.
 */
#include "internal.h"
#include "uring.h"
#include "../common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define URING_HEADROOM 4096 /* before the payload: room for the op header */

int fuse_uring_thread_setup(struct fuse_uring_thread *t)
{
	int err = uring_init(&t->ring, 2);

	if (err)
		return err;
	err = posix_memalign((void **)&t->buf, 4096,
			     URING_HEADROOM + t->payload_size);
	if (err)
		return -err;
	err = posix_memalign((void **)&t->hdr, 64, sizeof(*t->hdr));
	if (err)
		return -err;
	memset(t->hdr, 0, sizeof(*t->hdr));
	t->payload = t->buf + URING_HEADROOM;
	t->iov[0].iov_base = t->hdr;
	t->iov[0].iov_len = sizeof(*t->hdr);
	t->iov[1].iov_base = t->payload;
	t->iov[1].iov_len = t->payload_size;
	return 0;
}

static int uring_queue_cmd(struct fuse_uring_thread *t, uint32_t op,
			   uint64_t commit_id)
{
	struct io_uring_sqe *sqe = uring_get_sqe(&t->ring);
	struct fuse_uring_cmd_req *cmd;

	if (!sqe)
		return -EBUSY;
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = t->se->fd;
	sqe->cmd_op = op;
	if (op == FUSE_IO_URING_CMD_REGISTER) {
		sqe->addr = (uintptr_t)t->iov;
		sqe->len = 2;
	}
	cmd = (struct fuse_uring_cmd_req *)sqe->cmd;
	cmd->qid = (uint16_t)t->qid;
	cmd->commit_id = commit_id;
	return 0;
}

static void uring_stage(struct fuse_uring_thread *t, uint64_t unique, int error,
			size_t payload)
{
	struct fuse_out_header out = {
	    .len = (uint32_t)(sizeof(out) + payload),
	    .error = error,
	    .unique = unique,
	};

	memcpy(t->hdr->in_out, &out, sizeof(out));
	t->hdr->ent.payload_sz = (uint32_t)payload;
	t->replied = true;
}

int fuse_uring_send(struct fuse_req *req, const struct fuse_out_header *out,
		    const struct iovec *iov, int count)
{
	struct fuse_uring_thread *t = req->uring;
	size_t off = 0;
	int i;

	for (i = 0; i < count; i++) {
		if (iov[i].iov_len > t->payload_size - off) {
			log_warn_rl(
			    "a reply to %s does not fit the ring buffer",
			    fuse_opname(req->opcode));
			uring_stage(t, req->unique, -EIO, 0);
			return -EMSGSIZE;
		}
		/* Data read straight into the payload stays where it is. */
		if (iov[i].iov_base != t->payload + off)
			memmove(t->payload + off, iov[i].iov_base,
				iov[i].iov_len);
		off += iov[i].iov_len;
	}
	uring_stage(t, req->unique, out->error, off);
	return 0;
}

void fuse_uring_reply_data(struct fuse_req *req, int fd, off_t off, size_t size)
{
	struct fuse_uring_thread *t = req->uring;
	struct iovec iov;
	ssize_t n;

	/* A staged reply sits in the payload: let fuse_send() drop this one. */
	if (req->answered) {
		fuse_send(req, 0, NULL, 0);
		return;
	}
	if (size > t->payload_size)
		size = t->payload_size;
	n = pread(fd, t->payload, size, off);
	if (n < 0) {
		fuse_send(req, -errno, NULL, 0);
		return;
	}
	iov.iov_base = t->payload;
	iov.iov_len = (size_t)n;
	fuse_send(req, 0, &iov, 1);
}

/*
 * The kernel puts the fuse_in_header in hdr->in_out, the operation's
 * fixed argument in hdr->op_in and the rest in the payload. Copying the
 * fixed argument just before the payload gives the dispatcher the same
 * contiguous layout as a read from /dev/fuse.
 */
static void uring_handle(struct fuse_uring_thread *t)
{
	const struct fuse_in_header *in = (const void *)t->hdr->in_out;
	size_t psz = t->hdr->ent.payload_sz, oplen;
	struct fuse_req req = {
	    .se = t->se,
	    .uring = t,
	    .fd = -1,
	    .unique = in->unique,
	    .opcode = in->opcode,
	    .nodeid = in->nodeid,
	    .ctx = {.uid = in->uid, .gid = in->gid, .pid = in->pid},
	};

	t->replied = false;
	/* The kernel sends these in the background, so no caller waits. */
	t->caller_waits =
	    in->opcode != FUSE_RELEASE && in->opcode != FUSE_RELEASEDIR;
	t->new_caller =
	    t->caller_waits &&
	    atomic_exchange(&t->queue->last_pid, in->pid) != in->pid;
	if (psz > t->payload_size || in->len < sizeof(*in) + psz ||
	    in->len - sizeof(*in) - psz > FUSE_URING_OP_IN_SZ) {
		log_warn_rl(
		    "malformed ring request from the kernel: %u bytes, payload %zu",
		    in->len, psz);
		uring_stage(t, in->unique, -EIO, 0);
		return;
	}
	oplen = in->len - sizeof(*in) - psz;
	memcpy(t->payload - oplen, t->hdr->op_in, oplen);
	fuse_dispatch(&req, t->payload - oplen, oplen + psz);
	if (!t->replied) {
		log_warn_rl("%s through the ring got no reply",
			    fuse_opname(req.opcode));
		uring_stage(t, in->unique, -EIO, 0);
	}
}

/* Commit the reply now, then send the invalidation that must follow it. */
static int uring_inval_after_commit(struct fuse_uring_thread *t)
{
	int err = uring_submit(&t->ring);

	if (!err)
		fuse_inval_if_changed(t->se, t->inval_node, t->inval_counter,
				      t->inval_seen);
	t->inval_node = 0;
	return err;
}

/* Register the entry; retry while the kernel finishes INIT. */
static int uring_register(struct fuse_uring_thread *t)
{
	uint64_t ud;
	int32_t res;
	int tries, err;

	for (tries = 0; tries < 100; tries++) {
		err = uring_queue_cmd(t, FUSE_IO_URING_CMD_REGISTER, 0);
		if (err)
			return err;
		err = uring_submit_and_wait(&t->ring, &res, &ud);
		if (err)
			return err;
		if (res != -EAGAIN)
			return res;
		usleep(1000);
	}
	return -EAGAIN;
}

void fuse_uring_serve(struct fuse_uring_thread *t)
{
	int32_t res;
	uint64_t ud;
	int err;

	/* The completion of the registration is the first request. */
	res = uring_register(t);
	for (;;) {
		/*
		 * ENOENT: the kernel ended the request before the reply, and
		 * the entry went with it. A new one keeps the queue served.
		 */
		if (res == -ENOENT) {
			log_debug(
			    "FUSE ring queue %u: request gone before its reply",
			    t->qid);
			res = uring_register(t);
			continue;
		}
		if (res < 0) {
			if (res != -ENOTCONN && res != -ECANCELED &&
			    res != -ECONNABORTED) {
				atomic_store(&t->se->uring_active, false);
				log_warn_rl(
				    "FUSE ring queue %u: %s; requests go through /dev/fuse",
				    t->qid, strerror(-res));
			}
			return;
		}
		fuse_uring_request_begin(t);
		uring_handle(t);
		fuse_uring_request_end(t);
		err = uring_queue_cmd(t, FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
				      t->hdr->ent.commit_id);
		if (!err)
			err = fuse_uring_handoff(t);
		if (!err && t->inval_node)
			err = uring_inval_after_commit(t);
		if (!err)
			err = uring_submit_and_wait(&t->ring, &res, &ud);
		if (err) {
			log_err("FUSE ring queue %u stopped: %s", t->qid,
				strerror(-err));
			return;
		}
	}
}
