/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * FUSE over io_uring: one queue per CPU, served by threads bound to that
 * CPU, so that a request and its reply stay on the CPU of the caller.
 */
#ifndef LAMINA_FUSE_URING_H
#define LAMINA_FUSE_URING_H

#include "ring.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct fuse_session;
struct fuse_req;
struct fuse_out_header;

#define FUSE_URING_IN_OUT_SZ 128
#define FUSE_URING_OP_IN_SZ 128

struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_SZ];
	char op_in[FUSE_URING_OP_IN_SZ];
	struct fuse_uring_ent_in_out ent;
};

struct fuse_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

#define FUSE_IO_URING_CMD_REGISTER 1
#define FUSE_IO_URING_CMD_COMMIT_AND_FETCH 2

/* One kernel queue (one CPU) and the threads that serve it. */
struct fuse_uring_queue {
	unsigned int qid;
	unsigned int first;   /* its first slot in the session's threads */
	unsigned int max;     /* slots it has */
	atomic_uint started;  /* threads started; grows under uring_lock */
	atomic_uint busy;     /* threads inside a request */
	atomic_uint last_pid; /* caller of the latest request */
};

/* One ring entry and the thread that serves it. */
struct fuse_uring_thread {
	struct fuse_session *se;
	unsigned int qid;
	pthread_t thread;
	bool started;
	struct fuse_uring_queue *queue;
	struct uring ring;
	struct fuse_uring_req_header *hdr;
	char *buf;     /* room for the op header, then the payload */
	char *payload; /* registered with the kernel */
	size_t payload_size;
	struct iovec iov[2];
	bool replied;	   /* a reply is staged in hdr and payload */
	bool caller_waits; /* the request\'s caller sleeps until the reply */
	bool new_caller;   /* the queue's previous request had another caller */
	bool handoff;	   /* commit replies at idle priority */
	/* fuse_inval_after_reply() of the staged reply, if inval_node */
	uint64_t inval_node;
	const atomic_uint *inval_counter;
	unsigned int inval_seen;
	int policy;		      /* the thread's own scheduling policy */
	struct sched_param sched;     /* and its parameters */
	uint64_t handoff_pause_until; /* CLOCK_MONOTONIC ns */
	pid_t tid;
	/* Hand-off state (uring_prio.c). The thread sets idle; the
	 * thread or the guard clears it and restores the policy. */
	atomic_bool idle;	/* the thread's policy is SCHED_IDLE */
	atomic_uint idle_gen;	/* counts the thread's moves to idle */
	atomic_uint served;	/* requests handled */
	atomic_int raised;	/* URING_RAISED_* by the guard */
	unsigned int guard_gen; /* idle_gen at the guard's last look */
	unsigned int guard_served;
	uint64_t guard_run_delay;
	uint64_t guard_exec;
	bool guard_ready; /* runnable at the guard's last look */
	uint64_t guard_quiet_since;
	int setup_err;
};

/* Why the guard returned a thread to its own policy. */
enum { URING_RAISED_NO, URING_RAISED_QUIET, URING_RAISED_STARVED };

/*
 * Before the INIT reply: start the threads and set up their rings.
 * Returns 0 when every queue is ready to register, or a negative errno
 * after stopping what was started.
 */
int fuse_uring_prepare(struct fuse_session *se, size_t payload_size);
/* Set up the calling thread's ring and buffers (uring.c). */
int fuse_uring_thread_setup(struct fuse_uring_thread *t);
/* Register the entry, then serve requests until the connection ends. */
void fuse_uring_serve(struct fuse_uring_thread *t);
/*
 * The hand-off of the CPU to the caller at each reply (uring_prio.c).
 * fuse_uring_handoff() runs before the commit and may commit itself;
 * the guard thread watches the threads that stay at idle priority.
 */
int fuse_uring_handoff(struct fuse_uring_thread *t);
int fuse_uring_guard_start(struct fuse_session *se);
void fuse_uring_guard_stop(struct fuse_session *se);
/* Count a request in; start another thread when the queue is all busy. */
void fuse_uring_request_begin(struct fuse_uring_thread *t);
void fuse_uring_request_end(struct fuse_uring_thread *t);

/* After the INIT reply: register the entries, or stop the threads. */
void fuse_uring_go(struct fuse_session *se, bool ok);
void fuse_uring_join(struct fuse_session *se);

/* Stage a reply to a request that came through a ring. */
int fuse_uring_send(struct fuse_req *req, const struct fuse_out_header *out,
		    const struct iovec *iov, int count);
/* Read file data straight into the reply buffer. */
void fuse_uring_reply_data(struct fuse_req *req, int fd, off_t off,
			   size_t size);

#endif
